"""What one row of a study does in each phase, resumable stage by stage (`StageLog` in <row>/stages).

    train     vae -> cache -> walt (encoder rows); walt alone on the shared cache (ablation rows)
    evaluate  recon (encoder rows), eval_time (final weights), eval_steps (the snapshot at the
              common step)
    timing    the row's throughputs and FLOPs, measured alone (`walt.study.timing`)

A training stage that a SIGTERM / SIGINT stopped leaves <row>/interrupted.json (the stage and the
seconds it had spent); the next run continues it from its checkpoint with the rest of its
minutes. A stage killed outright starts over with all of them. A stage that raised leaves
<row>/failed.json (the error) and the other rows go on; the next run tries the row again.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from walt.experiment.runner import StageLog, reporter
from walt.io import read_json, write_json
from walt.study import stages as S

say = reporter("walt study")

__all__ = ["StudyInterrupted", "stop_check", "shared_autoencoder", "train_row", "evaluate_row", "time_row",
           "record_failure", "failure", "say"]


class StudyInterrupted(Exception):
    """SIGTERM / SIGINT stopped the study after a checkpoint; rerunning the command resumes it."""

    def __init__(self, signal: str):
        super().__init__(f"stopped by {signal}")
        self.signal = signal

    @property
    def exit_code(self) -> int:
        return 130 if self.signal == "SIGINT" else 143  # 128 + the signal number, as a shell reports it


def stop_check(step: int | None = None) -> None:
    """Raise StudyInterrupted once a SIGTERM / SIGINT has arrived (between training calls, batches)."""
    from walt.train.distributed import stop_requested

    signal = stop_requested()
    if signal is not None:
        raise StudyInterrupted(signal)


def record_failure(folder: Path, phase: str, error: BaseException) -> None:
    tail = traceback.format_exception(type(error), error, error.__traceback__)[-3:]
    write_json(folder / "failed.json", {"phase": phase, "error": f"{type(error).__name__}: {error}",
                                        "traceback": "".join(tail)[-2000:]})


def failure(folder: Path) -> dict[str, Any] | None:
    return read_json(folder / "failed.json")


def _budgeted(log: StageLog, folder: Path, name: str, budget: float | None,
              train: Callable[[float | None, bool], dict[str, Any]]) -> dict[str, Any]:
    """Run training stage `name` with what is left of its `budget` seconds; a stop records the spending."""
    if log.done(name):
        return log.get(name)
    stopped = read_json(folder / "interrupted.json") or {}
    spent = float(stopped.get("spent_s", 0.0)) if stopped.get("stage") == name else 0.0
    seconds = None if budget is None else max(budget - spent, min(60.0, 0.1 * budget))
    t0 = time.time()
    try:
        info = train(seconds, spent > 0 or (budget is None and stopped.get("stage") == name))
    except StudyInterrupted as e:
        write_json(folder / "interrupted.json", {"stage": name, "spent_s": spent + time.time() - t0, "signal": e.signal})
        raise
    (folder / "interrupted.json").unlink(missing_ok=True)
    return log.finish(name, {**info, "resumed_after_s": spent} if spent else info)


def train_row(study, row, folder: Path) -> dict[str, Any]:
    """The row's training stages -> its "walt" record (tokens per clip, steps, snapshots)."""
    cfg, device, log = study.cfg, torch.device(study.device), StageLog(folder / "stages")
    cache = study.shared_dir / "cache"
    if row.design is not None:
        _budgeted(log, folder, "vae", cfg.vae_seconds, lambda sec, resume: S.train_vae_stage(
            cfg, row.design, study.data.train, folder / "vae", device, study.progress, sec, resume, stop_check, say))
        S.remove_training_state(folder / "vae")
        vae = S.load_vae(folder / "vae", device)
        cache = folder / "cache"
        log.run("cache", lambda: S.cache_stage(vae, study.data.train, cache, device, study.progress))
    walt = _budgeted(log, folder, "walt", cfg.walt_seconds, lambda sec, resume: S.train_walt_stage(
        cfg, row.recipe, cache, folder / "walt", device, study.progress, sec, resume, stop_check, say))
    S.remove_training_state(folder / "walt")
    return walt


