"""Cascade benchmark: seconds per stage of a text-to-video sample at the paper's sizes, and the time
and memory of the final 512x896x17 decode (W.A.L.T §4 / SPEC §4).

Stages of the paper cascade (random weights: timing does not depend on them):

    t2v-base-9x16  3.01B  latent (5, 16, 28),  p = 1   1 x 2240 tokens   (t2v-base: 5x16x16, 1280 tokens)
    sr1            1.30B  latent (5, 32, 56),  p = 2   1 x 2240 tokens   -> 256x448
    sr2            419M   latent (5, 64, 112), p = 4   1 x 2240 tokens   -> 512x896
    decode         ucf101-size autoencoder, (8, 5, 64, 112) latent -> 17x512x896 pixels

What is measured, per stage (each in a fresh process on CPU, so its peak RSS is its own and the
3B base never shares RAM with the others):
  * the network in the faster matmul dtype of the device (`dtype="auto"`: bf16 on a GPU; on a CPU
    bf16 only where it beats fp32 -- on an AVX2-only CPU bf16 matmuls are ~10-100x slower, so
    fp32 there, 12 GB for the 3B base); weights are drawn N(0, 0.02) straight into that dtype
    from the meta device, so no second copy of the parameters is ever made;
  * `warmup` real sampler steps (`walt.pipeline.generate` / `walt.cascade.sr.super_resolve`,
    DDIM, batch 1, text cross-attention on `text_tokens` random T5-XL-sized tokens) under
    `FlopCounterMode`: the warm-up, and the FLOPs per step (counted, not estimated);
  * `steps` further timed sampler steps (a callback takes the time after each, after
    `torch.cuda.synchronize()` on a GPU): MEASURED seconds per step = their median;
  * the paper's 50 DDIM steps are NOT run on a CPU: "50 steps" is EXTRAPOLATED as measured
    seconds per step x 50, and the table says so next to the measured number. With
    `guidance != 1` the measured steps include classifier-free guidance (a doubled batch).
The decode streams 1 latent frame at a time through the causal cache and tiles space
(`walt.cascade.tiling.decode_video`, tiles of `tile` latent pixels, overlap 8, pad 2), in fp32;
it reports seconds and the peak RSS, against the 24 GB it may take (`DECODE_LIMIT_GB`). With fewer latent frames
than the stage's 5 (`decode_latent_frames`, at least 2), the 17-frame time is extrapolated
linearly in output frames and labelled so; the streamed peak is reached from the second chunk
on (every later chunk has the same shape), so the 17-frame peak is estimated as the measured
peak plus the growth of the two full-clip output buffers (the blended video and its division by
the weights), also labelled.

    python -m walt.bench.cascade_speed --size cpu              # paper stages, 1+2 steps each, 2 of 5 latent frames decoded
    python -m walt.bench.cascade_speed --stages sr2 --steps 3 --no-decode
    python -m walt.bench.cascade_speed --size smoke            # the -tiny twins: seconds, tests only

Writes OUT/cascade.json and OUT/cascade.md (the work per size and the CPU estimate:
docs/notes/bench_cascade.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import torch

from walt.bench.cascade_sizes import SIZES, CascadeSize
from walt.bench.measure import PeakMemory, count_flops, fastest_dtype, matmul_peak_gflops, run_isolated, sync
from walt.experiment.machine import machine, machine_info

MODULE = "walt.bench.cascade_speed"
PAPER_STEPS = 50  # DDIM steps of every paper result (SPEC §3)
DECODE_LIMIT_GB = 24.0  # the project's bound: a 512x896x17 decode must fit in 24 GB of CPU RAM


# --- one stage -------------------------------------------------------------------------------


def random_walt(name: str, device: torch.device, dtype: torch.dtype):
    """The preset built on the meta device, materialised in `dtype` on `device`, filled with N(0, 0.02)."""
    from walt.denoiser import WALT

    with torch.device("meta"):
        net = WALT.from_preset(name)
    buffers = [n for n, _ in net.named_buffers()]
    if buffers:  # to_empty would leave them uninitialised
        raise RuntimeError(f"random_walt cannot materialise buffers {buffers[:3]}; build the preset normally")
    net = net.to(dtype).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.02, generator=gen)
    return net.eval().requires_grad_(False)


def _sampler_call(net, case: dict, device: torch.device) -> Callable[..., torch.Tensor]:
    """`call(steps, callback=None)` -> latents: one full sampler run of the stage (random inputs)."""
    from walt.cascade.sr import super_resolve
    from walt.diffusion import DiffusionSchedule
    from walt.pipeline import generate

    cfg = net.config
    sched = DiffusionSchedule()
    g = torch.Generator(device="cpu").manual_seed(1)
    text = torch.randn(1, case["text_tokens"], cfg.text_dim, generator=g).to(device, next(net.parameters()).dtype)
    kw: dict[str, Any] = dict(text=text, guidance_scale=case["guidance"])
    if case["guidance"] != 1.0:
        kw["uncond_text"] = torch.zeros_like(text)
    if cfg.lowres_channels > 0:
        from walt.denoiser.transformer_config import CASCADE_STAGES

        scale = CASCADE_STAGES[case["stage"]].scale if case["stage"] in CASCADE_STAGES else 2
        t, h, w = cfg.input_size
        z_lo = torch.randn(1, cfg.lowres_channels, t, h // scale, w // scale, generator=g).to(device)
        return lambda steps, callback=None: super_resolve(net, sched, z_lo, steps=steps, seeds=[0], callback=callback, **kw)
    shape = (1, cfg.in_channels, *cfg.input_size)
    return lambda steps, callback=None: generate(net, sched, shape, steps=steps, seeds=[0], callback=callback, **kw)


def run_stage(case: dict) -> dict:
    """Warm-up steps (FLOP-counted), then timed steps of one cascade stage -> a JSON-able row."""
    device = torch.device(case["device"])
    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    dtype = torch.bfloat16 if case["dtype"] == "bf16" else torch.float32
    t0 = time.perf_counter()
    net = random_walt(case["stage"], device, dtype)
    build_s = time.perf_counter() - t0
    cfg = net.config
    call = _sampler_call(net, case, device)
    marks: list[float] = []

    def tick(_state) -> None:
        sync(device)
        marks.append(time.perf_counter())

    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        flops = count_flops(lambda: call(case["warmup"]))  # the warm-up, counted
        sync(device)
        warmup_s = time.perf_counter() - t0
        sync(device)
        start = time.perf_counter()
        z = call(case["steps"], callback=tick)
    if not torch.isfinite(z.float()).all():
        raise RuntimeError(f"stage {case['stage']} produced a non-finite sample")
    step_s = [b - a for a, b in zip([start] + marks[:-1], marks)]
    per_step = statistics.median(step_s)
    grid = cfg.token_grid
    flops_step = flops / case["warmup"]
    return {
        "stage": case["stage"], "params": sum(p.numel() for p in net.parameters()), "latent": list(cfg.input_size),
        "patch": cfg.patch_size, "tokens": grid[0] * grid[1] * grid[2], "dtype": case["dtype"],
        "guidance": case["guidance"], "text_tokens": case["text_tokens"], "build_s": build_s,
        "warmup_steps": case["warmup"], "warmup_s": warmup_s, "timed_steps": case["steps"], "step_s": step_s,
        "measured_s_per_step": per_step, "measured_s_total": sum(step_s),
        "extrapolated_s_50_steps": per_step * PAPER_STEPS, "gflop_per_step": flops_step / 1e9,
        "achieved_gflops": flops_step / per_step / 1e9,
        "peak_mb": mem.peak_mb, "peak_over_model_mb": mem.over_base_mb, "memory_method": mem.method,
        "threads": torch.get_num_threads(),
    }


# --- the decode ------------------------------------------------------------------------------


def decode_latent_shape(stage: str, latent_frames: int | None) -> tuple[int, int, int, int]:
    """(c, t, h, w) of the latent the last stage hands to the decoder."""
    from walt.denoiser.transformer_config import get_preset

    cfg = get_preset(stage)
    t, h, w = cfg.input_size
    return cfg.in_channels, latent_frames or t, h, w


def run_decode(case: dict) -> dict:
    """Streamed (1 latent frame per chunk) and tiled decode of the last stage's latent -> a row."""
    from walt.autoencoder import CausalVAE
    from walt.cascade.tiling import decode_video

    device = torch.device(case["device"])
    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    vae = CausalVAE.from_preset(case["vae"]).to(device).eval().requires_grad_(False)
    c, t, h, w = case["latent"]
    if c != vae.config.latent_channels:
        raise ValueError(f"the last stage makes {c}-channel latents but the {case['vae']!r} autoencoder has "
                         f"{vae.config.latent_channels}; pick a matching --vae")
    z = torch.randn(1, c, t, h, w, device=device)  # (B, c, t, h, w)
    f_t, f_s = vae.config.temporal_factor, vae.config.spatial_factor
    with torch.no_grad(), PeakMemory(device) as mem:
        sync(device)
        t0 = time.perf_counter()
        x = decode_video(vae, z, chunk_frames=1, tile=case["tile"], overlap=case["overlap"], pad=case["pad"])
        sync(device)
        sec = time.perf_counter() - t0
    frames = x.shape[2]
    full_frames = 1 + f_t * (case["full_latent_frames"] - 1)
    # Streaming: every chunk after the first has the same shape, so only the two full-clip output
    # buffers (blended sum, and its division by the weights) grow with the clip length.
    growth_mb = 2 * x.shape[1] * (full_frames - frames) * x.shape[3] * x.shape[4] * 4 / 2**20
    peak_full = mem.peak_mb + growth_mb
    return {
        "op": "decode", "vae": case["vae"], "params": sum(p.numel() for p in vae.parameters()),
        "latent": [c, t, h, w], "video": list(x.shape[1:]), "frames": frames, "full_frames": full_frames,
        "resolution": [h * f_s, w * f_s], "tile": case["tile"], "overlap": case["overlap"], "pad": case["pad"],
        "chunk_frames": 1, "dtype": "float32", "measured_s": sec, "s_per_frame": sec / frames,
        "s_full_clip": sec if frames == full_frames else sec / frames * full_frames,
        "s_full_clip_extrapolated": frames != full_frames,
        "peak_mb": mem.peak_mb, "peak_over_model_mb": mem.over_base_mb, "memory_method": mem.method,
        "peak_mb_full_clip": peak_full, "peak_full_clip_extrapolated": frames != full_frames,
        "limit_gb": DECODE_LIMIT_GB, "fits_limit": peak_full / 1024 <= DECODE_LIMIT_GB,
        "threads": torch.get_num_threads(),
    }


