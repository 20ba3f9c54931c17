"""Benchmarks inside the package, so `walt bench` works from an installed wheel.

    walt.bench.measure          timing, peak memory (CUDA allocator / CPU RSS), FLOP counting, the fastest dtype
    walt.bench.vae_speed        CausalVAE vs diffusers' AutoencoderKLCogVideoX, streaming (`python -m walt.bench.vae_speed`)
    walt.bench.denoiser_nets    the networks compared at matched sizes: W.A.L.T, its full twin, Latte
    walt.bench.denoiser_speed   window vs full attention, vs diffusers' Latte (`python -m walt.bench.denoiser_speed`)
    walt.bench.suite            all of the above in one run: `walt bench` -> bench.json
    walt.bench.suite_markdown   bench.md: the tables of a suite result
    walt.bench.toy              the latent motion toy: label -> motion, in minutes (`walt bench --only toy`)
    walt.bench.cascade_speed    seconds per cascade stage at the paper's sizes + the 512x896 decode
    walt.bench.benchmarks_md    the BENCHMARKS.md fragment of a `scripts/benchmarks.sh` run

Modules import torch; import them lazily from the CLI.
"""

SECTIONS = ("ae", "denoiser", "samplers", "peers", "toy")  # also walt.bench.suite.SECTIONS (kept torch-free here)
SIZE_NAMES = ("tiny", "cpu", "paper")