def evaluate_row(study, row, folder: Path, common_step: int | None) -> None:
    """Score the row's reconstructions and both sets of its denoiser weights (`walt.study.evaluate`)."""
    from walt.study import evaluate as E
    from walt.study.reference import heldout_b

    cfg, device, log = study.cfg, torch.device(study.device), StageLog(folder / "stages")
    walt = log.get("walt")
    if walt is None:
        raise RuntimeError("the row has no trained denoiser (its training failed or was not run)")
    vae, clf, i3d = study.row_vae(row, folder), study.classifier(), study.i3d_net()
    nc = study.data.num_classes
    if row.design is not None:
        real, labels = heldout_b(cfg, study.data)
        log.run("recon", lambda: E.reconstruction_stage(vae, real, labels, cfg, clf, i3d, folder, device, stop_check))
    weights = folder / "walt" / "walt_ema.safetensors"
    log.run("eval_time", lambda: E.sample_stage(weights, vae, cfg, nc, clf, i3d, folder, "time", device, stop_check))
    done = log.get("eval_steps")
    if done is not None and done.get("step") != common_step:
        log.forget_from("eval_steps")  # the common step moved (rows were added or retrained)
    if common_step is None:
        return
    if walt["steps"] == common_step:  # the final weights are the snapshot: the same numbers
        log.run("eval_steps", lambda: {**log.get("eval_time"), "same_as": "eval_time"})
    else:
        snap = S.snapshot_path(folder / "walt", common_step)
        log.run("eval_steps", lambda: E.sample_stage(snap, vae, cfg, nc, clf, i3d, folder, "steps", device, stop_check))


def time_row(study, row, folder: Path) -> dict[str, Any]:
    """The row's throughputs, measured in the sequential pass (`walt.study.timing`)."""
    from walt.study import timing as T
    from walt.study.reference import heldout_b

    cfg, device, log = study.cfg, torch.device(study.device), StageLog(folder / "stages")

    def measure() -> dict[str, Any]:
        vae = study.row_vae(row, folder)
        cache = folder / "cache" if row.design is not None else study.shared_dir / "cache"
        with T.threads(cfg.timing_threads):
            info = {**T.generation_timing(folder / "walt" / "walt_ema.safetensors", vae, cfg, study.data.num_classes,
                                          device),
                    **T.training_timing(cfg, row.recipe, cache, device), "threads": cfg.timing_threads}
            if row.design is not None:
                info.update(T.autoencoder_timing(vae, heldout_b(cfg, study.data, cfg.timing_clips)[0], cfg, device))
        return info

    return log.run("timing", measure)


def shared_autoencoder(study, log: StageLog, threads: int | None = None) -> Path:
    """The ablation's one autoencoder and latent cache (study-level stages "vae", "cache" in shared/).

    The given checkpoint (`study.vae_path`), or `study.shared_design` trained here the way the
    encoder study trains a row (`threads`=1 when rows train in 1-thread workers). Returns its path."""
    from walt.study.timing import threads as torch_threads

    cfg, device, shared = study.cfg, torch.device(study.device), study.shared_dir
    path = study.vae_path
    if path is None:
        path = shared / "vae"
        with torch_threads(threads or torch.get_num_threads()):
            _budgeted(log, shared, "vae", cfg.vae_seconds, lambda sec, resume: S.train_vae_stage(
                cfg, study.shared_design, study.data.train, path, device, study.progress, sec, resume, stop_check,
                say))
        S.remove_training_state(path)
    vae = study.vae(Path(path))
    log.run("cache", lambda: S.cache_stage(vae, study.data.train, shared / "cache", device, study.progress))
    if not log.done("autoencoder"):  # what every row decodes with: its reconstructions and cost, once
        from walt.study import evaluate as E, timing as T
        from walt.study.reference import heldout_b

        real, labels = heldout_b(cfg, study.data)
        rec = E.reconstruction_stage(vae, real, labels, cfg, study.classifier(), study.i3d_net(), shared, device,
                                     stop_check)
        with T.threads(cfg.timing_threads):
            rec["timing"] = T.autoencoder_timing(vae, real, cfg, device)
        log.finish("autoencoder", rec)
    return Path(path)
