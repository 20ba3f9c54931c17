"""Autoencoder throughput and memory: walt's CausalVAE vs diffusers' AutoencoderKLCogVideoX.

Both models are configured alike (for the ucf101 preset: widths 128/256/256/512, 4 residual
blocks per level, 8 latent channels, 8x spatial and 4x temporal compression) and measured in one
run on the same device. On CPU every case runs in its own process so its peak resident memory is
its own. FLOPs of one encode / decode (convolutions and matmuls) are counted with
`torch.utils.flop_counter.FlopCounterMode` on the warm-up call.

    python -m walt.bench.autoencoder                       # ucf101 preset, 17x128x128
    python -m walt.bench.autoencoder --preset tiny --size 32 --long-latents 8   # quick check

Also measures streaming: decoding 1+4*64 frames with `chunk_frames` must keep peak memory within
1.5x of a 17-frame decode (the cost of a long video must not grow with its length).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from walt.bench.common import count_flops, machine, peak_rss_mb, run_isolated, time_fn

MODULE = "walt.bench.autoencoder"


def build(model: str, preset: str, device: torch.device):
    """(network in eval mode on `device`, walt's CausalVAE config); model 'walt' or 'cogvideox'."""
    from walt.autoencoder import CausalVAE

    ours = CausalVAE.from_preset(preset)
    if model == "walt":
        return ours.to(device).eval(), ours.config
    from diffusers import AutoencoderKLCogVideoX

    c = ours.config
    widths = tuple(c.base_channels * m for m in c.channel_multipliers)
    cog = AutoencoderKLCogVideoX(
        block_out_channels=widths,
        down_block_types=("CogVideoXDownBlock3D",) * len(widths),
        up_block_types=("CogVideoXUpBlock3D",) * len(widths),
        layers_per_block=c.num_res_blocks,
        latent_channels=c.latent_channels,
        temporal_compression_ratio=c.temporal_factor,
        norm_num_groups=min(32, c.base_channels),
    )
    return cog.to(device).eval(), c


def run_case(case: dict) -> dict:
    """One measurement: encode or decode `frames` frames at `size` with model `model`.

    Returns the case plus seconds, frames/s, GFLOP per call, peak memory (CUDA: allocator peak;
    CPU: the process's peak RSS) and the peak over the memory in use before the first call.
    """
    torch.manual_seed(0)
    device = torch.device(case["device"])
    net, c = build(case["model"], case["preset"], device)
    T, S = case["frames"], case["size"]
    t_lat = (T - 1) // c.temporal_factor + 1
    s_lat = S // c.spatial_factor
    x = torch.rand(1, 3, T, S, S, device=device) * 2 - 1  # (B, 3, T, H, W)
    z = torch.randn(1, c.latent_channels, t_lat, s_lat, s_lat, device=device)  # (B, c, t, h, w)
    chunk = case.get("chunk_frames")
    with torch.no_grad():
        if case["model"] == "walt":
            enc = lambda: net.encode(x, chunk_frames=chunk)
            dec = lambda: net.decode(z, chunk_frames=chunk)
        else:
            enc = lambda: net.encode(x).latent_dist.mean
            dec = lambda: net.decode(z).sample
        fn = enc if case["op"] == "encode" else dec
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb()
        flops = count_flops(fn)  # also the warm-up call
        sec = time_fn(fn, device, repeats=case["repeats"], warmup=1 if device.type == "cuda" else 0)
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb()
    return {**case, "seconds": sec, "frames_per_s": T / sec, "gflop_per_call": flops / 1e9,
            "achieved_gflops": flops / sec / 1e9, "peak_mb": peak, "peak_over_base_mb": peak - base}


def measure(case: dict, isolated: bool) -> dict:
    return run_isolated(MODULE, case) if isolated else run_case(case)


def speed(common: dict, models: list[str], isolated: bool, log=print) -> dict:
    """Encode and decode rows for each model, plus walt/CogVideoX ratios when both ran."""
    rows = []
    for model in models:
        for op in ("encode", "decode"):
            r = measure({**common, "model": model, "op": op}, isolated)
            log(f"{model:10s} {op:6s} {r['frames_per_s']:8.2f} frames/s  {r['gflop_per_call']:8.3g} GFLOP  "
                f"peak {r['peak_mb']:8.0f} MB")
            rows.append(r)
    ratios = {}
    if "walt" in models and "cogvideox" in models:
        by = {(r["model"], r["op"]): r for r in rows}
        for op in ("encode", "decode"):
            ratios[f"{op}_speed_ratio_walt_over_cogvideox"] = by["walt", op]["frames_per_s"] / by["cogvideox", op]["frames_per_s"]
            ratios[f"{op}_memory_ratio_walt_over_cogvideox"] = by["walt", op]["peak_mb"] / by["cogvideox", op]["peak_mb"]
    return {"rows": rows, "ratios": ratios}


def streaming(common: dict, long_latents: int, isolated: bool, log=print) -> dict:
    """Peak memory of a 1+4*N-frame chunked decode vs a 17-frame decode (chunks of 1 latent frame)."""
    long_frames = 1 + 4 * long_latents
    short = measure({**common, "model": "walt", "op": "decode", "frames": 17, "repeats": 1, "chunk_frames": 1}, isolated)
    long = measure({**common, "model": "walt", "op": "decode", "frames": long_frames, "repeats": 1, "chunk_frames": 1}, isolated)
    ratio = long["peak_over_base_mb"] / max(short["peak_over_base_mb"], 1e-9)
    log(f"streaming decode {long_frames} frames: peak {long['peak_mb']:.0f} MB vs 17 frames {short['peak_mb']:.0f} MB "
        f"(over baseline: {long['peak_over_base_mb']:.0f} vs {short['peak_over_base_mb']:.0f} MB, ratio {ratio:.2f})")
    return {"short": short, "long": long, "ratio_over_baseline": ratio, "ratio_total": long["peak_mb"] / short["peak_mb"]}


def main(argv: list[str] | None = None, prog: str = f"python -m {MODULE}") -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="ucf101")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--long-latents", type=int, default=64, help="streaming test decodes 1+4*N frames")
    p.add_argument("--skip-peer", action="store_true", help="skip diffusers' CogVideoX")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="outputs/bench_autoencoder.json")
    p.add_argument("--only", choices=["speed", "streaming"], help="run one part only")
    p.add_argument("--case", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.case:  # child process of run_isolated
        print(json.dumps(run_case(json.loads(a.case))))
        return
    isolated = a.device == "cpu"
    common = dict(preset=a.preset, size=a.size, device=a.device, repeats=a.repeats)
    log = lambda m: print(m, flush=True)
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "rows": []}
    if a.only != "streaming":
        sp = speed({**common, "frames": a.frames}, ["walt"] + ([] if a.skip_peer else ["cogvideox"]), isolated, log)
        result["rows"] = sp["rows"]
        result.update(sp["ratios"])
    if a.only != "speed":
        result["streaming"] = streaming(common, a.long_latents, isolated, log)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"machine: {result['machine']}")
    print(json.dumps({k: v for k, v in result.items() if "ratio" in k}, indent=2))


if __name__ == "__main__":
    main()