# --- the run ---------------------------------------------------------------------------------


def _guarded(row: dict, fn: Callable[[], dict]) -> dict:
    """One case; a failure (out of memory, a killed or timed-out child) becomes an `error` entry."""
    try:
        return fn()
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        lines = [l for l in str(e).strip().splitlines() if l.strip()]
        return {**row, "error": f"{type(e).__name__}: {lines[-1] if lines else ''}"[:300]}


def run(size: CascadeSize, device: torch.device, threads: int | None = None, log: Callable[[str], None] = print,
        timeout: float = 7200) -> dict:
    """Every stage of `size`, then the decode -> the JSON-able result (see `markdown`)."""
    isolated = size.isolated and device.type == "cpu"
    t_start = time.perf_counter()
    probe: dict[str, float] = {}
    if size.dtype == "auto":
        chosen, probe = fastest_dtype(device)
        size = dataclasses.replace(size, dtype=chosen)
        log(f"dtype auto -> {chosen} {probe or ''}")
    dtype = torch.bfloat16 if size.dtype == "bf16" else torch.float32
    peak = matmul_peak_gflops(device, dtype, n=size.peak_n)
    log(f"matmul peak ({size.dtype}): {peak:.4g} GFLOP/s")
    result: dict[str, Any] = {
        "machine": machine(), "machine_info": machine_info(device), "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": str(device), "size": dataclasses.asdict(size), "matmul_peak_gflops": peak, "dtype_probe_gflops": probe,
        "paper_steps": PAPER_STEPS, "isolated": isolated, "stages": [], "decode": None,
    }
    common = dict(device=str(device), threads=threads, warmup=size.warmup, steps=size.steps,
                  text_tokens=size.text_tokens, guidance=size.guidance, dtype=size.dtype)
    for stage in size.stages:
        log(f"{stage}: {size.warmup} warm-up + {size.steps} timed step(s) ...")
        case = {**common, "stage": stage}
        row = _guarded({"stage": stage}, lambda: run_isolated(MODULE, case, timeout=timeout) if isolated else run_stage(case))
        result["stages"].append(row)
        if "error" in row:
            log(f"{stage}: FAILED ({row['error']}); going on")
            continue
        row["utilisation"] = row["achieved_gflops"] / peak
        log(f"{stage}: {row['measured_s_per_step']:.3g} s/step measured -> {row['extrapolated_s_50_steps']:.4g} s "
            f"for {PAPER_STEPS} steps (extrapolated); {row['gflop_per_step']:.4g} GFLOP/step, "
            f"peak {row['peak_mb'] / 1024:.2f} GB")
    if size.decode:
        last = size.stages[-1] if size.stages else ("sr2" if size.vae == "ucf101" else "sr2-tiny")
        c, t, h, w = decode_latent_shape(last, size.decode_latent_frames)
        h, w = size.decode_latent_hw or (h, w)
        full_t = decode_latent_shape(last, None)[1]
        case = dict(device=str(device), threads=threads, vae=size.vae, latent=[c, t, h, w], full_latent_frames=full_t,
                    tile=size.tile, overlap=size.overlap, pad=size.pad, op="decode")
        log(f"decode: latent {c}x{t}x{h}x{w} with the {size.vae} autoencoder (tile {size.tile}) ...")
        row = _guarded({"op": "decode", "latent": [c, t, h, w]},
                       lambda: run_isolated(MODULE, case, timeout=timeout) if isolated else run_decode(case))
        result["decode"] = row
        log(f"decode: FAILED ({row['error']})" if "error" in row else
            f"decode: {row['frames']} frames in {row['measured_s']:.4g} s, peak {row['peak_mb'] / 1024:.2f} GB")
    result["load_average_end"] = machine_info(device)["load_average"]
    result["elapsed_s"] = time.perf_counter() - t_start
    return result


