"""Studies: grids, the micro encoder study end to end (intervals, paired differences, timing pass,
report, resume), a failed row, 2 worker processes, a stop signal and its resume, the paper grid at
tiny sizes, the micro ablation, the docs generator and the CLI.

The micro runs check plumbing, not quality: a few steps, 16x16 clips and a random "I3D" stand-in
(a pooled linear map; tests/_study_helpers.py) instead of the real network.
"""

from __future__ import annotations

import csv
import json
import os
import signal

import pytest
import torch
from _study_helpers import FakeI3D

from walt.cli import main
from walt.study import (
    DEFAULT_DESIGN,
    PAPER_DESIGN,
    EncoderDesign,
    StudyInterrupted,
    design_grid,
    get_variants,
    pareto_front,
    planned_minutes,
    run_ablation_study,
    run_encoder_study,
    study_config,
    write_docs,
)
from walt.study import encoder as E
from walt.study import rows as R
from walt.study.study_config import StudySettingsError

# Two designs that differ in every cost: 12 vs 80 tokens per clip at 16x16, 9 frames.
MICRO_DESIGNS = [EncoderDesign(4, 8, 4, True), EncoderDesign(2, 4, 4, False)]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("encoder")
    summary = run_encoder_study(study_config("micro"), MICRO_DESIGNS, out, i3d=FakeI3D(), command="pytest encoder")
    return out, summary


@pytest.fixture(scope="module")
def ablation_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ablation")
    summary = run_ablation_study(study_config("micro"), get_variants(["default", "no_latent_norm"]), out,
                                 i3d=FakeI3D(), command="pytest ablation")
    return out, summary


# ----------------------------------------------------------------------------- pure functions


def test_pareto_front_known_points():
    # (throughput up, FVD down): b dominates a; d is dominated by c; c and e trade off.
    xs = [1.0, 2.0, 3.0, 2.5, 5.0]
    ys = [50.0, 40.0, 30.0, 35.0, 45.0]
    assert pareto_front(xs, ys, maximize_x=True, maximize_y=False) == [2, 4]
    assert pareto_front([10, 20, 5, 40], [9.0, 3.0, 12.0, 1.0]) == [2, 0, 1, 3]
    assert pareto_front([10, 20], [5.0, 6.0]) == [0]
    assert pareto_front([1, 1, None], [2.0, 2.0, 0.0]) == [0, 1]  # ties do not dominate; missing values skipped


def test_design_grids():
    small = design_grid("small")
    assert len(small) == 8 and small[0] == EncoderDesign(**DEFAULT_DESIGN) and len({d.name for d in small}) == 8
    assert all(sum(getattr(d, k) != v for k, v in DEFAULT_DESIGN.items()) <= 1 for d in small)
    assert {d.label() for d in small[1:]} == {"f_t=1", "f_t=4", "f_s=8", "c=4", "c=16", "non-causal",
                                              "early time compression"}
    assert EncoderDesign(2, 4, 8, True, "early").name == "ft2_fs4_c8_causal_early"
    paper = design_grid("paper")
    assert [d.latent_channels for d in paper] == [8, 4, 16, 32] and paper[0] == EncoderDesign(**PAPER_DESIGN)
    assert paper[1].label(paper[0]) == "c=4"
    assert len(design_grid("full")) == 1 + 3 + 2 + 3 + 1 + 1
    assert len(design_grid("full", full_factorial=True)) == 4 * 3 * 4 * 2 * 2
    custom = design_grid("custom", temporal_factor=(1, 2), causal=(True, False))
    assert [d.name for d in custom] == ["ft2_fs4_c8_causal", "ft1_fs4_c8_causal", "ft2_fs4_c8_noncausal"]
    with pytest.raises(ValueError, match="unknown design axis"):
        design_grid("custom", temporal=(1,))
    with pytest.raises(ValueError, match="needs at least one axis"):
        design_grid("custom")
    with pytest.raises(ValueError, match="fixed list"):
        design_grid("paper", full_factorial=True)


