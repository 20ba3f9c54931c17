"""Shared helpers of the benchmarks: timing, peak memory, FLOP counting, machine description.

These live in the installed package (not in `benchmarks/`) so that `walt bench` works from a wheel;
the scripts in `benchmarks/` are thin wrappers around `walt.bench`.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def machine() -> str:
    """A one-line description of where the numbers were measured."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()}-core CPU ({cpu}), {torch.get_num_threads()} threads, torch {torch.__version__}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], object], device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall seconds of `fn()` over `repeats` runs after `warmup` runs."""
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


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """The machine's measured dense matmul throughput (GFLOP/s), the denominator of FLOP utilisation."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    s = time_fn(lambda: a @ b, device, repeats=repeats, warmup=2)
    return 2 * n**3 / s / 1e9


_aten = torch.ops.aten
# FlopCounterMode knows the CUDA SDPA kernels but not the CPU flash kernel: count it the same way.
_CPU_SDPA_FLOPS = {
    _aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v),
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda g, q, k, v, *a, out_shape=None, **kw: sdpa_backward_flop_count(g, q, k, v)
    ),
}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (2 per multiply-add) of the matmuls, convolutions and attention that `fn()` runs.

    Elementwise ops, normalisations and the optimizer are not counted (the usual MFU convention).
    """
    with FlopCounterMode(display=False, custom_mapping=_CPU_SDPA_FLOPS) as counter:
        fn()
    return counter.get_total_flops()
