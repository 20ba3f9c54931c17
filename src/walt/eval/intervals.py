"""95% intervals for every quality number, and when a difference between two of them is real.

A Fréchet distance, an accuracy or a mean PSNR from a few dozen clips moves between draws by
as much as the effects a small study looks for. Every number here therefore comes with a
percentile bootstrap interval over clips (Efron & Tibshirani 1993, ch. 13), and a difference
between two rows is called only when a *paired* bootstrap of it excludes zero:

    mean_interval(per_clip_psnr)                          -> {"value", "lo", "hi", "n"}
    fd_interval(real_feats, fake_feats)                   -> the same, resampling both sets
    paired_fd_difference(real, fake_a, fake_b)           -> interval of FD(a) - FD(b), one resample for both
    paired_mean_difference(x_a, x_b)                      -> interval of mean(x_a - x_b) (same clips / seeds)

Paired means the same resampled indices for both rows: the real reference clips are shared, and
sample i of both rows comes from the same seed, so their common noise cancels in the difference.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from walt.eval.fvd import frechet_distance

__all__ = ["mean_interval", "fd_interval", "paired_fd_difference", "paired_mean_difference", "established",
           "clips_for_relative_width", "REPS"]

REPS = 200  # bootstrap resamples: the 2.5 / 97.5 percentiles of 200 are stable to a few % of the width


def _interval(value: float, boot: np.ndarray, n, centred: bool = False) -> dict:
    lo, mid, hi = np.percentile(boot, [2.5, 50, 97.5])
    if centred:  # the bootstrap's spread around the estimate (see fd_interval)
        lo, hi = value - (mid - lo), value + (hi - mid)
    return {"value": float(value), "lo": float(lo), "hi": float(hi), "n": n}


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    """FD of two feature sets. With fewer clips than dimensions (I3D: 400-d features of ~100 clips)
    tr((S_a S_b)^1/2) is the nuclear norm of A B^T / sqrt((n_a - 1)(n_b - 1)) for the centred sets
    A, B: the same number from an n x n SVD instead of D x D eigendecompositions (~30x faster)."""
    if min(len(a), len(b)) >= a.shape[1]:
        return frechet_distance(*_stats(a), *_stats(b))
    ca, cb = a - a.mean(axis=0), b - b.mean(axis=0)
    na, nb = len(a) - 1, len(b) - 1
    tr_sqrt = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / math.sqrt(na * nb)
    diff = a.mean(axis=0) - b.mean(axis=0)
    return float(diff @ diff + (ca * ca).sum() / na + (cb * cb).sum() / nb - 2.0 * tr_sqrt)


def mean_interval(values, reps: int = REPS, seed: int = 0) -> dict:
    """The mean of per-clip `values` (N,) and its 95% bootstrap interval."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"need >= 2 per-clip values, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    boot = x[rng.integers(0, len(x), size=(reps, len(x)))].mean(axis=1)
    return _interval(x.mean(), boot, len(x))


def fd_interval(real, fake, reps: int = REPS, seed: int = 0) -> dict:
    """FD(real, fake) of two feature sets (N, F) / (M, F) and its 95% interval (both sets resampled).

    A resample repeats clips, which inflates a Fréchet distance (its finite-sample bias grows as
    the distinct clips shrink), so the percentiles are re-centred on the estimate: the interval
    is the bootstrap's spread. The bias itself is not in it: compare FDs at equal clip counts.
    """
    a, b = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boot = np.array([_fd(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))]) for _ in range(reps)])
    return _interval(_fd(a, b), boot, [len(a), len(b)], centred=True)


def paired_fd_difference(real, fake_a, fake_b, reps: int = REPS, seed: int = 0) -> dict:
    """FD(real, a) - FD(real, b) with its paired 95% interval; a and b hold the same seeds in the same order."""
    r, a, b = (np.asarray(x, dtype=np.float64) for x in (real, fake_a, fake_b))
    if len(a) != len(b):
        raise ValueError(f"paired sets need the same clip count, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(reps):
        ri, fi = rng.integers(0, len(r), len(r)), rng.integers(0, len(a), len(a))
        boot.append(_fd(r[ri], a[fi]) - _fd(r[ri], b[fi]))
    return _interval(_fd(r, a) - _fd(r, b), np.array(boot), [len(r), len(a)], centred=True)


def paired_mean_difference(x_a, x_b, reps: int = REPS, seed: int = 0) -> dict:
    """mean(x_a) - mean(x_b) of per-clip values on the same clips (or seeds), paired 95% interval."""
    a, b = np.asarray(x_a, dtype=np.float64), np.asarray(x_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same shape, got {a.shape} and {b.shape}")
    return mean_interval(a - b, reps, seed)


def established(diff: dict) -> bool:
    """A difference is called only when its 95% interval excludes zero."""
    return diff["lo"] > 0 or diff["hi"] < 0


def clips_for_relative_width(interval_at: Callable[[int], dict], counts, target: float = 0.10) -> dict:
    """The smallest of `counts` whose whole 95% interval (hi - lo) is <= `target` of the value.

    `interval_at(n)` -> an interval dict of the statistic measured with n clips (e.g. the
    real-vs-real floor). Returns {"counts", "intervals", "relative_width", "target", "chosen" (n or None)}.
    """
    intervals, rel, chosen = [], [], None
    for n in counts:
        iv = interval_at(n)
        r = (iv["hi"] - iv["lo"]) / iv["value"] if iv["value"] > 0 else math.inf
        intervals.append(iv)
        rel.append(r)
        if chosen is None and r <= target:
            chosen = n
    return {"counts": list(counts), "intervals": intervals, "relative_width": rel, "target": target, "chosen": chosen}
