"""Latent cache: write/read round trip, resumable encoding, refusal of another VAE's cache, images."""

import json

import pytest
import torch

from walt.autoencoder import CausalVAE, LatentStats
from walt.data import SyntheticImages, SyntheticVideos
from walt.data.latent_cache import encode_dataset
from walt.data.latent_dataset import LatentDataset, load_cache_index, vae_fingerprint


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny ops on a shared 2-core machine: one thread is ~10x faster than two competing ones.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return CausalVAE.from_preset("tiny").eval()


def videos(n=6):
    return SyntheticVideos(n, num_frames=5, resolution=32, seed=3)


def count_clips(vae, monkeypatch):
    """Make `vae.encode` count the clips it encodes (the weights, hence the fingerprint, are unchanged)."""
    counter = {"clips": 0}
    encode = vae.encode

    def counting(x, chunk_frames=None):
        counter["clips"] += x.shape[0]
        return encode(x, chunk_frames=chunk_frames)

    monkeypatch.setattr(vae, "encode", counting)
    return counter


class FailingDataset(torch.utils.data.Dataset):
    """Raises at item `fail_at`, like a crash or a kill in the middle of encoding."""

    def __init__(self, ds, fail_at):
        self.ds, self.fail_at = ds, fail_at

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise RuntimeError("simulated crash")
        return self.ds[i]


def test_round_trip_float32(vae, tmp_path):
    ds = videos(6)
    info = encode_dataset(vae, ds, tmp_path, shard_size=4, batch_size=2, latent_dtype="float32", progress=False)
    assert info.encoded_shards == [0, 1] and info.skipped_shards == []
    index = load_cache_index(tmp_path)
    assert index["num_shards"] == 2 and [s["count"] for s in index["shards"]] == [4, 2]
    assert index["latent_shape"] == [4, 2, 4, 4]  # (c, t, h, w): 5x32x32 -> 2x4x4, c = 4
    assert index["vae_sha256"] == vae_fingerprint(vae) and index["vae_config"]["latent_channels"] == 4
    assert index["dataset"]["class"] == "SyntheticVideos" and index["dataset"]["length"] == 6

    raw = LatentDataset(tmp_path, normalize=False)
    assert len(raw) == 6 and raw.num_classes == ds.num_classes and not raw.is_image_cache
    with torch.no_grad():
        expect = vae.encode(torch.stack([ds[i]["video"] for i in range(6)]))  # (6, 4, 2, 4, 4)
    for i in range(6):
        item, src = raw[i], ds[i]
        torch.testing.assert_close(item["latent"], expect[i], atol=1e-5, rtol=1e-5)
        assert (item["label"], item["caption"], item["index"]) == (src["label"], src["caption"], src["index"])
    # Statistics were measured on the stored latents.
    stats = LatentStats.from_latents([raw.latents(range(6))])
    torch.testing.assert_close(raw.stats.mean, stats.mean)
    torch.testing.assert_close(raw.stats.std, stats.std)
    assert raw.stats.count == 6 * 2 * 4 * 4
    norm = LatentDataset(tmp_path)  # normalize=True by default
    torch.testing.assert_close(norm[3]["latent"], raw.stats.normalize(raw[3]["latent"][None])[0])
    torch.testing.assert_close(norm.latents([0, 5]), raw.stats.normalize(raw.latents([0, 5])))
    lazy = LatentDataset(tmp_path, in_memory=False)  # memory-mapped reads give the same items
    torch.testing.assert_close(lazy[5]["latent"], norm[5]["latent"])
    torch.testing.assert_close(lazy.latents([1, 4]), norm.latents([1, 4]))


def test_float16_default_and_images(vae, tmp_path):
    encode_dataset(vae, videos(3), tmp_path / "v", shard_size=8, batch_size=3, progress=False)
    v = LatentDataset(tmp_path / "v", normalize=False)
    with torch.no_grad():
        expect = vae.encode(videos(3)[1]["video"][None])[0]
    torch.testing.assert_close(v[1]["latent"], expect, atol=2e-3, rtol=2e-3)  # float16 storage
    assert load_cache_index(tmp_path / "v")["latent_dtype"] == "float16"

    imgs = SyntheticImages(5, resolution=32)
    encode_dataset(vae, imgs, tmp_path / "i", shard_size=2, batch_size=2, progress=False)
    im = LatentDataset(tmp_path / "i")
    assert im.is_image_cache and im.latent_shape == (4, 1, 4, 4) and len(im) == 5
    assert im[4]["latent"].shape == (4, 1, 4, 4) and im[4]["caption"] == imgs[4]["caption"]


