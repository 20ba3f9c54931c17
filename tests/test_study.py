"""Studies (issue #5): grids, Pareto fronts, a micro encoder sweep + resume, a micro ablation, the CLI.

The micro runs check plumbing, not quality: absurdly small budgets (2 steps), 16x16 clips and a
random "I3D" stand-in (a pooled linear map to 400 features) instead of the real network.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from walt.cli import main
from walt.data import SyntheticVideos
from walt.study import (
    DEFAULT_DESIGN,
    EncoderDesign,
    design_grid,
    get_variants,
    pareto_front,
    run_ablation_study,
    run_encoder_study,
    study_config,
)
from walt.study import encoder as E
from walt.study import stages as S
from walt.study.config import StudySettingsError


class FakeI3D(nn.Module):
    """(B, 3, T, 224, 224) -> (B, 400): fast and deterministic; NOT the FVD network."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.pool = nn.AdaptiveAvgPool3d((2, 2, 2))
        self.fc = nn.Linear(24, 400)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))


def _data(cfg):
    train = SyntheticVideos(cfg.train_clips, num_frames=cfg.num_frames, resolution=cfg.resolution, seed=0,
                            classes=("bouncing", "orbiting"))
    held = SyntheticVideos(cfg.eval_clips, num_frames=cfg.num_frames, resolution=cfg.resolution, seed=7)
    return train, held


# ----------------------------------------------------------------------------- pure functions


def test_pareto_front_known_points():
    # (throughput up, FVD down): b dominates a; d is dominated by c; c and e trade off.
    xs = [1.0, 2.0, 3.0, 2.5, 5.0]
    ys = [50.0, 40.0, 30.0, 35.0, 45.0]
    assert pareto_front(xs, ys, maximize_x=True, maximize_y=False) == [2, 4]
    # both minimised (tokens down, rFVD down)
    assert pareto_front([10, 20, 5, 40], [9.0, 3.0, 12.0, 1.0]) == [2, 0, 1, 3]
    assert pareto_front([10, 20], [5.0, 6.0]) == [0]
    # ties: equal points do not dominate each other; missing values are skipped
    assert pareto_front([1, 1, None], [2.0, 2.0, 0.0]) == [0, 1]


def test_design_grids():
    small = design_grid("small")
    assert len(small) == 7 and small[0] == EncoderDesign(**DEFAULT_DESIGN)
    assert len({d.name for d in small}) == 7
    full = design_grid("full")
    assert len(full) == 10  # default + 3 f_t + 2 f_s + 3 c + non-causal
    assert all(sum(getattr(d, k) != v for k, v in DEFAULT_DESIGN.items()) <= 1 for d in full)
    assert len(design_grid("full", full_factorial=True)) == 4 * 3 * 4 * 2
    custom = design_grid("custom", temporal_factor=(1, 4), causal=(True, False))
    assert [d.name for d in custom] == ["ft4_fs8_c8_causal", "ft1_fs8_c8_causal", "ft4_fs8_c8_noncausal"]
    assert len(design_grid("custom", True, temporal_factor=(1, 4), latent_channels=(4, 8, 16))) == 6
    assert EncoderDesign(2, 8, 8, False).label() == "f_t=2, non-causal"
    with pytest.raises(ValueError, match="unknown design axis"):
        design_grid("custom", temporal=(1,))
    with pytest.raises(ValueError, match="needs at least one axis"):
        design_grid("custom")
    with pytest.raises(ValueError, match="fixed list"):
        design_grid("small", full_factorial=True)


def test_check_design_rejects_misfit_clips():
    cfg = study_config("micro", num_frames=17, resolution=16)
    E.check_design(EncoderDesign(8, 16, 4, True), cfg)
    with pytest.raises(ValueError, match="multiple of"):
        E.check_design(EncoderDesign(4, 16, 4, True), study_config("micro", resolution=24))
    with pytest.raises(ValueError, match="1 \\+ 8k"):
        E.check_design(EncoderDesign(8, 8, 4, True), study_config("micro", num_frames=17, vae_train_frames=5))


