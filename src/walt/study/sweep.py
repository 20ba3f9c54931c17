"""A study's phases, in order, each resumable; rows trained and scored `jobs` at a time.

    reference  (this process)  the common classifier, real features, the floor (walt.study.reference)
    train      (workers)       every row's training stages, each row the same minutes (walt.study.rows)
    evaluate   (workers)       every row's scores at its final weights and at the common step
    timing     (this process)  every row's throughputs, one row after the other (walt.study.timing)
    report     (this process)  intervals, paired differences, tables, plots (walt.study.analysis, .report)

With `jobs` > 1 the train and evaluate phases run in that many worker processes with one torch
thread each, taking rows from a queue; the timing pass runs only once they have exited, so no
throughput is measured on a shared machine. The common step of the equal-steps view is the
largest multiple of `snapshot_every` that every trained row reached.

A row that raises is recorded (<row>/failed.json) and the others go on; a worker that dies marks
its unfinished rows failed. SIGTERM / SIGINT: the workers stop after a checkpoint, this process
forwards SIGTERM to them, waits, and raises `StudyInterrupted`; the same command resumes.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from walt.config import config_to_dict
from walt.experiment.runner import StageLog, check_settings
from walt.study.study_config import StudyConfig, StudySettingsError
from walt.study.rows import (StudyInterrupted, evaluate_row, failure, record_failure, say, shared_autoencoder, stop_check,
                             time_row, train_row)
from walt.study.stages import WaltRecipe

__all__ = ["RowSpec", "Study", "run_study", "planned_minutes", "common_step", "StudyInterrupted"]

# Costs of the evaluation on one (shared) core of the 2-core CPU this project measures on, 9x32x32
# clips: the I3D ~0.75 s per clip; DDIM 50 steps with guidance in bf16 + decode ~0.3 s per clip
# (the demo's 2.2M-parameter denoiser, 80 tokens).
PLAN_I3D_SECONDS, PLAN_SAMPLE_SECONDS = 0.75, 0.3


@dataclass(frozen=True)
class RowSpec:
    """One row: a design's autoencoder (or None: the study's shared one) and a denoiser recipe."""

    name: str
    label: str
    design: dict[str, Any] | None = None
    recipe: WaltRecipe = WaltRecipe()
    paper: str = ""  # what the paper reports for this row (ablation)
    paper_effect: tuple[tuple[str, str], ...] = ()  # (metric, "+" / "-" / "=") of the row vs the reference in the paper


_CACHE: dict[tuple[str, str], Any] = {}  # per process: the classifier and autoencoders a worker loads once


@dataclass
class Study:
    """Everything a phase needs; plain data, sent as it is to the worker processes."""

    cfg: StudyConfig
    kind: str  # "encoder" | "ablation"
    out: Path
    rows: list[RowSpec]
    data: Any  # walt.study.clip_sets.StudyData
    device: str
    i3d: Any = None  # the FVD network (None: no FVD)
    progress: bool = False
    command: str | None = None
    vae_path: Path | None = None  # the ablation's shared autoencoder (a checkpoint, or trained into shared/vae)
    shared_design: dict[str, Any] | None = None  # the design the ablation trains when no checkpoint is given
    fvd_record: dict[str, Any] | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def shared_dir(self) -> Path:
        return self.out / "shared"

    def row_dir(self, row: RowSpec) -> Path:
        return self.out / ("designs" if self.kind == "encoder" else "variants") / row.name

    def classifier(self):
        from walt.study.reference import common_classifier

        key = (str(self.out), "classifier")
        if key not in _CACHE:
            _CACHE[key] = common_classifier(self.cfg, self.data, self.shared_dir)[0]
        return _CACHE[key]

    def row_vae(self, row: RowSpec, folder: Path):
        """The autoencoder that decodes the row: its own (folder/vae) or the study's shared one."""
        return self.vae(folder / "vae" if row.design is not None else Path(self.vae_path))

    def vae(self, path: Path):
        """An autoencoder checkpoint (a .safetensors file, or a training folder's raw weights), loaded once."""
        from walt.study.stages import load_vae

        file = Path(path) if Path(path).suffix == ".safetensors" else Path(path) / "vae.safetensors"
        key = (str(path), f"vae {file.stat().st_mtime_ns}")  # a retrained autoencoder is loaded again
        if key not in _CACHE:
            if Path(path).suffix == ".safetensors":
                from walt.autoencoder import CausalVAE

                vae = CausalVAE.load(path, map_location=torch.device(self.device)).eval().requires_grad_(False)
            else:
                vae = load_vae(Path(path), torch.device(self.device))
            _CACHE[key] = vae
        return _CACHE[key]

    def i3d_net(self):
        return self.i3d


