"""`walt bench`: measure everything on this device in one run -> OUT/bench.json + OUT/bench.md.

    walt bench                                  # CPU: --size cpu (reduced sizes; ~10 min on an idle 2-core CPU)
    walt bench --device cuda                    # GPU: --size paper (ucf101 VAE, W.A.L.T-L)
    walt bench --only ae,samplers --out outputs/bench_ae

Sections: ae (autoencoder encode/decode frames/s, peak memory, streaming decode memory), denoiser (training tokens/s,
window vs full attention, MFU), samplers (seconds per clip for ddim / dpmpp / ddpm at several step
counts), peers (diffusers' AutoencoderKLCogVideoX and LatteTransformer3DModel at matched sizes, as
ratios; needs `pip install 'walt[peers]'`). FLOP utilisation is against the matmul peak measured
at the start of the run. `scripts/benchmarks.sh` runs this and the cascade benchmark
(`python -m walt.bench.cascade_speed`) in one command and writes a fragment for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse

HELP = "benchmark the autoencoder, the transformer, the samplers and the diffusers peers on this device"


def add_args(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto: cuda if available)")
    # "tiny" is for the tests only: accepted, not advertised.
    p.add_argument("--size", default=None, metavar="{cpu,paper}",
                   help="workload sizes: cpu (reduced, default on CPU) or paper (ucf101 VAE + W.A.L.T-L, default on GPU)")
    p.add_argument("--only", default=None, metavar="LIST",
                   help="comma-separated sections to run, from ae,denoiser,samplers,peers,toy (default all; toy trains two "
                        "small denoisers, ~5 min on 2 CPU cores)")
    p.add_argument("--out", default="outputs/bench", help="output folder for bench.json and bench.md")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def parse_only(text: str | None) -> tuple[str, ...]:
    """'ae,peers' -> ('ae', 'peers') in the canonical order (UserError on an unknown item)."""
    from walt.bench import SECTIONS
    from walt.errors import UserError

    if text is None:
        return SECTIONS
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in SECTIONS]
    if bad or not items:
        what = f"unknown section {bad[0]!r}" if bad else "is empty"
        raise UserError(f"--only {what}; choose a comma-separated subset of {','.join(SECTIONS)}")
    return tuple(x for x in SECTIONS if x in items)


def run(args: argparse.Namespace) -> int:
    import json

    from walt.bench import SIZE_NAMES
    from walt.commands import args as A, files as F
    from walt.errors import UserError

    # ---- 1. flags ----
    only = parse_only(args.only)
    if args.size is not None and args.size not in SIZE_NAMES:
        raise UserError(f"--size {args.size!r} is not a size; use cpu or paper")
    if args.threads is not None:
        A.positive_int(args.threads, "--threads")
    device = F.pick_device(args.device)
    size_name = args.size or ("paper" if device.type == "cuda" else "cpu")
    from walt.bench import suite
    from walt.bench.suite_markdown import markdown

    if "peers" in only and args.only is not None and not suite.peers_available():
        raise UserError("--only peers needs diffusers: pip install 'walt[peers]' (or leave peers out of --only)")
    # ---- 2. output folder, last ----
    out = F.check_out_not_file(args.out)
    existed = out.is_dir()
    F.writable_dir(out)

    import torch

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)  # restored below: `walt.cli.main` may run inside a test process
    size = suite.SIZES[size_name]()
    print(f"walt bench: {size.name} size on {device} ({', '.join(only)}) -> {out}", flush=True)
    print(f"walt bench: {size.description}", flush=True)
    try:
        with F.cleanup_if_empty(out, existed):
            result = suite.run_suite(size, device, only, log=lambda m: print(f"walt bench: {m}", flush=True))
            (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
            (out / "bench.md").write_text(markdown(result))
    finally:
        torch.set_num_threads(threads)
    print(f"walt bench: done in {result['elapsed_s']:.0f} s; wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0
