"""`walt demo`: end to end with minimal sizes, resumption, one-line errors, and its helpers."""

import json
import time

import pytest
import torch

from walt.cli import main
from walt.demo import DemoConfig, demo_config
from walt.demo.plots import labelled_grid, side_by_side
from walt.demo.report import motion_energy
from walt.demo.run import _seconds_per_step, _steps_until

SMOKE = ["demo", "--smoke", "--minutes", "0.2", "--no-progress", "--threads", "1"]


def _nonempty(path):
    return path.is_file() and path.stat().st_size > 0


def test_demo_smoke_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(SMOKE + ["--out", str(out)]) == 0
    classes = demo_config("smoke").classes
    for name in ("samples_grid.png", "predictions_grid.png", "reconstructions_grid.png", "curves.png",
                 "report.md", "report.html", "metrics.json"):
        assert _nonempty(out / name), name
    for c in classes:
        for ext in ("mp4", "gif"):
            assert _nonempty(out / "samples" / f"{c}_0.{ext}")
            assert _nonempty(out / "predictions" / f"{c}.{ext}")
    report = (out / "report.md").read_text()
    assert "reconstruction PSNR" in report and "dB" in report
    assert "Time per stage" in report and "autoencoder training" in report and "W.A.L.T training" in report
    m = json.loads((out / "metrics.json").read_text())
    assert m["reconstruction"]["psnr_db"] > 0 and set(m["stages"]) == {"vae", "cache", "walt", "samples"}
    assert all(m["stages"][s]["seconds"] > 0 for s in m["stages"])
    assert m["stages"]["vae"]["steps"] >= 2 and m["stages"]["walt"]["steps"] >= 2  # the minimum steps
    assert [r["class"] for r in m["motion_energy"]] == list(classes)

    # A rerun reuses the finished training stages and only re-samples (sampling settings may change).
    vae_time = json.loads((out / "stages.json").read_text())["stages"]["vae"]["seconds"]
    capsys.readouterr()
    assert main(SMOKE + ["--out", str(out), "--samples-per-class", "2", "--set", "guidance_scale=2"]) == 0
    log = capsys.readouterr().out
    assert log.count("reused") == 3
    assert all(_nonempty(out / "samples" / f"{c}_1.mp4") for c in classes)
    assert json.loads((out / "stages.json").read_text())["stages"]["vae"]["seconds"] == vae_time


@pytest.mark.parametrize("extra, message", [
    (["--minutes", "0"], "--minutes must be > 0"),
    (["--minutes", "-3"], "--minutes must be > 0"),
    (["--classes", "bouncing,jumping"], "unknown class jumping"),
    (["--frames", "8"], "--frames 8 is not 1+2k"),
    (["--resolution", "30"], "--resolution 30 must be a positive multiple"),
])
def test_demo_bad_arguments_are_one_line_errors(tmp_path, capsys, extra, message):
    assert main(["demo", "--out", str(tmp_path / "o")] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "o").exists()  # nothing written


def test_demo_unwritable_out_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--smoke", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--out" in err and "\n" not in err


def test_demo_refuses_other_settings_in_the_same_out(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"config": {"resolution": 64}, "seed": 0}))
    t = time.time()
    assert main(SMOKE + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "other settings" in err and "--fresh" in err and "\n" not in err
    assert time.time() - t < 10  # refused before any training


def test_steps_until_deadline_and_pace():
    now = time.time()
    assert _steps_until(now + 100, done=5, sec_per_step=1.0, minimum=10, margin=0.0) in (104, 105)
    assert _steps_until(now - 1, done=5, sec_per_step=1.0, minimum=10) == 10  # past the deadline: the floor
    assert _steps_until(now - 1, done=20, sec_per_step=1.0, minimum=10) == 20
    rows = [{"clips_per_s": 1.0}, {"clips_per_s": 8.0}, {"clips_per_s": 4.0}, {"clips_per_s": 2.0}]
    assert _seconds_per_step(rows, batch=8, key="clips_per_s") == pytest.approx(2.0)  # first row skipped
    assert _seconds_per_step([{"sec_per_step": 0.5}], batch=8, key="sec_per_step") == 0.5


def test_demo_config_validation():
    with pytest.raises(ValueError, match="classes"):
        DemoConfig(classes=("bouncing", "jumping"))
    with pytest.raises(ValueError, match="fraction"):
        DemoConfig(vae_fraction=0.7, final_fraction=0.3)
    with pytest.raises(ValueError, match="unknown key"):
        demo_config("cpu", resolutoin=32)
    assert demo_config("cpu", resolution=48).resolution == 48


def test_motion_energy_grid_and_side_by_side():
    still = torch.zeros(2, 3, 5, 16, 16)
    moving = still.clone()
    moving[:, :, 1::2] = 1.0  # every other frame flips: |change| = 1 everywhere
    assert motion_energy(still).tolist() == [0.0, 0.0]
    assert motion_energy(moving).tolist() == pytest.approx([1.0, 1.0])
    img = labelled_grid(moving, ["a", "b"], scale=2, pad=2, label_width=50)
    assert img.size == (50 + (5 * 16 + 6 * 2) * 2, (2 * 16 + 3 * 2) * 2)
    with pytest.raises(ValueError, match="labels"):
        labelled_grid(moving, ["a"])
    assert side_by_side(still[0], moving[0], gap=3).shape == (3, 5, 16, 35)
