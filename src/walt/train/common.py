"""What the two training loops share (autoencoder `walt.train.vae`, denoiser `walt.train.denoiser_loop`).

One loop design serves both networks: a restorable data position, warmup + cosine learning rate,
gradient clipping, an EMA of the weights, a hard stop on non-finite losses, metrics averaged over
a log window, and checkpoints that hold *everything* needed to continue bit-identically (weights,
EMA, optimiser and scheduler state, RNG states, data position), written atomically through
`walt.checkpoint` so an interrupted save never replaces the last good checkpoint.
"""

from __future__ import annotations

import copy
import math
import random
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from walt.checkpoint import TRAINING_STATE_KIND, load_checkpoint, save_checkpoint

# ----------------------------------------------------------------------------- EMA


class EMA:
    """Exponential moving average of a model's weights: shadow <- decay * shadow + (1 - decay) * param.

    The shadow is a frozen deep copy of the model (`ema.module`), usable directly for
    evaluation and sampling (as in DiT / EDM). Floating-point parameters and buffers are
    averaged; integer buffers (counters) are copied. SPEC Sec. 1: decay 0.999 for the autoencoder.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            shadow = ema_state[name]
            if shadow.dtype.is_floating_point:
                shadow.lerp_(value.detach().to(shadow.dtype), 1.0 - self.decay)
            else:
                shadow.copy_(value)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into `model` (e.g. before exporting or evaluating it)."""
        model.load_state_dict(self.module.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.module.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.module.load_state_dict(state["shadow"])


# ----------------------------------------------------------------------------- learning rate


def warmup_cosine_lr(step: int, peak_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine decay.

    Warmup: peak * (step + 1) / warmup for step < warmup (the first update already moves, the
    warmup-th reaches the peak). Cosine: from peak at `warmup_steps` to `min_lr` at
    `total_steps`, constant `min_lr` afterwards.
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if total_steps <= warmup_steps:
        return peak_lr
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR applying `warmup_cosine_lr` relative to each group's initial lr.

    Call `scheduler.step()` after every `optimizer.step()`. Its state (`last_epoch`) is plain
    JSON and goes into checkpoints; the lambda itself is rebuilt from the config.
    """

    def factor(step: int) -> float:
        return warmup_cosine_lr(step, 1.0, warmup_steps, total_steps, min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------- gradients / losses


@dataclass
class TrainResult:
    """What a training loop returns (`train_vae`, `train_denoiser`)."""

    step: int  # completed steps
    metrics: dict[str, float]  # the last logged row
    checkpoint: Path | None  # newest training-state checkpoint
    model_path: Path | None  # final raw weights (only when the run reached cfg.steps)
    ema_path: Path | None  # final EMA weights
    interrupted: bool = False  # stopped early by SIGTERM / SIGINT or `stop_at` (a checkpoint was written)


class NonFiniteLossError(RuntimeError):
    """A loss or gradient became NaN / inf; training stops without writing a checkpoint."""


def check_finite(loss: Tensor | float | Mapping[str, Tensor | float], step: int, what: str = "loss") -> None:
    """Raise `NonFiniteLossError` if `loss` (a scalar or a dict of named scalars) is NaN or inf."""
    items = loss.items() if isinstance(loss, Mapping) else [(what, loss)]
    for name, value in items:
        v = float(value.detach()) if isinstance(value, Tensor) else float(value)
        if not math.isfinite(v):
            raise NonFiniteLossError(
                f"non-finite {name} ({v}) at step {step}; stopped without saving, the last good checkpoint "
                "is kept. Lower the learning rate, enable grad_clip, or check the data for NaNs."
            )


# ----------------------------------------------------------------------------- RNG state


def capture_rng_state() -> dict[str, Any]:
    """All global RNG states (python, numpy, torch CPU, CUDA) as tensors / arrays / JSON."""
    version, internal, gauss_next = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": np.asarray(internal, dtype=np.int64), "gauss_next": gauss_next},
        "numpy": {"name": np_name, "keys": np.asarray(np_keys, dtype=np.int64), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of `capture_rng_state` (a missing CUDA entry is ignored, e.g. a CPU checkpoint on GPU)."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss_next"]))
    n = state["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), int(n["pos"]),
                         int(n["has_gauss"]), float(n["cached_gaussian"])))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ----------------------------------------------------------------------------- training state on disk

_CKPT_RE = re.compile(r"^step_(\d{8,})\.safetensors$")


def checkpoint_path(ckpt_dir: str | Path, step: int) -> Path:
    return Path(ckpt_dir) / f"step_{step:08d}.safetensors"


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete training-state checkpoint in `ckpt_dir`, oldest first.

    Temporary files of an interrupted save start with '.' and never match.
    """
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name))]
    return sorted(found)


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(ckpt_dir)
    return ckpts[-1][1] if ckpts else None