def planned_minutes(cfg: StudyConfig, kind: str, rows: int, jobs: int, shared_vae: bool = False) -> dict[str, float]:
    """The study's plan in minutes on the 2-core CPU (training exact, the rest estimated)."""
    waves = math.ceil(rows / max(1, jobs))
    per_row_eval = 2 * cfg.samples * PLAN_SAMPLE_SECONDS
    if cfg.fvd:
        per_row_eval += (2 + (kind == "encoder")) * cfg.fvd_clips * PLAN_I3D_SECONDS
    plan = {"reference": 1.5 + (2 * max(*cfg.fvd_floor_counts, cfg.fvd_clips) * PLAN_I3D_SECONDS / 1.6 / 60
                                 if cfg.fvd else 0.0),
            "train": waves * (cfg.budget_minutes or 0.0) * (1.0 if kind == "encoder" else 1 - cfg.vae_fraction)
            + (cfg.vae_fraction * (cfg.budget_minutes or 0.0) if shared_vae else 0.0),
            "evaluate": waves * per_row_eval / 60, "timing": 0.4 * rows, "report": 0.15 * rows}
    plan["total"] = sum(plan.values())
    return plan


def common_step(study: Study) -> int | None:
    """The largest multiple of snapshot_every that every trained row reached (None: none, or no row)."""
    steps = [StageLog(study.row_dir(r) / "stages").get("walt") for r in study.rows]
    steps = [s["steps"] for s in steps if s is not None]
    if not steps:
        return None
    s = min(steps) // study.cfg.snapshot_every * study.cfg.snapshot_every
    return s or None


def _prune_snapshots(study: Study, step: int | None) -> None:
    """Delete the snapshots past the common step: adding or retraining rows can only lower it."""
    if step is None:
        return
    for row in study.rows:
        for f in (study.row_dir(row) / "walt" / "snapshots").glob("step_*.safetensors"):
            if int(f.stem.split("_")[1]) > step:
                f.unlink()


def _phase_done(study: Study, row: RowSpec, phase: str, step: int | None) -> bool:
    log = StageLog(study.row_dir(row) / "stages")
    if phase == "train":
        return log.done("walt")
    if phase == "evaluate":
        steps = log.get("eval_steps")
        return log.done("eval_time") and (step is None or (steps is not None and steps.get("step") == step))
    return log.done("timing")


def _run_one(study: Study, phase: str, row: RowSpec, step: int | None) -> None:
    """One row's phase; an error is recorded in the row's failed.json, a stop signal is raised."""
    folder = study.row_dir(row)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "failed.json").unlink(missing_ok=True)
    say(f"{phase} {row.name} ({row.label})")
    try:
        if phase == "train":
            walt = train_row(study, row, folder)
            say(f"  {row.name}: trained, {walt['steps']} denoiser steps, {walt['tokens_per_clip']} tokens per clip")
        elif phase == "evaluate":
            evaluate_row(study, row, folder, step)
        else:
            time_row(study, row, folder)
    except StudyInterrupted:
        raise
    except Exception as e:  # noqa: BLE001 -- a failed row is recorded; the others go on
        record_failure(folder, phase, e)
        say(f"  {row.name}: FAILED in {phase}: {type(e).__name__}: {e}")


def _worker(study: Study, phase: str, queue, step: int | None) -> None:
    """A worker process: one torch thread, rows from `queue` until None; exit 130 / 143 on a signal."""
    from walt.train.distributed import GracefulStop

    torch.set_num_threads(1)
    study.progress = False  # two workers' progress bars would interleave on one terminal
    rows = {r.name: r for r in study.rows}
    with GracefulStop(announce=False):
        try:
            while True:
                stop_check()
                name = queue.get()
                if name is None:
                    break
                _run_one(study, phase, rows[name], step)
        except StudyInterrupted as e:
            sys.stdout.flush()
            sys.exit(e.exit_code)


