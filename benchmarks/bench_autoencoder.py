"""Autoencoder throughput and memory: walt's CausalVAE vs diffusers' AutoencoderKLCogVideoX.

Thin wrapper: the code lives in `walt.bench.vae_speed` (so `walt bench` works from a wheel);
isolated CPU cases run as `python -m walt.bench.vae_speed --case ...` children.

    python -m benchmarks.bench_autoencoder                       # ucf101 preset, 17x128x128
    python -m benchmarks.bench_autoencoder --preset tiny --size 32 --long-latents 8   # quick check
"""

from __future__ import annotations

from walt.bench.vae_speed import main

if __name__ == "__main__":
    main(prog="python -m benchmarks.bench_autoencoder")