def test_check_design_rejects_clips_the_autoencoder_cannot_take():
    E.check_design(EncoderDesign(4, 16, 4, True), study_config("micro"))
    with pytest.raises(ValueError, match="multiple of f_s"):
        E.check_design(EncoderDesign(4, 8, 4, True), study_config("micro", resolution=20))
    with pytest.raises(ValueError, match="1 \\+ 8k"):
        E.check_design(EncoderDesign(8, 8, 4, True), study_config("micro"))  # 5-frame crops


def test_cpu_plan_fits_two_hours_and_reads_the_demo_denoiser():
    from walt.experiment.recipes import DEMO_DENOISER

    cfg = study_config("cpu")
    plan = planned_minutes(cfg, "encoder", len(design_grid("small")), jobs=2)
    assert plan["train"] == 4 * 19 and plan["total"] <= 120, plan
    assert cfg.walt_kwargs() == DEMO_DENOISER and cfg.samples == 288 and cfg.fvd_clips == 96
    assert study_config("cpu", patch_size=1).walt_kwargs()["patch_size"] == 1
    with pytest.raises(ValueError, match="must cover"):
        study_config("micro", heldout_clips=4)


# ----------------------------------------------------------------------------- the micro encoder study


def _intervals(node, path=""):
    """Every interval dict below `node`, with where it is."""
    if isinstance(node, dict):
        if {"value", "lo", "hi"} <= set(node):
            yield path, node
        for k, v in node.items():
            yield from _intervals(v, f"{path}.{k}")


def test_encoder_study_every_quality_number_has_an_interval(encoder_run):
    out, summary = encoder_run
    rows = summary["rows"]
    assert [r["name"] for r in rows] == [d.name for d in MICRO_DESIGNS] and not any(r["failed"] for r in rows)
    for r in rows:
        assert set(r["quality"]) == {"recon", "time", "steps"}
        assert set(r["quality"]["recon"]) == {"psnr", "ssim", "accuracy", "feature_fd", "rfvd"}
        assert set(r["quality"]["time"]) == set(r["quality"]["steps"]) == {"accuracy", "feature_fd", "fvd"}
        for where, iv in _intervals(r["quality"]):
            assert iv["lo"] <= iv["value"] <= iv["hi"], where
        assert len(r["per_seed"]["time"]["fvd"]) == 3  # three seed sets
    assert [r["train"]["walt"]["tokens_per_clip"] for r in rows] == [3 * 2 * 2, 5 * 4 * 4]
    # the reference has no differences; the other row one per metric, each with its flag
    assert rows[0]["diff"] == {}
    for part, metrics in rows[1]["diff"].items():
        assert set(metrics) == set(rows[1]["quality"][part])
        assert all(isinstance(d["established"], bool) and d["lo"] <= d["value"] <= d["hi"] for d in metrics.values())
    ref = summary["analysis"]["reference"]
    assert ref["floor_fvd"]["at_rows"]["lo"] <= ref["floor_fvd"]["at_rows"]["value"]
    assert ref["floor_feature_fd"]["counts"] == [4, 6, 8] and len(ref["floor_feature_fd"]["relative_width"]) == 3


def test_paired_differences_are_row_minus_reference_on_the_same_clips(encoder_run):
    from walt.eval.intervals import paired_mean_difference
    from walt.study.evaluate import load_arrays
    from walt.experiment.runner import StageLog

    out, summary = encoder_run
    a, b = (load_arrays(out / "designs" / d.name, StageLog(out / "designs" / d.name / "stages").get("recon"))
            for d in MICRO_DESIGNS)
    d = paired_mean_difference(b["psnr"], a["psnr"])
    assert summary["rows"][1]["diff"]["recon"]["psnr"]["value"] == pytest.approx(d["value"])
    assert (a["labels"] == b["labels"]).all()  # the same held-out clips for every design