def markdown(r: dict) -> str:
    """cascade.md: the stages' table, the decode, the sums."""
    s = r["size"]
    L = [f"# Cascade benchmark ({s['name']} size, {r['device']})", "",
         f"Machine: {r['machine']}. {r['date']}, {r['elapsed_s']:.0f} s in all; load average at start "
         f"{r['machine_info']['load_average']}, at end {r['load_average_end']}.", "",
         f"Random weights in {s['dtype']}, batch 1, DDIM, {s['text_tokens']} random text tokens, guidance "
         f"{s['guidance']}{' (CFG: batch doubled)' if s['guidance'] != 1 else ' (none)'}; measured matmul peak "
         f"{r['matmul_peak_gflops']:.4g} GFLOP/s ({s['dtype']}).", ""]
    if r["stages"]:
        L += [f"Per stage: {s['warmup']} warm-up step(s) (FLOP-counted, untimed), then {s['steps']} timed step(s). "
              f"**s/step is measured** (median of the timed steps); **{r['paper_steps']} steps is extrapolated** "
              f"(measured s/step x {r['paper_steps']}), not run.", "",
              f"| stage | params | latent (T×H×W) / p | tokens | s/step (measured) | {r['paper_steps']} steps (extrapolated) "
              "| GFLOP/step | utilisation | peak memory |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
        for x in r["stages"]:
            if "error" in x:
                L.append(f"| {x['stage']} | {x['error']} | | | | | | | |")
                continue
            L.append(f"| {x['stage']} | {x['params'] / 1e6:,.4g}M | {'×'.join(map(str, x['latent']))} / {x['patch']} | "
                     f"{x['tokens']} | {x['measured_s_per_step']:.3g} | {x['extrapolated_s_50_steps']:,.0f} s "
                     f"({x['extrapolated_s_50_steps'] / 60:.1f} min) | {x['gflop_per_step']:,.0f} | "
                     f"{100 * x['utilisation']:.0f}% | {x['peak_mb'] / 1024:.2f} GB |")
        L.append("")
    d = r["decode"]
    if d is not None and "error" in d:
        L += [f"Decode of latent {'×'.join(map(str, d['latent']))}: {d['error']}", ""]
        d = None
    if d is not None:
        ext = d["s_full_clip_extrapolated"]
        extra = f" ({d['frames']} of {d['full_frames']} frames decoded)" if ext else ""
        tiling = f"tiles of {d['tile']} latent px, overlap {d['overlap']}, pad {d['pad']}" if d["tile"] else "whole frames"
        L += [f"Decode ({d['vae']} autoencoder, {d['params'] / 1e6:.4g}M params, fp32, streamed 1 latent frame per "
              f"chunk, {tiling}): latent {'×'.join(map(str, d['latent']))} -> {d['frames']}×{d['resolution'][0]}×"
              f"{d['resolution'][1]} in **{d['measured_s']:,.0f} s measured**{extra}, peak memory "
              f"**{d['peak_mb'] / 1024:.2f} GB measured** ({d['memory_method']}). Full {d['full_frames']}-frame clip: "
              f"{d['s_full_clip']:,.0f} s{' (extrapolated linearly in frames)' if ext else ''}, peak "
              f"{d['peak_mb_full_clip'] / 1024:.2f} GB{' (estimated: + the growth of the output buffers)' if ext else ''}, "
              f"{'within' if d['fits_limit'] else 'OVER'} the {d['limit_gb']:.0f} GB limit.", ""]
    ok = [x for x in r["stages"] if "error" not in x]
    if ok and len(ok) == len(r["stages"]):
        total = sum(x["extrapolated_s_50_steps"] for x in ok) + (d["s_full_clip"] if d else 0)
        L.append(f"Full cascade sample ({' -> '.join(x['stage'] for x in ok)}{' -> decode' if d else ''}), "
                 f"{r['paper_steps']} steps per stage: **{total:,.0f} s ({total / 3600:.2f} h), extrapolated** from the "
                 "measured steps above.")
    return "\n".join(L).rstrip() + "\n"


def main(argv: list[str] | None = None, prog: str = f"python -m {MODULE}") -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--size", choices=sorted(SIZES), default="cpu", help="preset of what to run (default cpu)")
    p.add_argument("--stages", help="comma-separated WALT presets, in cascade order (overrides the size's)")
    p.add_argument("--warmup", type=int, help="untimed warm-up steps per stage")
    p.add_argument("--steps", type=int, help="timed steps per stage (50 is extrapolated from them)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--text-tokens", type=int)
    p.add_argument("--no-decode", action="store_true", help="skip the final decode")
    p.add_argument("--decode-only", action="store_true", help="only the final decode")
    p.add_argument("--decode-latent-frames", type=int, help="latent frames to decode, >= 2 (default: the size's; 5 = all 17 frames)")
    p.add_argument("--tile", type=int, help="spatial tile of the decode in latent px (0: whole frames)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--timeout", type=float, default=7200, help="seconds per stage process")
    p.add_argument("--out", default="outputs/bench/cascade", help="folder for cascade.json and cascade.md")
    a = p.parse_args(argv)
    if a.case:  # child process of run_isolated
        case = json.loads(a.case)
        print(json.dumps(run_decode(case) if case.get("op") == "decode" else run_stage(case)))
        return
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda was asked for but no CUDA device is visible; use --device cpu")
    size = SIZES[a.size]()
    over: dict[str, Any] = {k: v for k, v in dict(warmup=a.warmup, steps=a.steps, guidance=a.guidance,
                                                   text_tokens=a.text_tokens,
                                                   decode_latent_frames=a.decode_latent_frames).items() if v is not None}
    if a.stages is not None:
        over["stages"] = tuple(x for x in a.stages.split(",") if x)
    if a.decode_only:
        over["stages"] = ()
    if a.no_decode:
        over["decode"] = False
    if a.tile is not None:
        over["tile"] = a.tile or None
    try:
        size = dataclasses.replace(size, **over)
        from walt.denoiser.transformer_config import get_preset

        for stage in size.stages:
            get_preset(stage)  # an unknown name fails here, before any work
    except ValueError as e:
        p.error(str(e))
    if a.threads:
        torch.set_num_threads(a.threads)
    result = run(size, torch.device(a.device), threads=a.threads, log=lambda m: print(f"bench cascade: {m}", flush=True),
                 timeout=a.timeout)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cascade.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "cascade.md").write_text(markdown(result))
    print()
    print(markdown(result))
    print(f"wrote {out / 'cascade.json'} and {out / 'cascade.md'}")


if __name__ == "__main__":
    main()