def _run_phase(study: Study, phase: str, jobs: int, step: int | None = None) -> None:
    from walt.train.distributed import stop_requested

    todo = [r for r in study.rows if not _phase_done(study, r, phase, step)]
    if phase != "train":  # a row whose training failed is not scored (the next run trains it again)
        todo = [r for r in todo if StageLog(study.row_dir(r) / "stages").done("walt")]
    if jobs <= 1 or len(todo) <= 1 or phase == "timing":
        for row in todo:
            stop_check()
            _run_one(study, phase, row, step)
        return
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    for row in todo:
        queue.put(row.name)
    procs = [ctx.Process(target=_worker, args=(study, phase, queue, step)) for _ in range(min(jobs, len(todo)))]
    for p in procs:
        queue.put(None)
        p.start()
    forwarded = False
    while any(p.is_alive() for p in procs):
        for p in procs:
            p.join(timeout=0.5)
        if stop_requested() is not None and not forwarded:
            for p in procs:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)
            forwarded = True
    codes = [p.exitcode for p in procs]
    if stop_requested() is not None or any(c in (130, 143) for c in codes):
        raise StudyInterrupted(stop_requested() or ("SIGINT" if 130 in codes else "SIGTERM"))
    for row in todo:  # a worker that died (killed, out of memory) leaves its rows unfinished
        folder = study.row_dir(row)
        if not _phase_done(study, row, phase, step) and failure(folder) is None:
            record_failure(folder, phase, RuntimeError(f"its worker process ended (exit codes {codes}) before it finished"))


def run_study(cfg: StudyConfig, kind: str, rows: list[RowSpec], out: str | Path, data=None,
              device: str | torch.device = "cpu", i3d=None, progress: bool = False, command: str | None = None,
              jobs: int = 1, vae_path: str | Path | None = None, vae_source: dict[str, Any] | None = None,
              shared_design: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run (or resume) every phase of a study into `out`; returns the report's summary."""
    from walt.study import fvd_features as V
    from walt.study.clip_sets import builtin_data
    from walt.train.distributed import GracefulStop, clear_stop_request

    if len({r.name for r in rows}) != len(rows):
        raise ValueError("two rows of the study have the same name")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = data or builtin_data(cfg)
    if i3d is None and cfg.fvd:
        i3d = V.load_fvd_network(device)
    record = V.protocol_record(cfg, i3d) if cfg.fvd else None
    check_settings(out / "study.json", {"kind": kind, "config": config_to_dict(cfg), "denoiser": cfg.walt_kwargs(),
                                        "data": data.description, "fvd": record, "vae": vae_source}, "a study",
                   "use another --out, or delete it to start over", error=StudySettingsError)
    study = Study(cfg, kind, out, list(rows), data, str(torch.device(device)), i3d if cfg.fvd else None, progress,
                  command, Path(vae_path) if vae_path else None, shared_design, record)
    plan = planned_minutes(cfg, kind, len(rows), jobs, shared_vae=kind == "ablation" and vae_path is None)
    say(f"{len(rows)} rows, {jobs} at a time; planned {plan['total']:.0f} min (" +
        ", ".join(f"{k} {v:.0f}" for k, v in plan.items() if k != "total") + f"); output in {out}")
    clear_stop_request()
    with GracefulStop(announce=False):
        return _phases(study, jobs)


def _phases(study: Study, jobs: int) -> dict[str, Any]:
    from walt.study.analysis import analyse
    from walt.study.reference import reference_stage
    from walt.study.report import write_study_report

    log = StageLog(study.out / "stages")
    log.run("reference", lambda: reference_stage(study.cfg, study.data, study.shared_dir, study.i3d, study.progress, say))
    if study.kind == "ablation":
        study.vae_path = shared_autoencoder(study, log, threads=1 if jobs > 1 else None)
    stop_check()
    _run_phase(study, "train", jobs)
    step = common_step(study)
    say(f"equal-steps view: every row at step {step}" if step else "equal-steps view: no common snapshot step")
    _prune_snapshots(study, step)
    _run_phase(study, "evaluate", jobs, step)
    _run_phase(study, "timing", 1)
    summary = write_study_report(study, analyse(study, step, log))
    say(f"report: {study.out / 'report.md'}")
    return summary