def test_equal_steps_view_and_the_timing_pass(encoder_run):
    out, summary = encoder_run
    cfg = study_config("micro")
    assert summary["analysis"]["common_step"] == cfg.walt_steps  # fixed steps: every row reaches the end
    for r in summary["rows"]:
        t = r["timing"]
        assert t["threads"] == cfg.timing_threads
        for k in ("gen_clips_per_s", "train_steps_per_s", "encode_clips_per_s", "decode_clips_per_s"):
            assert 0 < t[k]["lo"] <= t[k]["value"] <= t[k]["hi"], k
        assert t["encoder_gflop_per_clip"] > 0 and t["decoder_gflop_per_clip"] > 0
        log = json.loads((out / "designs" / r["name"] / "stages" / "timing.json").read_text())
        assert log["stage_seconds"] > 0
    # the snapshot every row reached is kept; the final weights equal it here, so the numbers are shared
    walt = out / "designs" / MICRO_DESIGNS[0].name / "walt"
    assert (walt / "snapshots" / f"step_{cfg.walt_steps:07d}.safetensors").is_file()
    assert summary["rows"][0]["quality"]["steps"] == summary["rows"][0]["quality"]["time"]


def test_report_files(encoder_run):
    out, _ = encoder_run
    with (out / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"time_fvd", "time_fvd_lo", "time_fvd_hi", "time_fvd_established",
                               "recon_psnr_diff", "gen_clips_per_s_lo", "fvd_protocol_hash"} <= set(rows[0])
    assert rows[0]["time_fvd_established"] == "" and rows[1]["time_fvd_established"] in ("True", "False")
    md = (out / "report.md").read_text()
    assert "| f_t=2, f_s=4, non-causal |" in md and "reference" in md and "established" in md
    assert "command: `pytest encoder`" in md and "machine:" in md and "3 seed sets x 2 = 6" in md
    assert "NOT the reference network" in md and "interval width / floor" in md
    for name in ("pareto_time.png", "pareto_steps.png", "reconstruction.png"):
        assert (out / name).stat().st_size > 1000
    assert json.loads((out / "report.json").read_text())["kind"] == "encoder"


def test_rerun_reuses_every_stage_and_a_lost_stage_runs_alone(encoder_run, monkeypatch):
    out, summary = encoder_run
    calls = []
    for fn in ("train_vae_stage", "train_walt_stage", "cache_stage"):
        real = getattr(R.S, fn)
        monkeypatch.setattr(R.S, fn, lambda *a, _f=fn, _r=real, **k: calls.append(_f) or _r(*a, **k))
    from walt.study import evaluate as EV

    real_sample = EV.sample_stage
    monkeypatch.setattr(EV, "sample_stage", lambda *a, **k: calls.append("sample") or real_sample(*a, **k))
    again = run_encoder_study(study_config("micro"), MICRO_DESIGNS, out, i3d=FakeI3D(), command="pytest encoder")
    assert calls == [] and again["analysis"]["rows"] == json.loads(json.dumps(summary["analysis"]["rows"]))
    (out / "designs" / MICRO_DESIGNS[1].name / "stages" / "eval_time.json").unlink()
    third = run_encoder_study(study_config("micro"), MICRO_DESIGNS, out, i3d=FakeI3D(), command="pytest encoder")
    assert calls == ["sample"]  # only the lost stage: nothing trains again
    assert third["rows"][1]["quality"]["time"] == summary["rows"][1]["quality"]["time"]  # same seeds, same numbers
    with pytest.raises(StudySettingsError, match="other settings"):
        run_encoder_study(study_config("micro", walt_steps=6), MICRO_DESIGNS, out, i3d=FakeI3D())


def test_failed_row_is_recorded_while_two_workers_finish_the_others(tmp_path):
    # patch 2 on f_s = 16 at 16x16: a 1x1 latent the patch does not divide -> that row fails, the other goes on
    cfg = study_config("micro", patch_size=2, fvd=False)
    designs = [EncoderDesign(4, 8, 4, True), EncoderDesign(4, 16, 4, True)]
    summary = run_encoder_study(cfg, designs, tmp_path, jobs=2)
    ok, bad = summary["rows"]
    assert ok["failed"] is None and ok["quality"]["time"]["accuracy"]["n"] == cfg.samples
    assert bad["failed"]["phase"] == "train" and "patch_size" in bad["failed"]["error"]
    assert bad["quality"] == {} and "fvd" not in ok["quality"]["time"]
    md = (tmp_path / "report.md").read_text()
    assert "## Failed rows" in md and "patch_size" in md and "FVD: not measured" in md