# ----------------------------------------------------------------------------- micro runs


def test_encoder_study_micro_writes_outputs_and_resumes(tmp_path, monkeypatch):
    cfg = study_config("micro")
    train, held = _data(cfg)
    designs = [EncoderDesign(4, 8, 4, True), EncoderDesign(2, 4, 4, False)]
    i3d = FakeI3D()
    rows = run_encoder_study(cfg, designs, tmp_path, train, held, i3d=i3d, command="pytest")
    assert [r["design"] for r in rows] == [d.name for d in designs]
    # tokens per clip follow the design: 17 frames, 16x16 -> (1 + 16/f_t) x (16/f_s)^2
    assert [r["tokens_per_clip"] for r in rows] == [5 * 2 * 2, 9 * 4 * 4]
    for r in rows:
        for k in ("psnr", "ssim", "rfvd", "fvd", "encode_clips_per_s", "decode_clips_per_s", "gen_clips_per_s"):
            assert isinstance(r[k], float) and r[k] == r[k], k
        assert r["vae_steps"] == cfg.vae_steps and r["walt_steps"] == cfg.walt_steps
    with (tmp_path / "results.csv").open(newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    md = (tmp_path / "report.md").read_text()
    assert "| f_t=2, f_s=4, c=4, non-causal |" in md and "non-reference feature network" in md
    assert "FVD floor of this protocol" in md and (tmp_path / "train_i3d.npy").is_file()
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    # training-state checkpoints are dropped once a design is done; the weights stay
    d0 = tmp_path / "designs" / designs[0].name
    assert (d0 / "vae" / "vae.safetensors").is_file() and not (d0 / "walt" / "checkpoints").exists()

    # 1) a rerun reuses every finished design: run_design is never called
    calls = []
    real_run_design = E.run_design
    monkeypatch.setattr(E, "run_design", lambda *a, **k: calls.append(a[0]) or real_run_design(*a, **k))
    again = run_encoder_study(cfg, designs, tmp_path, train, held, i3d=i3d)
    assert calls == [] and again == json.loads(json.dumps(rows))

    # 2) a design killed after training: only its unfinished stages run again
    (d0 / "stages" / "result.json").unlink()
    (d0 / "stages" / "generate.json").unlink()
    trained = {"vae": 0, "walt": 0, "generate": 0}
    for name, fn in (("vae", "train_vae_stage"), ("walt", "train_walt_stage"), ("generate", "generate_stage")):
        real = getattr(S, fn)
        monkeypatch.setattr(S, fn, lambda *a, _n=name, _r=real, **k: trained.__setitem__(_n, trained[_n] + 1) or _r(*a, **k))
    rows3 = run_encoder_study(cfg, designs, tmp_path, train, held, i3d=i3d)
    assert calls == [designs[0]] and trained == {"vae": 0, "walt": 0, "generate": 1}
    assert rows3[0]["psnr"] == rows[0]["psnr"] and rows3[0]["fvd"] == pytest.approx(rows[0]["fvd"])

    # other settings in the same folder are refused before any work
    with pytest.raises(StudySettingsError, match="other settings"):
        run_encoder_study(study_config("micro", walt_steps=3), designs, tmp_path, train, held, i3d=i3d)


def test_ablation_micro_two_variants(tmp_path):
    from walt.eval.fvd_record import i3d_weights_hash
    from walt.study.fvd import fvd_protocol_for

    cfg = study_config("micro")
    train, held = _data(cfg)
    i3d = FakeI3D()
    rows = run_ablation_study(cfg, get_variants(["default", "no_latent_norm"]), tmp_path, train, held, i3d=i3d)
    assert [r["variant"] for r in rows] == ["default", "no_latent_norm"]
    assert all(r["fvd"] is not None and r["walt_train_steps_per_s"] > 0 for r in rows)
    # every CSV row names the protocol and the network that measured its FVD
    with (tmp_path / "results.csv").open(newline="") as f:
        csv_rows = list(csv.DictReader(f))
    want = fvd_protocol_for(cfg).protocol_hash()
    assert [r["fvd_protocol_hash"] for r in csv_rows] == [want, want]
    assert {r["i3d_weights_sha256"] for r in csv_rows} == {i3d_weights_hash(i3d)}
    assert {r["i3d_is_reference"] for r in csv_rows} == {"False"}  # FakeI3D is not the FVD network
    assert csv_rows[0]["st_window"] == "5x1x1"  # micro: 2x2 latent frames, clamped to >= 1
    assert (tmp_path / "ablation.png").is_file() and (tmp_path / "results.csv").is_file()
    assert "| no_latent_norm |" in (tmp_path / "report.md").read_text()
    # the un-normalised variant really trained on raw latents: identity stats in its checkpoint
    from walt.checkpoint import load_checkpoint

    raw = load_checkpoint(tmp_path / "variants" / "no_latent_norm" / "walt" / "walt_ema.safetensors")["latent_stats"]
    norm = load_checkpoint(tmp_path / "variants" / "default" / "walt" / "walt_ema.safetensors")["latent_stats"]
    assert raw["mean"].shape == (DEFAULT_DESIGN["latent_channels"],)
    assert torch.equal(raw["mean"], torch.zeros_like(raw["mean"])) and torch.equal(raw["std"], torch.ones_like(raw["std"]))
    assert not torch.equal(norm["std"], torch.ones_like(norm["std"]))
    with pytest.raises(ValueError, match="unknown ablation variant"):
        get_variants(["no_such_knob"])


def test_ablation_variants_change_what_they_say():
    v = {x.name: x.recipe for x in get_variants()}
    assert set(v) == {"default", "no_self_cond", "no_zero_snr", "window_small", "full_attention", "adaln_lora_0",
                      "no_latent_norm"}
    cfg = study_config("micro")
    shape, nc = (4, 3, 8, 8), 2
    nets = {k: S.build_walt(cfg, shape, nc, 0, **r.build_kwargs()) for k, r in v.items()}
    # the window ablation: half the latent frame per side by default, a quarter in window_small
    assert nets["default"].config.spatiotemporal_window == (3, 4, 4)
    assert nets["window_small"].config.spatiotemporal_window == (3, 2, 2)
    assert nets["window_small"].config.spatial_window == nets["default"].config.spatial_window == (1, 8, 8)
    assert nets["default"].config.self_conditioning and not nets["no_self_cond"].config.self_conditioning
    assert v["no_self_cond"].p_self_cond == 0.0 and v["default"].p_self_cond == 0.9
    assert nets["full_attention"].config.attention == "full" and nets["default"].config.attention == "window"
    assert nets["adaln_lora_0"].config.adaln_lora_rank == 0 and nets["default"].config.adaln_lora_rank == 2
    assert dict(v["no_zero_snr"].diffusion) == {"zero_terminal_snr": False} and v["default"].diffusion == ()
    assert v["no_latent_norm"].normalize is False and v["default"].normalize is True


# ----------------------------------------------------------------------------- plots


def test_log_ticks_are_readable():
    from walt.study.report import log_ticks

    # under a decade: matplotlib's log axis would label one tick or none
    t = log_ticks(2.8, 6.9)
    assert len(t) >= 3 and all(2.8 / 1.25 <= v <= 6.9 * 1.25 for v in t)
    wide = log_ticks(0.55, 6.9)
    assert 1.0 in wide and len(wide) >= 3
    assert len(log_ticks(80, 320)) >= 3
    assert log_ticks(0, 5) == []


def test_pareto_labels_do_not_overlap_and_floor_is_drawn():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from walt.study.report import _scatter

    # seven designs, four of them nearly on top of each other (as in docs/study/pareto.png)
    rows = [{"label": lab, "gen_clips_per_s": x, "fvd": y} for lab, x, y in [
        ("default", 6.4, 1532), ("c=4", 6.9, 1180), ("c=16", 6.0, 1510), ("non-causal", 6.6, 1197),
        ("f_t=2", 3.0, 1400), ("f_t=1", 0.55, 1663), ("f_s=4", 1.15, 982)]]
    fig, ax = plt.subplots(figsize=(5.5, 4.4), layout="constrained")
    fig.canvas.draw()
    _scatter(ax, rows, "gen_clips_per_s", "fvd", "clips/s", "FVD", True, False, logx=True, floor=757.0)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in ax.texts]
    assert [t.get_text() for t in ax.texts] == [row["label"] for row in rows]
    overlaps = [(ax.texts[i].get_text(), ax.texts[j].get_text()) for i in range(len(boxes))
                for j in range(i) if boxes[i].overlaps(boxes[j])]
    assert not overlaps, overlaps
    floor = [ln for ln in ax.get_lines() if ln.get_label() == "FVD floor (real vs real)"]
    assert len(floor) == 1 and floor[0].get_ydata()[0] == 757.0 and ax.get_ylim()[0] < 757.0
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(labels) >= 3 and all(labels), labels  # readable tick labels on the log axis
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("argv, message", [
    (["study"], "choose a study"),
    (["study", "encoder", "--out", "X", "--temporal", "1,2"], "need --grid custom"),
    (["study", "encoder", "--out", "X", "--grid", "custom", "--temporal", "3"], "temporal_factor=3"),
    (["study", "encoder", "--out", "X", "--budget-minutes", "2", "--vae-steps", "5"], "either --budget-minutes"),
    (["study", "encoder", "--out", "X", "--fvd-protocol", "nope"], "unknown FVD protocol"),
    (["study", "ablation", "--out", "X", "--variants", "default,bogus"], "unknown ablation variant"),
    (["study", "encoder", "--out", "X", "--resolution", "20", "--no-fvd"], "multiple of"),
])
def test_cli_rejects_bad_input(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / "o") if a == "X" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_cli_micro_run_without_fvd(tmp_path, capsys):
    sets = ["resolution=16", "train_clips=4", "eval_clips=2", "fake_clips=2", "vae_base_channels=4",
            "vae_channel_multipliers=1,2", "vae_norm_groups=4", "vae_batch_size=2", "walt_hidden_size=16",
            "walt_depth=2", "walt_num_heads=2", "walt_batch_size=2"]
    argv = ["study", "encoder", "--grid", "custom", "--channels", "4", "--spatial", "8", "--vae-steps", "2",
            "--walt-steps", "2", "--sample-steps", "2", "--no-fvd", "--no-progress", "--device", "cpu",
            "--out", str(tmp_path)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0, capsys.readouterr().err
    with (tmp_path / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    # the default design (f_s = 8 is the default already) and c = 4
    assert [r["design"] for r in rows] == ["ft4_fs8_c8_causal", "ft4_fs8_c4_causal"]
    assert rows[0]["fvd"] == "" and rows[0]["rfvd"] == "" and float(rows[0]["psnr"]) > 0
    md = (tmp_path / "report.md").read_text()
    assert "FVD: not measured" in md and "walt study encoder" in md


def test_budget_minutes_become_steps_per_design(tmp_path):
    cfg = study_config("micro", budget_minutes=0.02, fvd=False)
    train, held = _data(cfg)
    (row,) = run_encoder_study(cfg, [EncoderDesign(4, 8, 4, True)], tmp_path, train, held)
    plan = json.loads((tmp_path / "designs" / "ft4_fs8_c4_causal" / "stages" / "vae_plan.json").read_text())
    assert plan["sec_per_step"] > 0 and row["vae_steps"] == plan["steps"] >= 2
    assert row["walt_steps"] >= 2 and row["fvd"] is None and row["rfvd"] is None
    assert "wall-clock minutes of training per row" in (tmp_path / "report.md").read_text()
