"""Which float precision a machine should train in, and the autocast context for it.

    precision = resolve_precision("fast", device)   # -> "bf16" or "fp32"
    with autocast_for(precision, device): loss = ...

bf16 autocast pays on a GPU and on CPUs with native bf16 (AVX-512 BF16 / AMX: matmuls ~2-3x
fp32); on an AVX2-only CPU bf16 matmuls run 10-100x *slower* than fp32. So "fast" measures: a
small matmul probe in both dtypes, bf16 only where it wins by 20% *and* the bf16 kernels the
models need (attention forward/backward, 3D convolution) run.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time

import torch

__all__ = ["PRECISIONS", "matmul_peak_gflops", "bf16_kernels_work", "fastest_dtype", "resolve_precision", "autocast_for"]

PRECISIONS = ("auto", "fp32", "bf16", "fast")  # auto: bf16 on CUDA, fp32 on CPU; fast: bf16 where it is faster


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak_gflops(device: torch.device | str, dtype: torch.dtype = torch.float32, n: int = 2048,
                       repeats: int = 5) -> float:
    """The machine's measured dense matmul throughput (GFLOP/s): 2 n^3 FLOPs, median of `repeats` after 2 warm-ups."""
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def bf16_kernels_work(device: torch.device | str) -> bool:
    """Whether the bf16 kernels the models need (attention forward/backward, 3D convolution) run here.

    Fast bf16 matmuls (oneDNN/AMX) do not imply working bf16 ATen kernels: with
    ATEN_CPU_CAPABILITY=avx2 on an AVX-512 CPU the fused CPU attention raises ("pack_vnni2 is only
    supported when avx512 is supported") while the matmul probe still favours bf16.
    """
    device = torch.device(device)
    try:
        q = torch.randn(1, 2, 64, 32, device=device, dtype=torch.bfloat16, requires_grad=True)
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()
        x = torch.randn(1, 4, 3, 8, 8, device=device, dtype=torch.bfloat16)
        torch.nn.functional.conv3d(x, torch.randn(4, 4, 3, 3, 3, device=device, dtype=torch.bfloat16))
    except RuntimeError:
        return False
    return True


def fastest_dtype(device: torch.device | str, n: int = 256) -> tuple[str, dict[str, float]]:
    """'bf16' or 'fp32', whichever dense matmul is faster here (bf16 must win by 20%), and the probe's GFLOP/s."""
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16", {}
    if not bf16_kernels_work(device):
        return "fp32", {"bf16_kernels": 0.0}
    probe = {name: matmul_peak_gflops(device, dt, n=n, repeats=3)
             for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    return ("bf16" if probe["bf16"] > 1.2 * probe["fp32"] else "fp32"), probe


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """"fp32" or "bf16" for a training config's `precision` on `device` (see PRECISIONS)."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fast":
        return _fastest(str(device))
    return precision


@functools.lru_cache(maxsize=None)
def _fastest(device: str) -> str:  # measured once per process and device
    return fastest_dtype(device)[0]


def autocast_for(precision: str, device: torch.device):
    """bf16 autocast for "bf16", and for "auto" on CUDA; fp32 (a null context) otherwise."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
