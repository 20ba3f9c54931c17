"""Cascade benchmark: seconds per stage of a text-to-video sample at the paper's sizes, and the
memory of the final 512x896x17 decode (W.A.L.T §4 / SPEC §4; issue #6).

Stages (random weights: timing does not depend on them), each in a fresh process so its peak
memory is its own and the 3B base (6 GB in bf16) never shares RAM with the others:

    t2v-base-9x16  3.01B  latent (5, 16, 28),  p = 1   1 x 2240 tokens
    sr1            1.30B  latent (5, 32, 56),  p = 2   1 x 2240 tokens
    sr2            419M   latent (5, 64, 112), p = 4   1 x 2240 tokens

Each stage runs `--steps` real sampling steps (`walt.pipeline.generate` / `walt.cascade.sr.super_resolve`,
DDIM, text cross-attention on 77 random T5-XL-sized tokens, batch 1, no guidance) with weights in
bf16 (the 2-core CPU's fast matmul path); the per-step time is then EXTRAPOLATED to the paper's 50
DDIM steps (x2 more with classifier-free guidance, which doubles the batch) and labelled so.
The decode runs the ucf101-size autoencoder (base 128, multipliers 1,2,2,4, c = 8, fp32) on a
(1, 8, 5, 64, 112) latent -> 17x512x896, streamed 1 latent frame at a time, optionally in
spatial tiles, and reports the process's peak RSS (Linux ru_maxrss).

    python -m benchmarks.bench_cascade                     # all stages (1 step each) + the decode
    python -m benchmarks.bench_cascade --stages sr2 --steps 2 --no-decode
    python -m benchmarks.bench_cascade --decode-only --decode-frames 2 --tile 32

Prints a Markdown table and one JSON line (with the machine description).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from benchmarks._common import machine, peak_rss_mb, run_isolated

STAGES = ("t2v-base-9x16", "sr1", "sr2")
PAPER_STEPS = 50


def _random_bf16_walt(name: str):
    """The preset on the meta device, materialised in bf16 and filled with N(0, 0.02): no fp32 copy."""
    from walt.denoiser import WALT

    with torch.device("meta"):
        net = WALT.from_preset(name)
    net = net.to(torch.bfloat16).to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return net.eval().requires_grad_(False)


def run_stage(case: dict) -> dict:
    from walt.cascade.sr import super_resolve
    from walt.diffusion import DiffusionSchedule
    from walt.pipeline import generate

    torch.set_num_threads(case["threads"])
    t0 = time.perf_counter()
    net = _random_bf16_walt(case["stage"])
    build_s = time.perf_counter() - t0
    cfg = net.config
    sched = DiffusionSchedule()
    text = torch.randn(1, case["text_tokens"], cfg.text_dim)
    n_params = sum(p.numel() for p in net.parameters())
    t0 = time.perf_counter()
    if cfg.lowres_channels > 0:
        _, h, w = cfg.input_size
        z_lo = torch.randn(1, cfg.lowres_channels, cfg.input_size[0], h // 2, w // 2)
        z = super_resolve(net, sched, z_lo, steps=case["steps"], seeds=[0], text=text)
    else:
        z = generate(net, sched, (1, cfg.in_channels, *cfg.input_size), steps=case["steps"], seeds=[0], text=text)
    sec = time.perf_counter() - t0
    assert torch.isfinite(z.float()).all()
    per_step = sec / case["steps"]
    grid = cfg.token_grid
    return {"stage": case["stage"], "params": n_params, "latent": list(cfg.input_size), "patch": cfg.patch_size,
            "tokens": grid[0] * grid[1] * grid[2], "steps_run": case["steps"], "sec_per_step": per_step,
            "extrapolated_sec_50_steps": per_step * PAPER_STEPS, "extrapolated_sec_50_steps_cfg": 2 * per_step * PAPER_STEPS,
            "build_s": build_s, "peak_rss_mb": peak_rss_mb(), "dtype": "bfloat16", "threads": case["threads"]}


def run_decode(case: dict) -> dict:
    from walt.autoencoder import CausalVAE
    from walt.cascade.tiling import decode_video

    torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    vae = CausalVAE.from_preset("ucf101").eval().requires_grad_(False)
    rss_model = peak_rss_mb()
    t = case["latent_frames"]
    z = torch.randn(1, 8, t, 64, 112)
    t0 = time.perf_counter()
    with torch.no_grad():
        x = decode_video(vae, z, chunk_frames=1, tile=case["tile"])
    sec = time.perf_counter() - t0
    return {"op": "decode", "vae": "ucf101", "latent": [8, t, 64, 112], "video": list(x.shape[1:]), "tile": case["tile"],
            "chunk_frames": 1, "seconds": sec, "peak_rss_mb": peak_rss_mb(), "rss_after_model_mb": rss_model,
            "threads": case["threads"], "dtype": "float32"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated presets (default: the paper's cascade)")
    ap.add_argument("--steps", type=int, default=1, help="sampling steps actually run per stage (extrapolated to 50)")
    ap.add_argument("--text-tokens", type=int, default=77)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-decode", action="store_true", help="skip the 512x896 decode")
    ap.add_argument("--decode-only", action="store_true")
    ap.add_argument("--decode-frames", type=int, default=5, help="latent frames to decode (5 -> 17 frames)")
    ap.add_argument("--tile", type=int, default=None, help="spatial tile (latent px) for the decode; default whole frames")
    args = ap.parse_args()
    if args.case is not None:
        case = json.loads(args.case)
        print(json.dumps(run_decode(case) if case.get("op") == "decode" else run_stage(case)))
        return

    rows, dec = [], None
    if not args.decode_only:
        for name in [s for s in args.stages.split(",") if s]:
            print(f"bench_cascade: {name} ({args.steps} step(s)) ...", flush=True)
            rows.append(run_isolated("benchmarks.bench_cascade", {"stage": name, "steps": args.steps,
                                                                   "text_tokens": args.text_tokens,
                                                                   "threads": args.threads}, timeout=7200))
    if not args.no_decode:
        print(f"bench_cascade: decode {args.decode_frames} latent frames at 64x112 (tile {args.tile}) ...", flush=True)
        dec = run_isolated("benchmarks.bench_cascade", {"op": "decode", "latent_frames": args.decode_frames,
                                                         "tile": args.tile, "threads": args.threads}, timeout=14400)

    print(f"\nMachine: {machine()} -- shared with other jobs while measured: treat times as upper bounds.\n")
    if rows:
        print("| stage | params | latent (T,H,W) / p | tokens | steps run | s / step | 50 steps (extrapolated) | 50 steps + CFG (extrapolated) | peak RSS |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['stage']} | {r['params'] / 1e6:.0f}M | {tuple(r['latent'])} / {r['patch']} | {r['tokens']} | "
                  f"{r['steps_run']} | {r['sec_per_step']:.1f} | {r['extrapolated_sec_50_steps'] / 60:.1f} min | "
                  f"{r['extrapolated_sec_50_steps_cfg'] / 60:.1f} min | {r['peak_rss_mb'] / 1024:.1f} GB |")
        total = sum(r["extrapolated_sec_50_steps"] for r in rows)
        print(f"\nSum over stages, 50 DDIM steps each (extrapolated from {args.steps} step(s), bf16 weights, "
              f"batch 1, no guidance): {total / 60:.1f} min.")
    if dec is not None:
        print(f"\nDecode (ucf101-size VAE, fp32, chunk_frames=1, tile={dec['tile']}): latent {tuple(dec['latent'])} -> "
              f"video {tuple(dec['video'])} in {dec['seconds']:.0f} s, peak RSS {dec['peak_rss_mb'] / 1024:.2f} GB "
              f"(model alone {dec['rss_after_model_mb'] / 1024:.2f} GB).")
    print(json.dumps({"machine": machine(), "shared_machine": True, "stages": rows, "decode": dec}))


if __name__ == "__main__":
    main()
