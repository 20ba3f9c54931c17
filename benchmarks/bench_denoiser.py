"""Denoiser throughput: W.A.L.T window attention vs its full-attention twin vs diffusers' Latte.

Thin wrapper: the code (and the full description of what is measured) lives in
`walt.bench.denoiser`, so that `walt bench` works from an installed wheel.

    python -m benchmarks.bench_denoiser                        # CPU: reduced size, a few minutes
    python -m benchmarks.bench_denoiser --device cuda          # GPU: W.A.L.T-L size (1024/24/16)
"""

from __future__ import annotations

from walt.bench.denoiser import (  # noqa: F401  (re-exported: tests and notebooks import these names)
    LAYOUTS,
    PAPER_STEPS_PER_S,
    BenchSettings,
    bench_inference,
    bench_train,
    build_latte,
    build_walt,
    count_flops,
    default_settings,
    full_twin,
    latte_model_fn,
    main,
    markdown,
    run,
    walt_model_fn,
)

if __name__ == "__main__":
    main(prog="python -m benchmarks.bench_denoiser")
