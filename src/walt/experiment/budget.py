"""Wall-clock budgets: training stages that end at a deadline, or get the steps that fit a time.

A training stage first runs `calibration_steps` steps (all inside the LR warmup, so timing them
changes nothing about the run), reads their per-step time from the trainer's log, and sets its
total step count to end at its deadline, with a floor of `min_steps`. It then trains in segments
of at most a minute, re-measuring the pace after each (other processes may speed up or slow down
the machine) and stretching or shortening the cosine tail.

Work that has to happen *between* training segments (the FVD evaluations of the denoiser at
fractions of its run, `walt.demo.fvd_curve`) is planned here too: segments end exactly at those steps,
the caller's hook runs there, and the time still owed to the evaluations to come (`reserve`) is
kept free before the deadline, so the stage as a whole still ends on time.

The studies give every row the same minutes this way too (rows stay comparable however fast
their models are). The other way to spend a budget: time a few steps, then train a fixed number
of them (`steps_in`), for a run that must know its length before it starts.
"""

from __future__ import annotations

import csv
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["clock", "read_log", "seconds_per_step", "steps_in", "steps_until", "checkpoint_steps", "train_to_deadline"]


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def read_log(path: Path) -> list[dict[str, float]]:
    """A trainer's log.csv as a list of float rows (empty cells dropped)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def seconds_per_step(rows: list[dict[str, float]], batch: int, key: str) -> float:
    """Median seconds per step of the logged steps after the first (which pays one-time costs)."""
    per = []
    for r in rows[1:] if len(rows) > 1 else rows:
        if key == "clips_per_s" and r.get("clips_per_s"):
            per.append(batch / r["clips_per_s"])
        elif key == "sec_per_step" and r.get("sec_per_step"):
            per.append(r["sec_per_step"])
    if not per:
        raise RuntimeError("the trainer logged no timing rows during calibration")
    return statistics.median(per)


def steps_in(seconds: float, sec_per_step: float, minimum: int = 1) -> int:
    """The steps that fit `seconds` at the measured pace (at least `minimum`)."""
    return max(minimum, int(seconds / max(sec_per_step, 1e-9)))


def steps_until(deadline: float, done: int, sec_per_step: float, minimum: int, margin: float = 0.03) -> int:
    """Total step count that ends by `deadline` given the measured pace (>= `minimum`, >= `done`)."""
    left = max(0.0, deadline - time.time()) * (1.0 - margin)
    return max(minimum, done, done + int(left / max(sec_per_step, 1e-6)))


def checkpoint_steps(fractions: Sequence[float], total: int, done: int) -> list[int]:
    """Steps at `fractions` of a `total`-step run that lie after `done` and before the end."""
    steps = sorted({max(1, round(f * total)) for f in fractions})
    return [s for s in steps if done < s < total]


def train_to_deadline(train_until: Callable[[int, int | None], int], pace: Callable[[int], float], deadline: float,
                      calibration_steps: int, min_steps: int, name: str, max_segment: float = 60.0,
                      checkpoints: Sequence[float] = (), on_checkpoint: Callable[[int], None] | None = None,
                      reserve: Callable[[int], float] = lambda pending: 0.0,
                      say: Callable[[str], None] = print, check: Callable[[int], None] = lambda step: None,
                      start: int = 0) -> int:
    """Drive a resumable trainer so that it ends at `deadline`; returns the final step count.

    `train_until(total, stop_at)` trains (resuming) towards a run of `total` steps and returns
    the step it stopped at, `stop_at` (None: the end, exporting the weights); `pace(since)` is the
    measured seconds per step of the steps after `since`. The first `calibration_steps` lie inside
    the LR warmup, so the provisional total is irrelevant to them. Then the run goes on in segments
    of at most `max_segment` seconds (at the measured pace), re-measuring the pace and re-setting
    the total after each: a machine that gets busier or quieter moves the end of the cosine tail,
    not the deadline.

    `checkpoints`: fractions of the run (of the current plan) where a segment ends and
    `on_checkpoint(step)` is called (at most once per fraction, in order); `reserve(pending)` is
    the number of seconds to keep free before `deadline` when `pending` checkpoints are still to
    come (the caller's work after the run is included in it). Both are re-evaluated after every
    segment, so the time `on_checkpoint` really took is accounted for.

    `check(step)` runs after every training call with the step reached: it may report on the run,
    or raise to end the job (a stop signal arrived).
    `start` > 0 resumes a run that already did `start` steps: the pace comes from its log, and
    the calibration call is skipped once `start` covers it.
    """
    fractions = sorted(f for f in checkpoints if 0.0 < f < 1.0) if on_checkpoint is not None else []

    def plan(done: int, sec: float) -> int:
        return steps_until(deadline - reserve(len(fractions)), done, sec, min_steps)

    done = start if start >= calibration_steps else train_until(10**7, calibration_steps)
    check(done)
    sec = pace(0)
    total = plan(done, sec)
    say(f"  {name}: {sec:.3f} s/step measured -> {total} steps (until ~{clock(time.time() + (total - done) * sec)})")
    while True:
        # Checkpoints the calibration (or a faster pace) already passed are due now.
        while fractions and round(fractions[0] * total) <= done:
            fractions.pop(0)
            on_checkpoint(done)
        upcoming = checkpoint_steps(fractions[:1], total, done)
        if (total - done) * sec <= max_segment and not upcoming:
            break
        stop = done + max(1, min((total - done) // 2, int(max_segment / sec)))
        if upcoming:
            stop = min(stop, upcoming[0])
        if stop >= total:
            break
        before = done
        done = train_until(total, stop)
        check(done)
        sec = pace(before)
        if fractions and done >= round(fractions[0] * total):
            fractions.pop(0)
            on_checkpoint(done)
        new_total = plan(done, sec)
        if abs(new_total - total) > 0.05 * total:
            say(f"  {name}: now {sec:.3f} s/step at step {done} -> {new_total} steps")
        total = new_total
    done = train_until(total, None)
    check(done)
    return done
