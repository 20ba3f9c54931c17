"""Autoencoder throughput and memory: walt's CausalVAE vs diffusers' AutoencoderKLCogVideoX.

Both models are configured alike (`cogvideox_kwargs`: for the ucf101 preset widths 128/256/256/512
per level, 4 residual blocks per level, 8 latent channels, 8x spatial and 4x temporal
compression) and measured in one run on the same device. Differences that remain: CogVideoX
compresses time in its EARLY levels (walt, like MAGVIT-v2, in the late ones), its middle blocks
have 2 residual blocks (walt: `num_res_blocks`), its decoder levels one more than its encoder's,
and it always processes a clip in batches of 8 frames (encode) / 2 latent frames (decode) with
its own conv cache, where walt runs the whole clip at once unless `chunk_frames` is given. The
rows state each model's parameter count.

Both of walt's layouts are measured: `ucf101` (MAGVIT-v2, time compressed late: the paper's) and
`ucf101-early` (time compressed in the first transitions, as CogVideoX does: about its FLOPs).
Both sides run in the same dtype (`dtype`: bf16 autocast with fp32 weights, or fp32).

Timing: the first call runs under `FlopCounterMode` (FLOPs of convolutions and matmuls, counted)
and is the warm-up; on a GPU one more untimed call follows; then the median of `repeats` calls.
A `cold` case (the large clips on a small CPU) counts its FLOPs on the meta device instead (the
same count, no arithmetic) and times one call without a warm-up, for either model alike.
Peak memory: `walt.bench.measure.PeakMemory` around the calls; on CPU every case runs in its own
process (`isolated`), so the peak RSS is the case's own.

    python -m walt.bench.vae_speed                       # ucf101 preset, 17x128x128
    python -m walt.bench.vae_speed --preset tiny --size 32 --long-latents 8   # quick check

Streaming: a chunked decode (1 latent frame per chunk) of 1+4*N frames must keep its peak memory
within 1.5x of a WHOLE-clip 17-frame decode (the cost of a long video must not grow with its
length); both are single calls in fresh processes, compared on the memory above the model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from walt.bench.measure import PeakMemory, count_flops, run_isolated, sync, time_fn
from walt.experiment.machine import machine, machine_info

MODULE = "walt.bench.vae_speed"
STREAMING_LIMIT = 1.5  # the project's bound: a long chunked decode within 1.5x of a 17-frame decode


def cogvideox_kwargs(c) -> dict:
    """`AutoencoderKLCogVideoX` arguments matching a `CausalVAEConfig` (same widths, depth, compression).

    The widths are the config's `level_channels` (the multipliers extended to as many levels as
    the compression needs), NOT `channel_multipliers`: CogVideoX halves H and W between every
    pair of levels, so its spatial factor is 2^(levels - 1) and must equal ours.
    """
    widths = tuple(c.level_channels)
    if 2 ** (len(widths) - 1) != c.spatial_factor:
        raise ValueError(
            f"CogVideoX downsamples space between every pair of levels (2^{len(widths) - 1} = "
            f"{2 ** (len(widths) - 1)}x for {len(widths)} levels) but this config has spatial_factor="
            f"{c.spatial_factor}; compare presets whose level count is log2(spatial_factor) + 1"
        )
    if c.temporal_factor > 2 ** (len(widths) - 1):
        raise ValueError(f"temporal_factor={c.temporal_factor} needs more than {len(widths)} levels in CogVideoX")
    return dict(
        block_out_channels=widths,
        down_block_types=("CogVideoXDownBlock3D",) * len(widths),
        up_block_types=("CogVideoXUpBlock3D",) * len(widths),
        layers_per_block=c.num_res_blocks,
        latent_channels=c.latent_channels,
        temporal_compression_ratio=c.temporal_factor,
        norm_num_groups=math.gcd(c.norm_groups, *widths),  # walt: gcd(norm_groups, width) per layer
    )


def build(model: str, preset: str, device: torch.device | str, overrides: dict | None = None):
    """(network in eval mode on `device`, walt's CausalVAE config); model 'walt' or 'cogvideox'.

    CogVideoX is configured from the preset's widths, depth and compression (`cogvideox_kwargs`);
    `overrides` change walt's config only (e.g. `temporal_downsampling="early"`).
    """
    from walt.autoencoder import CausalVAE

    ours = CausalVAE.from_preset(preset, **(overrides or {}))
    if model == "walt":
        return ours.to(device).eval(), ours.config
    if model != "cogvideox":
        raise ValueError(f"unknown autoencoder model {model!r}; use 'walt' or 'cogvideox'")
    from diffusers import AutoencoderKLCogVideoX

    cog = AutoencoderKLCogVideoX(**cogvideox_kwargs(ours.config))
    return cog.to(device).eval(), ours.config


def calls(model: str, net, x: torch.Tensor, z: torch.Tensor, chunk, dtype: str = "fp32"):
    """(encode, decode) closures returning tensors: walt's posterior mean / CogVideoX's latent_dist.mean,
    under bf16 autocast when `dtype` is "bf16" (weights stay fp32), for either model alike."""
    if model == "walt":
        enc, dec = (lambda: net.encode(x, chunk_frames=chunk)), (lambda: net.decode(z, chunk_frames=chunk))
    else:
        enc, dec = (lambda: net.encode(x).latent_dist.mean), (lambda: net.decode(z).sample)
    if dtype == "fp32":
        return enc, dec

    def cast(fn):
        def run():
            with torch.autocast(torch.device(x.device).type, dtype=torch.bfloat16):
                return fn()
        return run

    return cast(enc), cast(dec)


def _inputs(c, frames: int, size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A random clip (B, 3, T, H, W) in [-1, 1] and a random latent (B, c, t, h, w) of its size."""
    t_lat = (frames - 1) // c.temporal_factor + 1
    s_lat = size // c.spatial_factor
    x = torch.rand(1, 3, frames, size, size, device=device) * 2 - 1
    z = torch.randn(1, c.latent_channels, t_lat, s_lat, s_lat, device=device)
    return x, z


def _meta_flops(case: dict) -> int:
    """The case's FLOPs counted on the meta device: the same ops and shapes, no arithmetic."""
    with torch.device("meta"):
        net, c = build(case["model"], case["preset"], "meta", case.get("overrides"))
        x, z = _inputs(c, case["frames"], case["size"], "meta")
    enc, dec = calls(case["model"], net, x, z, case.get("chunk_frames"))
    with torch.no_grad():
        return count_flops(enc if case["op"] == "encode" else dec)


def run_case(case: dict) -> dict:
    """One measurement: encode or decode `frames` frames at `size` (square) with model `model`.

    case keys: model ('walt' | 'cogvideox'), name (the row's label, default the model), op, preset,
    optional overrides (walt's config), frames, size, device, repeats, dtype ('fp32' | 'bf16',
    default fp32), optional chunk_frames, `cold` (True: FLOPs counted on the meta device, one timed
    call without a warm-up) and `single` (True: one cold call, memory only, no FLOP count). Returns the
    case plus seconds, frames/s, GFLOP per call, peak memory (MiB) and the peak over the memory in
    use before the calls.
    """
    torch.manual_seed(0)
    device = torch.device(case["device"])
    net, c = build(case["model"], case["preset"], device, case.get("overrides"))
    T = case["frames"]
    x, z = _inputs(c, T, case["size"], device)  # (B, 3, T, H, W), (B, c, t, h, w)
    enc, dec = calls(case["model"], net, x, z, case.get("chunk_frames"), case.get("dtype", "fp32"))
    fn = enc if case["op"] == "encode" else dec
    flops = _meta_flops(case) if case.get("cold") else None
    with torch.no_grad(), PeakMemory(device) as mem:
        if case.get("single") or case.get("cold"):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            sec = time.perf_counter() - t0
        else:
            flops = count_flops(fn)  # also the warm-up call
            sec = time_fn(fn, device, repeats=case["repeats"], warmup=1 if device.type == "cuda" else 0)
    row = {"name": case["model"], "dtype": "fp32", **case, "params": sum(p.numel() for p in net.parameters()),
           "seconds": sec, "frames_per_s": T / sec, "peak_mb": mem.peak_mb, "base_mb": mem.base_mb,
           "peak_over_base_mb": mem.over_base_mb, "memory_method": mem.method}
    if flops is not None:
        row.update(gflop_per_call=flops / 1e9, achieved_gflops=flops / sec / 1e9)
    return row


def measure(case: dict, isolated: bool) -> dict:
    return run_isolated(MODULE, case) if isolated else run_case(case)


def speed(common: dict, models: list[dict], isolated: bool, log=print) -> dict:
    """Encode and decode rows for each model, plus each walt model's ratios to CogVideoX when it ran.

    `models`: case fields per row, e.g. {"model": "walt", "name": "walt-early", "preset": "ucf101-early"}.
    Ratio keys name the op, the row and the clip: `encode_speed_ratio_walt-early_over_cogvideox[17x128x128]`.
    """
    rows = []
    for m in models:
        for op in ("encode", "decode"):
            r = measure({**common, **m, "op": op}, isolated)
            log(f"{r['name']:10s} {op:6s} {r['frames']}x{r['size']}x{r['size']} {r['dtype']} "
                f"{r['frames_per_s']:8.2f} frames/s  {r['gflop_per_call']:8.3g} GFLOP  "
                f"peak {r['peak_mb']:8.0f} MB ({r['peak_over_base_mb']:.0f} MB over the model)")
            rows.append(r)
    by = {(r["name"], r["op"]): r for r in rows}
    ratios = {}
    clip = f"[{common['frames']}x{common['size']}x{common['size']}]"
    for name in [r["name"] for r in rows if r["model"] == "walt" and r["op"] == "encode"]:
        for op in ("encode", "decode"):
            if ("cogvideox", op) not in by:
                continue
            w, g = by[name, op], by["cogvideox", op]
            ratios[f"{op}_speed_ratio_{name}_over_cogvideox{clip}"] = w["frames_per_s"] / g["frames_per_s"]
            ratios[f"{op}_memory_ratio_{name}_over_cogvideox{clip}"] = w["peak_mb"] / g["peak_mb"]
            if g["peak_over_base_mb"] > 0:
                ratios[f"{op}_activation_memory_ratio_{name}_over_cogvideox{clip}"] = (
                    w["peak_over_base_mb"] / g["peak_over_base_mb"])
    return {"rows": rows, "ratios": ratios}


WALT_LAYOUTS = ({"model": "walt", "name": "walt"}, {"model": "walt", "name": "walt-early",
                                                    "overrides": {"temporal_downsampling": "early"}})


def streaming(common: dict, long_latents: int, isolated: bool, log=print) -> dict:
    """Peak memory of a chunked 1+4*N-frame decode (1 latent frame per chunk) vs a whole-clip 17-frame decode."""
    from walt.autoencoder.causal_vae_config import preset_config

    f_t = preset_config(common["preset"]).temporal_factor
    long_frames = 1 + f_t * long_latents
    base = {**common, "model": "walt", "op": "decode", "repeats": 1, "single": True}  # common may set dtype
    short = measure({**base, "frames": 1 + f_t * 4, "chunk_frames": None}, isolated)
    long = measure({**base, "frames": long_frames, "chunk_frames": 1}, isolated)
    ratio = long["peak_over_base_mb"] / short["peak_over_base_mb"] if short["peak_over_base_mb"] > 0 else None
    log(f"streaming decode {long_frames} frames (chunks of 1 latent frame): peak {long['peak_mb']:.0f} MB vs whole "
        f"{short['frames']}-frame decode {short['peak_mb']:.0f} MB (over the model: {long['peak_over_base_mb']:.0f} vs "
        f"{short['peak_over_base_mb']:.0f} MB, ratio {'-' if ratio is None else format(ratio, '.2f')}, "
        f"limit {STREAMING_LIMIT})")
    return {"short": short, "long": long, "long_latents": long_latents, "ratio_over_baseline": ratio,
            "ratio_total": long["peak_mb"] / short["peak_mb"], "limit": STREAMING_LIMIT,
            "within_limit": None if ratio is None else ratio <= STREAMING_LIMIT}


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
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="both models alike (bf16: autocast)")
    p.add_argument("--cold", action="store_true", help="FLOPs on the meta device, one timed call, no warm-up")
    p.add_argument("--case", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.case:  # child process of run_isolated
        print(json.dumps(run_case(json.loads(a.case))))
        return
    isolated = a.device == "cpu"
    common = dict(preset=a.preset, size=a.size, device=a.device, repeats=a.repeats)
    log = lambda m: print(m, flush=True)
    result = {"machine": machine(), "machine_info": machine_info(a.device), "date": time.strftime("%Y-%m-%d"),
              "rows": []}
    if a.only != "streaming":
        models = list(WALT_LAYOUTS) + ([] if a.skip_peer else [{"model": "cogvideox"}])
        sp = speed({**common, "frames": a.frames, "dtype": a.dtype, "cold": a.cold}, models, isolated, log)
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
