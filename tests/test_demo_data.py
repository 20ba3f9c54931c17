"""The demo's clips (`walt.demo.clips`): appearance restrictions of the built-in dataset."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from walt.data.synthetic import SyntheticVideos
from walt.demo.demo_config import demo_config
from walt.demo.clips import DemoVideos, demo_videos


def test_no_restriction_is_the_builtin_dataset():
    a, b = DemoVideos(6, num_frames=5, resolution=16, seed=3), SyntheticVideos(6, num_frames=5, resolution=16, seed=3)
    for i in range(6):
        assert a.params(i) == b.params(i)
        assert torch.equal(a[i]["video"], b[i]["video"]) and a[i]["caption"] == b[i]["caption"]


def test_restrictions_hold_and_change_only_what_they_name():
    full = SyntheticVideos(64, num_frames=5, resolution=16, seed=1)
    ds = DemoVideos(64, num_frames=5, resolution=16, seed=1, backgrounds=("plain",), textures=("two-tone",),
                    shapes=("circle", "square"), shape_scale=1.5, speed_scale=2.0)
    drawn = set()
    for i in range(64):
        (label, p), (label0, p0) = ds.params(i), full.params(i)
        assert label == label0 and p.bg_kind == "plain" and p.texture == "two-tone"
        assert p.shape in ("circle", "square") and (p.shape == p0.shape or p0.shape not in ("circle", "square"))
        assert p.size == pytest.approx(1.5 * p0.size) and p.speed == pytest.approx(2.0 * p0.speed)
        assert (p.color, p.center, p.bg_color) == (p0.color, p0.center, p0.bg_color)  # the rest is untouched
        drawn.add(p.shape)
        assert ds.params(i) == (label, p)  # a pure function of (seed, index)
    assert drawn == {"circle", "square"}
    assert ds.caption(0).split()[-1] == "background" and any(s in ds.caption(0) for s in ("circle", "square"))


def test_unknown_names_and_scales_are_errors():
    with pytest.raises(ValueError, match="shape 'blob'"):
        DemoVideos(2, shapes=("blob",))
    with pytest.raises(ValueError, match="texture"):
        DemoVideos(2, textures=("plaid",))
    with pytest.raises(ValueError, match="shape_scale"):
        DemoVideos(2, shape_scale=3.0)


def test_demo_videos_follows_the_config():
    cfg = demo_config("smoke", shapes=("ring",), backgrounds=("radial",))
    ds = demo_videos(cfg, 4, seed=0)
    assert len(ds) == 4 and ds[0]["video"].shape == (3, cfg.num_frames, cfg.resolution, cfg.resolution)
    assert all(ds.params(i)[1].shape == "ring" and ds.params(i)[1].bg_kind == "radial" for i in range(4))
    assert dataclasses.replace(cfg, shapes=()).shapes == ()


def test_demo_run_with_restricted_shapes_and_snr_shift_says_so(tmp_path):
    """The knobs reach the run: clips of the named shape, the shifted schedule in the denoiser's
    checkpoint (so sampling uses it too), and the report states both."""
    from walt.checkpoint import load_checkpoint
    from walt.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--smoke", "--minutes", "0.2", "--no-progress", "--threads", "1", "--no-fvd",
                 "--out", str(out), "--set", "shapes=(circle,)", "--set", "walt_snr_shift=4"]) == 0
    state = load_checkpoint(out / "walt" / "walt_ema.safetensors")
    assert state["diffusion_config"]["snr_shift"] == 4.0
    report = (out / "report.md").read_text()
    assert "shapes circle only (of 8)" in report and "every SNR x4" in report and "self-conditioning 0.9" in report
    assert "Autoencoder loss: 5 x L2 reconstruction" in report  # VAELossConfig.recon_weight, the loss it trained with
    recorded = json.loads((out / "stages.json").read_text())["stages"]["vae"]["loss"]
    assert (recorded["recon_type"], recorded["recon_weight"]) == ("l2", 5.0)  # the record the report read


def test_report_reads_the_autoencoder_loss_the_stage_recorded():
    from walt.demo.render import vae_recon_term

    # The stage record wins over what the settings would build today (a run made with another weight).
    recorded = {"vae": {"loss": {"recon_type": "l1", "recon_weight": 2.5}}}
    assert vae_recon_term(recorded, "l2") == ("l1", 2.5)
    # A run recorded before the stage kept its loss: the settings' recon type with VAELossConfig's weight.
    assert vae_recon_term({"vae": {"steps": 3}}, "l2") == ("l2", 5.0)
