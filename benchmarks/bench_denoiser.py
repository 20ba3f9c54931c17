"""Denoiser throughput: W.A.L.T window attention vs its full-attention twin vs diffusers' Latte.

Thin wrapper: the code (and the full description of what is measured) lives in
`walt.bench.denoiser_speed`, so that `walt bench` works from an installed wheel.

    python -m benchmarks.bench_denoiser                        # CPU: reduced size, a few minutes
    python -m benchmarks.bench_denoiser --device cuda          # GPU: W.A.L.T-L size (1024/24/16)
"""

from __future__ import annotations

from walt.bench.denoiser_speed import main

if __name__ == "__main__":
    main(prog="python -m benchmarks.bench_denoiser")