def test_a_stop_signal_ends_the_study_and_the_rerun_resumes(tmp_path, monkeypatch):
    from walt.study import stages as S

    cfg = study_config("micro", fvd=False, walt_steps=6)
    real = S._snapshotter
    sent = []

    def snapshotter(folder):
        save = real(folder)

        def save_then_stop(step):
            save(step)
            if not sent:
                sent.append(step)
                os.kill(os.getpid(), signal.SIGTERM)  # as `kill` would, between two training calls

        return save_then_stop

    monkeypatch.setattr(S, "_snapshotter", snapshotter)
    with pytest.raises(StudyInterrupted) as e:
        run_encoder_study(cfg, MICRO_DESIGNS[:1], tmp_path)
    assert e.value.signal == "SIGTERM" and e.value.exit_code == 143
    row = tmp_path / "designs" / MICRO_DESIGNS[0].name
    assert json.loads((row / "interrupted.json").read_text())["stage"] == "walt"
    assert (row / "stages" / "vae.json").is_file() and not (row / "stages" / "walt.json").exists()
    trained = []
    monkeypatch.setattr(S, "train_vae_stage", lambda *a, **k: trained.append("vae"))
    summary = run_encoder_study(cfg, MICRO_DESIGNS[:1], tmp_path)
    assert trained == [] and not (row / "interrupted.json").exists()
    assert summary["rows"][0]["train"]["walt"]["steps"] == 6 and summary["rows"][0]["quality"]["time"]


def test_budget_minutes_train_to_a_deadline_with_snapshots(tmp_path):
    cfg = study_config("micro", budget_minutes=0.03, fvd=False, walt_steps=1, vae_steps=1, snapshot_every=3)
    summary = run_encoder_study(cfg, MICRO_DESIGNS[:1], tmp_path)
    walt = summary["rows"][0]["train"]["walt"]
    assert walt["steps"] >= cfg.walt_min_steps and summary["rows"][0]["train"]["vae"]["steps"] >= cfg.vae_min_steps
    step = summary["analysis"]["common_step"]
    assert step == walt["steps"] // 3 * 3 and step in walt["snapshots"]
    assert "wall-clock minutes of training per row" in (tmp_path / "report.md").read_text()


def test_paper_grid_at_tiny_sizes(tmp_path):
    micro = study_config("micro")
    tiny = {k: getattr(micro, k) for k in (
        "train_clips", "vae_base_channels", "vae_channel_multipliers", "vae_num_res_blocks", "vae_norm_groups",
        "vae_steps", "vae_batch_size", "vae_warmup_steps", "walt_hidden_size", "walt_depth", "walt_num_heads",
        "walt_steps", "walt_batch_size", "walt_warmup_steps", "snapshot_every", "sample_steps", "heldout_clips",
        "seed_sets", "samples_per_seed", "fvd_clips_per_seed", "floor_counts", "fvd_floor_counts",
        "classifier_train_clips", "classifier_steps", "timing_clips", "timing_repeats", "calibration_steps")}
    cfg = study_config("paper", **tiny, resolution=16, patch_size=1, budget_minutes=None, classes=("bouncing", "orbiting"))
    assert cfg.num_frames == 17 and study_config("paper").resolution == 128
    designs = design_grid("paper")
    summary = run_encoder_study(cfg, designs, tmp_path, i3d=FakeI3D())
    assert [r["train"]["walt"]["latent_shape"] for r in summary["rows"]] == [[c, 5, 2, 2] for c in (8, 4, 16, 32)]
    assert all(r["failed"] is None and r["diff"] or i == 0 for i, r in enumerate(summary["rows"]))


# ----------------------------------------------------------------------------- ablation


