"""Text in the network and in training (W.A.L.T §3.3 / SPEC §2): cross-attention sees the text,
dropped text is no text, guidance scale 1 is the conditional sample, training on cached caption
features, and the command line (`walt encode --text-encoder` -> `walt train --text` -> `walt sample
--prompt`). The encoders and the sidecar themselves: tests/test_text.py."""

from __future__ import annotations

import json

import pytest
import torch

from _text_helpers import ToyEncoder, copy_cache, make_caption_cache, make_tiny_t5  # tests/ is on sys.path (pytest rootdir)
from walt.autoencoder import CausalVAE
from walt.checkpoint import load_checkpoint
from walt.data.latent_dataset import LatentDataset
from walt.denoiser import WALT
from walt.diffusion import DiffusionLossConfig, DiffusionSchedule, diffusion_loss
from walt.pipeline import generate
from walt.text import TextEmbeddings, cache_text_embeddings, null_text
from walt.train.denoiser_loop import DenoiserTrainConfig, train_denoiser


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny ops on a shared 2-core machine: one thread is much faster than two competing ones.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return CausalVAE.from_preset("tiny").eval()


@pytest.fixture(scope="module")
def cache(vae, tmp_path_factory):
    """12 captioned synthetic clips -> latents 4x2x4x4 in 2 shards (8 + 4)."""
    return make_caption_cache(vae, tmp_path_factory.mktemp("textcache"))


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory):
    """A tiny random local T5 folder (`_text_helpers.make_tiny_t5`; NOT T5 weights)."""
    return make_tiny_t5(tmp_path_factory.mktemp("t5tiny"))


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
    c = copy_cache(cache, tmp_path / "c")
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
    c = copy_cache(cache, tmp_path / "c")
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
    from walt.demo.text_stage import text_demo

    s = text_demo(tmp_path, minutes=0.2, preset="smoke", text_encoder=f"t5:{tiny_t5_dir}", guidance_scale=2.0)
    folder = tmp_path / "text_samples"
    assert (folder / "grid_guidance1.png").is_file() and (folder / "grid_guidance2.png").is_file()
    prompts = json.loads((folder / "prompts.json").read_text())
    assert len(prompts) == 2 and all(p["prompt"] for p in prompts) and s["walt"]["steps"] >= 2
    assert all((folder / g).is_file() for p in prompts for g in p["gifs"])
