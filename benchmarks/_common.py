"""Shared helpers for the benchmark scripts (thin wrapper: the code lives in `walt.bench.common`)."""

from __future__ import annotations

import os

from walt.bench.common import (  # noqa: F401  (re-exported for the scripts in this folder)
    count_flops,
    machine,
    matmul_peak_gflops,
    peak_rss_mb,
    sync,
    time_fn,
)
from walt.bench.common import run_isolated as _run_isolated

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_isolated(module: str, case: dict, timeout: float = 3600) -> dict:
    """`walt.bench.common.run_isolated` run from the repository root, so `benchmarks.*` modules import."""
    return _run_isolated(module, case, timeout=timeout, cwd=REPO_ROOT)