def test_interrupted_encode_resumes_without_redoing_shards(vae, tmp_path, monkeypatch):
    ds = videos(6)
    encode_dataset(vae, ds, tmp_path / "full", shard_size=2, batch_size=2, latent_dtype="float32", progress=False)

    part = tmp_path / "part"
    with pytest.raises(RuntimeError, match="simulated crash"):
        encode_dataset(vae, FailingDataset(ds, fail_at=4), part, shard_size=2, batch_size=2,
                       latent_dtype="float32", progress=False)
    done = sorted(p.name for p in part.glob("shard_*.safetensors"))
    assert done == ["shard_00000.safetensors", "shard_00001.safetensors"]
    assert not (part / "index.json").exists() and not list(part.glob(".*tmp"))  # no partial files
    with pytest.raises(ValueError, match="interrupted"):
        LatentDataset(part)
    mtimes = {p.name: p.stat().st_mtime_ns for p in part.glob("shard_*.safetensors")}

    counting = count_clips(vae, monkeypatch)
    info = encode_dataset(vae, ds, part, shard_size=2, batch_size=2, latent_dtype="float32", progress=False)
    assert info.skipped_shards == [0, 1] and info.encoded_shards == [2]
    assert counting["clips"] == 2  # only the last shard was encoded
    assert {n: (part / n).stat().st_mtime_ns for n in mtimes} == mtimes

    a, b = LatentDataset(tmp_path / "full", normalize=False), LatentDataset(part, normalize=False)
    assert torch.equal(a.latents(range(6)), b.latents(range(6)))
    assert torch.equal(a.labels, b.labels) and a.captions == b.captions
    torch.testing.assert_close(a.stats.mean, b.stats.mean, rtol=0, atol=0)

    # A complete cache is not re-encoded; a corrupted shard is redone, and only that one.
    counting["clips"] = 0
    assert encode_dataset(vae, ds, part, shard_size=2, batch_size=2, latent_dtype="float32",
                          progress=False).encoded_shards == []
    assert counting["clips"] == 0
    (part / "shard_00001.safetensors").write_bytes(b"garbage")
    info = encode_dataset(vae, ds, part, shard_size=2, batch_size=2, latent_dtype="float32", progress=False)
    assert info.encoded_shards == [1] and counting["clips"] == 2
    assert torch.equal(LatentDataset(part, normalize=False).latents(range(6)), a.latents(range(6)))


def test_cache_from_another_vae_is_refused(vae, tmp_path):
    encode_dataset(vae, videos(2), tmp_path, shard_size=1, batch_size=1, progress=False)
    torch.manual_seed(1)
    other = CausalVAE.from_preset("tiny")
    assert vae_fingerprint(other) != vae_fingerprint(vae)
    with pytest.raises(ValueError, match="different VAE"):
        encode_dataset(other, videos(2), tmp_path, shard_size=1, batch_size=1, progress=False)
    with pytest.raises(ValueError, match="different VAE"):
        LatentDataset(tmp_path, vae=other)
    assert len(LatentDataset(tmp_path, vae=vae)) == 2
    # Resuming with other settings is refused too (the shards would not line up).
    (tmp_path / "index.json").unlink()
    with pytest.raises(ValueError, match="shard_size"):
        encode_dataset(vae, videos(2), tmp_path, shard_size=2, batch_size=1, progress=False)
    with pytest.raises(ValueError, match="num_samples"):
        encode_dataset(vae, videos(3), tmp_path, shard_size=1, batch_size=1, progress=False)


def test_bad_inputs(vae, tmp_path):
    with pytest.raises(ValueError, match="latent_dtype"):
        encode_dataset(vae, videos(1), tmp_path, latent_dtype="int8", progress=False)
    with pytest.raises(ValueError, match="no complete latent cache"):
        LatentDataset(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "index.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a walt latent cache"):
        LatentDataset(tmp_path / "x")
