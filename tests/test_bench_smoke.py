"""Smoke tests of walt.bench.denoiser (`benchmarks/bench_denoiser.py` wraps it): the measuring code
runs and reports sane numbers.

Timings themselves are not checked (the CI machine is shared); only that every reported quantity
is finite and positive, that FLOPs are counted (including the CPU SDPA kernel FlopCounterMode does
not know), and that full attention costs more FLOPs than window attention.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from walt.bench.common import count_flops
from walt.bench.denoiser import (
    BenchSettings,
    bench_inference,
    build_walt,
    full_twin,
    markdown,
    run,
    walt_model_fn,
)

TINY = dict(layouts=("tiny",), width=16, depth=2, heads=2, batch=1, steps=1, repeats=1, sample_steps=2,
            text_tokens=2, text_dim=8, dtype="fp32", peak_n=128)


def _positive_finite(row: dict, keys: list[str]) -> None:
    for k in keys:
        assert isinstance(row[k], (int, float)) and math.isfinite(row[k]) and row[k] > 0, (k, row[k])


def test_train_rows_and_mfu():
    result = run(BenchSettings(**TINY, latte=False), log=lambda m: None)
    assert {"machine", "settings", "matmul_peak_gflops", "train", "inference", "ratios"} <= set(result)
    rows = {r["model"]: r for r in result["train"]}
    assert set(rows) == {"walt-window", "walt-full"}
    keys = ["steps_per_s", "tokens_per_s", "gflop_per_step", "achieved_gflops", "mfu", "params"]
    for r in rows.values():
        _positive_finite(r, keys)
    # Full attention over all 320 tokens costs more than 64- / 80-token windows.
    assert rows["walt-full"]["gflop_per_step"] > rows["walt-window"]["gflop_per_step"]
    assert rows["walt-full"]["params"] >= rows["walt-window"]["params"]  # only the bias tables differ
    _positive_finite(result["ratios"], ["train_window_over_full[tiny]"])
    table = markdown(result)
    assert "walt-window" in table and "walt-full" in table and "MFU" in table


def test_walt_inference_row():
    s = BenchSettings(**TINY)
    row = bench_inference(s, build_walt(s, "tiny", text=True), walt_model_fn, "tiny")
    _positive_finite(row, ["gflop_per_forward", "forward_s", "forward_tokens_per_s", "s_per_step", "s_per_clip"])


def test_full_twin_shares_weights():
    s = BenchSettings(**TINY)
    window = build_walt(s, "tiny")
    full, not_copied = full_twin(window)
    assert full.config.attention == "full"
    w, f = window.state_dict(), full.state_dict()
    assert not_copied == sum(1 for k in f if "rel_pos" in k)  # only the window-sized bias tables
    assert all(torch.equal(w[k], f[k]) for k in f if "rel_pos" not in k)


def test_count_flops_counts_cpu_sdpa():
    b, h, n, d = 1, 2, 16, 8
    q = torch.randn(b, h, n, d)
    # QK^T and attention @ V: 2 * (2 * n * n * d) per head.
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == 4 * b * h * n * n * d
    qg = q.clone().requires_grad_()
    fwd_bwd = count_flops(lambda: F.scaled_dot_product_attention(qg, qg, qg).sum().backward())
    assert fwd_bwd > 3 * 4 * b * h * n * n * d  # backward costs about 2.5x the forward


def test_settings_errors():
    with pytest.raises(ValueError, match="even"):
        BenchSettings(**{**TINY, "depth": 3})
    with pytest.raises(ValueError, match="layout"):
        BenchSettings(**{**TINY, "layouts": ("huge",)})


@pytest.mark.slow
def test_full_run_with_latte():
    result = run(BenchSettings(**TINY), log=lambda m: None)
    rows = {r["model"]: r for r in result["inference"]}
    assert set(rows) == {"walt-window+text", "latte"}
    for r in rows.values():
        _positive_finite(r, ["gflop_per_forward", "forward_tokens_per_s", "s_per_step", "s_per_clip"])
    # Latte's num_layers counts (spatial, temporal) pairs: depth 2 = 1 pair = as many blocks as W.A.L.T.
    _positive_finite(result["ratios"], ["forward_walt_over_latte[tiny]", "sampling_walt_over_latte[tiny]"])