def test_ablation_micro(ablation_run):
    from walt.checkpoint import load_checkpoint

    out, summary = ablation_run
    rows = summary["rows"]
    assert [r["name"] for r in rows] == ["default", "no_latent_norm"] and all(r["failed"] is None for r in rows)
    assert set(rows[1]["diff"]) == {"time", "steps"} and "fvd" in rows[1]["diff"]["time"]
    assert summary["analysis"]["autoencoder"]["quality"]["psnr"]["lo"] > 0  # the shared autoencoder, scored once
    raw = load_checkpoint(out / "variants" / "no_latent_norm" / "walt" / "walt_ema.safetensors")["latent_stats"]
    norm = load_checkpoint(out / "variants" / "default" / "walt" / "walt_ema.safetensors")["latent_stats"]
    assert torch.equal(raw["mean"], torch.zeros_like(raw["mean"])) and torch.equal(raw["std"], torch.ones_like(raw["std"]))
    assert not torch.equal(norm["std"], torch.ones_like(norm["std"]))
    md = (out / "report.md").read_text()
    assert "Next to the paper" in md and "FVD 67.9 vs 60.7" in md and "the shared autoencoder" in md
    assert (out / "ablation.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="unknown ablation variant"):
        get_variants(["no_such_knob"])


def test_ablation_variants_change_what_they_say():
    from walt.study import stages as S

    v = {x.name: x.recipe for x in get_variants(list(__import__("walt.study").study.VARIANTS))}
    assert [x.name for x in get_variants()] == ["default", "no_self_cond", "no_zero_snr", "no_latent_norm",
                                                "full_attention", "adaln_lora_0"]
    cfg = study_config("micro")
    nets = {k: S.build_walt(cfg, (4, 3, 8, 8), 2, 0, **r.build_kwargs()) for k, r in v.items()}
    assert nets["default"].config.spatiotemporal_window == (3, 4, 4)
    assert nets["window_small"].config.spatiotemporal_window == (3, 2, 2)
    assert nets["default"].config.self_conditioning and not nets["no_self_cond"].config.self_conditioning
    assert v["no_self_cond"].p_self_cond == 0.0 and v["default"].p_self_cond == 0.9
    assert nets["full_attention"].config.attention == "full" and nets["default"].config.attention == "window"
    assert nets["adaln_lora_0"].config.adaln_lora_rank == 0 and nets["default"].config.adaln_lora_rank == 2
    assert dict(v["no_zero_snr"].diffusion) == {"zero_terminal_snr": False} and v["default"].diffusion == ()
    assert v["no_latent_norm"].normalize is False and v["default"].normalize is True


# ----------------------------------------------------------------------------- docs/study/README.md


def test_docs_generator_keeps_the_answer(encoder_run, ablation_run, tmp_path):
    from walt.study.docs import ANSWER_END, ANSWER_START, PLACEHOLDER

    readme = write_docs(encoder_run[0], ablation_run[0], tmp_path)
    text = readme.read_text()
    assert text.index(ANSWER_START) < text.index(PLACEHOLDER) < text.index(ANSWER_END) < text.index("## Reproduce")
    assert "pytest encoder" in text and "pytest ablation" in text and "Next to the paper" in text
    assert (tmp_path / "pareto_time.png").is_file() and (tmp_path / "ablation.png").is_file()
    readme.write_text(text.replace(PLACEHOLDER, "The answer, written by hand."))
    again = write_docs(encoder_run[0], ablation_run[0], tmp_path).read_text()
    assert "The answer, written by hand." in again and PLACEHOLDER not in again
    with pytest.raises(ValueError, match="no finished `walt study ablation`"):
        write_docs(encoder_run[0], encoder_run[0], tmp_path)


# ----------------------------------------------------------------------------- plots


def test_log_ticks_are_readable():
    from walt.study.plots import log_ticks

    t = log_ticks(2.8, 6.9)
    assert len(t) >= 3 and all(2.8 / 1.25 <= v <= 6.9 * 1.25 for v in t)
    assert 1.0 in log_ticks(0.55, 6.9) and len(log_ticks(80, 320)) >= 3 and log_ticks(0, 5) == []


def test_pareto_labels_do_not_overlap_and_floor_is_drawn():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from walt.study.plots import _label_points, scatter_panel

    pts = [{"label": lab, "gen_clips_per_s": {"value": x, "lo": 0.9 * x, "hi": 1.1 * x},
            "fvd": {"value": y, "lo": y - 50, "hi": y + 50}} for lab, x, y in [
        ("default", 6.4, 1532), ("c=4", 6.9, 1180), ("c=16", 6.0, 1510), ("non-causal", 6.6, 1197),
        ("f_t=2", 3.0, 1400), ("f_t=1", 0.55, 1663), ("f_s=4", 1.15, 982)]]
    fig, ax = plt.subplots(figsize=(5.5, 4.4), layout="constrained")
    scatter_panel(ax, pts, "gen_clips_per_s", "fvd", "clips/s", "FVD", True, False, logx=True,
                  lines=[({"value": 757.0, "lo": 700.0, "hi": 800.0}, "floor: real vs real")])
    _label_points(ax, pts, "gen_clips_per_s", "fvd")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in ax.texts]
    assert sorted(t.get_text() for t in ax.texts) == sorted(p["label"] for p in pts)
    assert not [(i, j) for i in range(len(boxes)) for j in range(i) if boxes[i].overlaps(boxes[j])]
    floor = [ln for ln in ax.get_lines() if ln.get_label() == "floor: real vs real"]
    assert len(floor) == 1 and floor[0].get_ydata()[0] == 757.0
    assert len([t for t in ax.get_xticklabels() if t.get_text()]) >= 3
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("argv, message", [
    (["study"], "choose a study"),
    (["study", "encoder", "--out", "X", "--temporal", "1,2"], "need --grid custom"),
    (["study", "encoder", "--out", "X", "--grid", "paper", "--channels", "4"], "need --grid custom"),
    (["study", "encoder", "--out", "X", "--grid", "custom", "--temporal", "3"], "temporal_factor=3"),
    (["study", "encoder", "--out", "X", "--budget-minutes", "2", "--vae-steps", "5"], "either --budget-minutes"),
    (["study", "encoder", "--out", "X", "--fvd-protocol", "nope"], "unknown FVD protocol"),
    (["study", "encoder", "--out", "X", "--jobs", "0"], "--jobs"),
    (["study", "ablation", "--out", "X", "--variants", "default,bogus"], "unknown ablation variant"),
    (["study", "encoder", "--out", "X", "--resolution", "20", "--no-fvd"], "multiple of"),
    (["study", "encoder", "--out", "X", "--eval-clips", "8", "--no-fvd"], "must cover"),
    (["study", "docs", "--encoder", "X"], "no finished `walt study encoder`"),
])
def test_cli_rejects_bad_input(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / "o") if a == "X" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


