"""Benchmarks inside the package, so `walt bench` works from an installed wheel (issue #5).

    walt.bench.common        timing, peak memory, FLOP counting, the measured matmul peak
    walt.bench.autoencoder   CausalVAE vs diffusers' AutoencoderKLCogVideoX (`python -m walt.bench.autoencoder`)
    walt.bench.denoiser      W.A.L.T window vs full attention, vs diffusers' Latte (`python -m walt.bench.denoiser`)
    walt.bench.suite         all of it in one run: `walt bench` -> bench.json + bench.md

Modules import torch; import them lazily from the CLI.
"""

SECTIONS = ("ae", "denoiser", "samplers", "peers")  # also walt.bench.suite.SECTIONS (kept torch-free here)
SIZE_NAMES = ("tiny", "cpu", "paper")