def save_training_state(path: str | Path, state: Mapping[str, Any], keep_last: int | None = None) -> Path:
    """Atomically save a training state (nested tensors / arrays / JSON) via `walt.checkpoint`.

    `state` should hold "step" and everything needed to resume. With `keep_last`, older
    `step_*.safetensors` files in the same folder beyond the newest `keep_last` are deleted
    *after* the new one is safely on disk.
    """
    path = Path(path)
    save_checkpoint(path, {"kind": TRAINING_STATE_KIND, **state})
    if keep_last is not None and keep_last > 0:
        for _, old in list_checkpoints(path.parent)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def load_training_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a state written by `save_training_state` (CheckpointError if missing or corrupt)."""
    state = load_checkpoint(path, map_location=map_location)
    if state.get("kind") != TRAINING_STATE_KIND:
        raise ValueError(f"{path} is not a walt training state (kind={state.get('kind')!r}); pass a step_*.safetensors file")
    return state


def resume_point(ckpt_dir: Path, resume: bool) -> tuple[dict[str, Any] | None, Path | None]:
    """(training state, its path) of the newest checkpoint in `ckpt_dir`, or (None, None) for a new run.

    With resume=False a folder that already holds checkpoints is refused: a second run must not
    silently overwrite (or continue) the first.
    """
    last = latest_checkpoint(ckpt_dir)
    if last is None:
        return None, None
    if not resume:
        raise ValueError(f"{ckpt_dir} already holds checkpoints; pass resume=True or choose an empty out_dir")
    return load_training_state(last), last


def check_parallel(parallel: str, world: int, is_main: bool, offered: str = "'ddp' (or 'fsdp')") -> None:
    """Several processes must train one synchronised model; a single process trains unwrapped."""
    if parallel == "none" and world > 1:
        raise ValueError(f"parallel='none' with {world} processes would train unsynchronised copies; "
                         f"set parallel={offered}, or launch a single process")
    if parallel != "none" and world == 1 and is_main:
        print(f"note: parallel={parallel!r} in a single process: training unwrapped (launch with torchrun)")


class LogWindow:
    """Means of every logged number over the steps since the last log row, and the throughput.

    `add(logs, clips=B, tokens=N)` once per step; `row(step, epoch)` every `log_every` steps gives
    the means plus `<count>_per_s` for each count, `sec_per_step`, and starts a new window.
    """

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.totals: dict[str, float] = defaultdict(float)
        self.steps, self.t0 = 0, time.perf_counter()

    def add(self, logs: Mapping[str, float], **counts: float) -> None:
        for k, v in logs.items():
            self.sums[k] += v
            self.counts[k] += 1
        for k, v in counts.items():
            self.totals[k] += v
        self.steps += 1

    def row(self, step: int, epoch: int | None) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        row = {k: self.sums[k] / self.counts[k] for k in self.sums}
        row.update({f"{k}_per_s": v / elapsed for k, v in self.totals.items()})
        row.update(step=step, epoch=epoch, sec_per_step=elapsed / self.steps)
        self._reset()
        return row


def run_steps(run, cfg, stop_at: int | None, logger, progress: bool, desc: str,
              postfix: Callable[[dict[str, float]], dict[str, str]]) -> tuple[int, dict[str, float], Path | None]:
    """Drive a loop's `run` from `run.start` to `cfg.steps` (or `stop_at`) -> (steps done, last row, checkpoint).

    The cadence both loops share: a log row every `cfg.log_every` steps (window means), a
    checkpoint every `cfg.ckpt_every` steps, at the end, and when SIGTERM / SIGINT arrives (the
    current step finishes first, every rank stops at the same step) or `stop_at` is reached.
    `run` provides start, last_ckpt, epoch, step(step, stop_flag) -> (logs, stop_now, counts),
    save(step) -> path and after_step(step).
    """
    from tqdm.auto import tqdm

    from walt.train.distributed import GracefulStop, is_main

    end = cfg.steps if stop_at is None else min(cfg.steps, max(stop_at, run.start))
    completed, last_ckpt, row = run.start, run.last_ckpt, {}
    window = LogWindow()
    pbar = tqdm(total=cfg.steps, initial=run.start, disable=not (progress and is_main()), desc=desc, unit="step",
                dynamic_ncols=True)
    try:
        with GracefulStop() as stop:
            for step in range(run.start, end):
                logs, stop_now, counts = run.step(step, stop.flag)
                window.add(logs, **counts)
                done = step + 1
                if done % cfg.log_every == 0 or done == cfg.steps:
                    row = window.row(done, run.epoch)
                    if logger is not None:
                        logger.write(row)
                    pbar.set_postfix(**postfix(row))
                interrupted = stop_now or (done == end and end < cfg.steps)
                if done % cfg.ckpt_every == 0 or done == cfg.steps or interrupted:
                    last_ckpt = run.save(done)
                run.after_step(done)
                pbar.update(1)
                completed = done
                if interrupted:
                    break
    except NonFiniteLossError as e:
        where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
        raise NonFiniteLossError(f"{e} ({where})") from None
    finally:
        pbar.close()
        if logger is not None:
            logger.close()
    return completed, row, last_ckpt
