"""What the benchmarks measure with: timing, peak memory, FLOP counting, the fastest dtype.

These live in the installed package (not in `benchmarks/`) so that `walt bench` works from a wheel;
the scripts in `benchmarks/` are thin wrappers around `walt.bench`. The machine description is
`walt.experiment.machine`'s (every experiment states it the same way).

Conventions every benchmark follows:
  * timing: untimed warm-up call(s) first, then the median of timed calls, each ended by
    `torch.cuda.synchronize()` on a GPU (kernels are asynchronous; without it the clock stops
    when the launch returns, not when the work is done);
  * peak memory (`PeakMemory`): on a GPU the caching allocator's `max_memory_allocated` after
    `reset_peak_memory_stats`; on a Linux CPU the process's peak resident set size (VmHWM),
    reset at the start of the measured block through /proc/self/clear_refs (after returning
    freed heap pages with `malloc_trim`), so a block's peak is its own even inside one process.
    Where that reset is not available the peak is the process's peak so far (an upper bound,
    and said so); benchmarks that need exact CPU peaks run each case in a fresh process
    (`run_isolated`);
  * FLOPs (`count_flops`, from `walt.eval.flops`: the studies count with it too) are counted, never
    estimated: `torch.utils.flop_counter.FlopCounterMode` over one real call (matmuls, convolutions,
    attention; 2 FLOPs per multiply-add).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch

from walt.eval.flops import count_flops  # noqa: F401  (used by the sections)
from walt.train.precision import bf16_kernels_work, fastest_dtype, matmul_peak_gflops  # noqa: F401  (used by the sections)


# --- timing ----------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU, where every op is synchronous)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], object], device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall seconds of `fn()` over `repeats` runs after `warmup` untimed runs."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- peak memory -----------------------------------------------------------------------------


def _status_kb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Resident memory of this process now (MiB); the peak so far where /proc is missing."""
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB) since it started or since the last `reset_peak_rss`."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # macOS: bytes, Linux: KiB


def _malloc_trim() -> None:
    """Give freed heap pages back to the OS (glibc), so they stop counting as resident."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux >= 4.0); False where not possible."""
    gc.collect()
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of a `with` block -> `.peak_mb`, `.base_mb` (in use at entry), `.method`.

    CUDA: allocator peak (`max_memory_allocated`) after `reset_peak_memory_stats`. CPU: the
    process's peak RSS, reset at entry where the OS allows (see the module docstring); memory a
    previous block freed but the allocator kept may still count at entry (then the block's peak
    over `base_mb` is a lower bound and `peak_mb` an upper bound of what the block needs alone).
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.base_mb = self.peak_mb = 0.0
        self.method = ""

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            sync(self.device)
            gc.collect()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base_mb = torch.cuda.memory_allocated(self.device) / 2**20
            self.method = "CUDA allocator peak (max_memory_allocated)"
        else:
            reset = reset_peak_rss()
            self.base_mb = rss_mb()
            self.method = ("peak RSS since the block began (VmHWM reset via /proc/self/clear_refs)" if reset else
                           "peak RSS of the process so far (no reset available: an upper bound)")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.peak_mb = peak_rss_mb()

    @property
    def over_base_mb(self) -> float:
        return max(self.peak_mb - self.base_mb, 0.0)


def run_isolated(module: str, case: dict, timeout: float = 3600, cwd: str | None = None) -> dict:
    """Run one benchmark case in a fresh Python process (so CPU peak memory is its own).

    The child runs `python -m <module> --case '<json>'` (in `cwd`, default the current folder)
    and prints one JSON line last.
    """
    out = subprocess.run(
        [sys.executable, "-m", module, "--case", json.dumps(case)],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark case {case} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