MICRO_SETS = ["resolution=16", "train_clips=4", "heldout_clips=8", "samples_per_seed=2", "fvd_clips_per_seed=2",
              "floor_counts=4,8", "fvd_floor_counts=4,8", "classifier_train_clips=8", "classifier_steps=2",
              "vae_base_channels=4", "vae_channel_multipliers=1,2", "vae_norm_groups=4", "vae_batch_size=2",
              "vae_warmup_steps=1", "walt_hidden_size=16", "walt_depth=2", "walt_num_heads=2", "walt_batch_size=2",
              "walt_warmup_steps=1", "calibration_steps=1", "snapshot_every=1", "timing_clips=2", "timing_repeats=1",
              "classes=bouncing,orbiting"]


def test_cli_micro_run_without_fvd(tmp_path, capsys):
    argv = ["study", "encoder", "--grid", "custom", "--channels", "4", "--spatial", "4", "--vae-steps", "2",
            "--walt-steps", "2", "--sample-steps", "2", "--no-fvd", "--no-progress", "--device", "cpu",
            "--out", str(tmp_path / "s")]
    for s in MICRO_SETS:
        argv += ["--set", s]
    assert main(argv) == 0, capsys.readouterr().err
    with (tmp_path / "s" / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["ft2_fs4_c8_causal", "ft2_fs4_c4_causal"]  # the default design, then c = 4
    assert "time_fvd" not in rows[0] and float(rows[0]["recon_psnr"]) > 0
    md = (tmp_path / "s" / "report.md").read_text()
    assert "FVD: not measured" in md and "walt study encoder" in md
    assert main(["study", "docs", "--encoder", str(tmp_path / "s"), "--out", str(tmp_path / "docs")]) == 0
    assert "walt study encoder" in (tmp_path / "docs" / "README.md").read_text()
