"""Denoiser throughput: W.A.L.T window attention vs its full-attention twin vs diffusers' Latte.

Three measurements, one run, one device:

1. **Training step** (forward + backward + AdamW step through `walt.diffusion.diffusion_loss`,
   v-prediction MSE, class-conditional as in the paper's UCF-101 window ablation) of the window
   model and its `attention="full"` twin, which has the same config except `attention` and the
   same weights (every tensor whose shape matches is copied; only the relative-position tables,
   sized by the window, differ). Paper §5.3 / SPEC §5: 5x8x8 windows 2.00 vs full 1.20 steps/s.
   Reported: steps/s, tokens/s, ratio window/full, and the model FLOP utilisation (MFU):
   FLOPs of one step counted by `torch.utils.flop_counter.FlopCounterMode` (matmuls and
   attention, fwd + bwd; elementwise ops and the optimizer are not counted, the usual convention)
   x steps/s / the machine's measured dense matmul peak in the same dtype (`matmul_peak_gflops`).
2. **Forward** throughput of the window model vs diffusers' `LatteTransformer3DModel` at the same
   width, depth, heads and token count: W.A.L.T text-conditioned (`forward_walt_over_latte[paper]`)
   and class-conditional (`forward_walt_over_latte[paper,class]`); Latte always gets its caption.
3. **Sampling**: seconds per DDIM step and per clip (`walt.diffusion.sample_ddim`, the same
   sampler loop for both networks), ratio walt/latte.

The networks and how they are matched (layouts, Latte's arguments, what still differs) are in
`walt.bench.denoiser_nets`. Timing: the first call of each case runs under FlopCounterMode and
is the warm-up (one more untimed call on a GPU); medians of the timed calls; peak memory with
`walt.bench.measure.PeakMemory` (CUDA allocator peak, or the CPU peak RSS reset per case).

    python -m walt.bench.denoiser_speed                        # CPU: reduced size, minutes
    python -m walt.bench.denoiser_speed --device cuda          # GPU: W.A.L.T-L size (1024/24/16)
    python -m walt.bench.denoiser_speed --width 1024 --depth 24 --heads 16 --batch 8 --sr-batch 1

Defaults: on CUDA the paper's L size, batch 8 (paper layout) / 1 (sr), bf16 autocast, 20 timed
training steps, 50 DDIM steps; on CPU width 256, depth 4, heads 4, batch 1, 3 timed training
steps, 5 DDIM steps (the table says which was used); `--dtype auto` takes bf16 autocast only
where bf16 matmuls are faster than fp32 (not on an AVX2-only CPU, where they are ~10-100x slower).
The first step of each case runs under FlopCounterMode and doubles as the warm-up. On CPU most
of the time and memory (~12 GB peak RSS reported earlier) go to the sr full-attention twin (its
(heads, 8960, 8960) relative-bias tensors and indices); `--layouts paper` takes about a minute. On GPU, the sr full-attention twin at L size with the relative bias on is
estimated (not yet run) not to fit in 80 GB (24 layers x a 16 x 8960^2 bias); an OOM is reported as
"out of memory" and the run goes on. Add `--no-rel-pos-bias` to measure it (both twins then run
without the bias).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import time
from typing import Any, Callable

import torch

from walt.bench.denoiser_nets import (
    LAYOUTS,
    BenchSettings,
    autocast,
    build_latte,
    build_walt,
    default_settings,
    full_twin,
    latte_model_fn,
    n_params,
    walt_class_model_fn,
    walt_model_fn,
)
from walt.bench.measure import PeakMemory, count_flops, fastest_dtype, matmul_peak_gflops, sync, time_fn
from walt.experiment.machine import machine

PAPER_STEPS_PER_S = {"window_5x8x8": 2.00, "full": 1.20}  # W.A.L.T Table (window ablation), TPU


# --- measuring ------------------------------------------------------------------------------

def _cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _extra_warmup(device: torch.device) -> int:
    """Untimed runs after the FLOP-counted one: one more on GPU (cuBLAS / SDPA autotuning), none on CPU."""
    return 1 if device.type == "cuda" else 0


def _guard(row: dict, device: torch.device, fn: Callable[[], dict]) -> dict:
    """Run one case; a CUDA out-of-memory becomes an `error` entry instead of ending the run."""
    try:
        return {**row, **fn()}
    except torch.OutOfMemoryError:
        _cleanup(device)
        return {**row, "error": "out of memory"}


def bench_train(s: BenchSettings, net, layout: str, peak_gflops: float) -> dict:
    """Median seconds of forward + backward + AdamW step on random latents, plus FLOPs and MFU."""
    from walt.diffusion import DiffusionLossConfig, DiffusionSchedule, diffusion_loss

    device = torch.device(s.device)
    b = s.batch_for(layout)
    t, h, w = LAYOUTS[layout]["input_size"]
    net = net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=5e-4, fused=device.type == "cuda")  # paper: AdamW 5e-4
    schedule = DiffusionSchedule()
    # p_uncond = 0: label dropout only changes which embedding row is read, not the cost.
    loss_cfg = DiffusionLossConfig(p_self_cond=1.0 if s.self_cond else 0.0, p_uncond=0.0)
    x0 = torch.randn(b, net.config.in_channels, t, h, w, device=device)  # (B, C, T, H, W)
    y = torch.randint(0, max(net.config.num_classes, 1), (b,), device=device) if net.config.num_classes else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(s):
            loss, _ = diffusion_loss(net, x0, schedule, loss_cfg, y=y)
        loss.backward()
        opt.step()

    with PeakMemory(device) as mem:
        flops = count_flops(step)  # also the warm-up step (optimizer state, allocator, kernel choice)
        sec = time_fn(step, device, repeats=s.steps, warmup=_extra_warmup(device))
    tokens = b * t * h * w
    achieved = flops / sec / 1e9
    return {
        "batch": b, "tokens_per_step": tokens, "params": n_params(net), "seconds_per_step": sec,
        "steps_per_s": 1 / sec, "tokens_per_s": tokens / sec, "gflop_per_step": flops / 1e9,
        "achieved_gflops": achieved, "mfu": achieved / peak_gflops,
        "peak_mb": mem.peak_mb, "peak_over_base_mb": mem.over_base_mb, "memory_method": mem.method,
    }


def bench_inference(s: BenchSettings, net, model_fn_factory, layout: str) -> dict:
    """Forward throughput (median of `repeats`) and one DDIM sampling run of `sample_steps` steps."""
    from walt.diffusion import DiffusionSchedule, sample_ddim, seeded_noise

    device = torch.device(s.device)
    b = s.batch_for(layout)
    t, h, w = LAYOUTS[layout]["input_size"]
    net = net.to(device).eval()
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(b, s.text_tokens, s.text_dim, generator=gen).to(device)  # (B, L, text_dim)
    model_fn = model_fn_factory(s, net, text)
    x = seeded_noise((b, net.config.in_channels, t, h, w), [0] * b, device=device)  # (B, C, T, H, W)
    tt = torch.full((b,), 999, dtype=torch.long, device=device)
    tokens = b * t * h * w
    with torch.no_grad(), PeakMemory(device) as mem:
        flops = count_flops(lambda: model_fn(x, tt))  # also the warm-up pass
        fwd = time_fn(lambda: model_fn(x, tt), device, repeats=s.repeats, warmup=_extra_warmup(device))
        sync(device)
        t0 = time.perf_counter()
        sample = sample_ddim(model_fn, x, DiffusionSchedule(), steps=s.sample_steps)
        sync(device)
        sampling = time.perf_counter() - t0
    if not torch.isfinite(sample).all():
        raise RuntimeError(f"{type(net).__name__} produced a non-finite sample at layout {layout!r}")
    return {
        "batch": b, "tokens_per_forward": tokens, "params": n_params(net), "gflop_per_forward": flops / 1e9,
        "forward_s": fwd, "forward_tokens_per_s": tokens / fwd, "sample_steps": s.sample_steps,
        "s_per_step": sampling / s.sample_steps, "s_per_clip": sampling / b,
        "peak_mb": mem.peak_mb, "peak_over_base_mb": mem.over_base_mb, "memory_method": mem.method,
    }


# --- the run --------------------------------------------------------------------------------


def run(s: BenchSettings, log: Callable[[str], None] = print, peak_gflops: float | None = None) -> dict:
    """All measurements of one run -> a JSON-able dict (the CLI writes it; tests call it tiny).

    `peak_gflops`: the matmul peak in `s.dtype` if already measured (`walt bench` measures it once).
    """
    device = torch.device(s.device)
    dtype = torch.bfloat16 if s.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    if peak_gflops is None:
        peak = matmul_peak_gflops(device, dtype, n=s.peak_n)
        log(f"matmul peak ({s.dtype}, n={s.peak_n}): {peak:.0f} GFLOP/s")
    else:
        peak = peak_gflops
    result: dict[str, Any] = {
        "machine": machine(), "date": time.strftime("%Y-%m-%d"), "settings": dataclasses.asdict(s),
        "matmul_peak_gflops": peak, "train": [], "inference": [], "ratios": {},
    }
    for layout in s.layouts:
        base = {"layout": layout, "grid": LAYOUTS[layout]["input_size"]}
        if s.train:
            window = build_walt(s, layout, "window")
            full, not_copied = full_twin(window)
            rows = {}
            for name, net in (("walt-window", window), ("walt-full", full)):
                row = _guard({**base, "model": name}, device, lambda: bench_train(s, net, layout, peak))
                if name == "walt-full":
                    row["tensors_not_shared_with_window"] = not_copied
                rows[name] = row
                result["train"].append(row)
                log(_train_line(row))
            del window, full
            _cleanup(device)
            if all("error" not in r for r in rows.values()):
                ratio = rows["walt-window"]["steps_per_s"] / rows["walt-full"]["steps_per_s"]
                result["ratios"][f"train_window_over_full[{layout}]"] = ratio
        if s.latte:
            rows = {}
            for name, build, factory in (
                ("walt-window+text", lambda: build_walt(s, layout, "window", text=True), walt_model_fn),
                ("walt-window", lambda: build_walt(s, layout, "window"), walt_class_model_fn),
                ("latte", lambda: build_latte(s, layout), latte_model_fn),
            ):
                net = build()
                row = _guard({**base, "model": name}, device, lambda: bench_inference(s, net, factory, layout))
                rows[name] = row
                result["inference"].append(row)
                log(_inference_line(row))
                del net
                _cleanup(device)
            l = rows["latte"]
            for name, key in (("walt-window+text", layout), ("walt-window", f"{layout},class")):
                w = rows[name]
                if "error" not in w and "error" not in l:
                    result["ratios"][f"forward_walt_over_latte[{key}]"] = w["forward_tokens_per_s"] / l["forward_tokens_per_s"]
                    result["ratios"][f"sampling_walt_over_latte[{key}]"] = l["s_per_clip"] / w["s_per_clip"]
    return result


def _train_line(r: dict) -> str:
    if "error" in r:
        return f"train {r['layout']:6s} {r['model']:18s} {r['error']}"
    return (f"train {r['layout']:6s} {r['model']:18s} {r['steps_per_s']:7.3f} steps/s {r['tokens_per_s']:10.0f} tok/s "
            f"{r['gflop_per_step']:9.1f} GFLOP/step  MFU {100 * r['mfu']:5.1f}%")


def _inference_line(r: dict) -> str:
    if "error" in r:
        return f"infer {r['layout']:6s} {r['model']:18s} {r['error']}"
    return (f"infer {r['layout']:6s} {r['model']:18s} fwd {r['forward_tokens_per_s']:10.0f} tok/s "
            f"({r['gflop_per_forward']:.1f} GFLOP)  DDIM {r['s_per_step']:.3f} s/step {r['s_per_clip']:.2f} s/clip")


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def train_table(rows: list[dict], ratios: dict, batch_and_memory: bool = False) -> list[str]:
    """Markdown lines of the training table: one row per (layout, model), window/full on the full twin's row."""
    bm = batch_and_memory
    cols = ["layout (T×H×W)", "model"] + ["batch"] * bm + ["steps/s", "tokens/s", "GFLOP/step", "MFU", "window/full"]
    cols += ["peak MB"] * bm
    lines = ["| " + " | ".join(cols) + " |", "|---|---" + "|---:" * (len(cols) - 2) + "|"]
    for r in rows:
        where = f"{r['layout']} ({'×'.join(map(str, r['grid']))})"
        if "error" in r:
            lines.append(f"| {where} | {r['model']} | {r['error']} |" + " |" * (len(cols) - 3))
            continue
        ratio = ratios.get(f"train_window_over_full[{r['layout']}]") if r["model"] == "walt-full" else None
        cells = [str(r["batch"])] * bm + [f"{r['steps_per_s']:.3f}", f"{r['tokens_per_s']:.0f}",
                                          format(r["gflop_per_step"], ".3g" if bm else ".1f"), f"{100 * r['mfu']:.1f}%",
                                          _fmt(ratio, ".2f")] + [_fmt(r.get("peak_mb"), ".0f")] * bm
        lines.append("| " + " | ".join([where, r["model"], *cells]) + " |")
    return lines


def markdown(result: dict) -> str:
    """The tables for BENCHMARKS.md."""
    s = result["settings"]
    prec = "bf16 autocast" if s["dtype"] == "bf16" else "fp32"
    lines = [
        f"Machine: {result['machine']}. Width {s['width']}, depth {s['depth']}, heads {s['heads']}, {prec}, "
        f"batch {s['batch']} (sr: {s['sr_batch']}), relative bias {'on' if s['rel_pos_bias'] else 'off'}, "
        f"self-cond pass {'on' if s['self_cond'] else 'off'}; matmul peak {result['matmul_peak_gflops']:.0f} GFLOP/s.",
        "",
    ]
    if result["train"]:
        lines += train_table(result["train"], result["ratios"])
        paper = PAPER_STEPS_PER_S["window_5x8x8"] / PAPER_STEPS_PER_S["full"]
        lines += ["", f"Paper (TPU, L): window 5×8×8 2.00 vs full 1.20 steps/s, ratio {paper:.2f}.", ""]
    if result["inference"]:
        lines += [
            f"| layout | model | params (M) | GFLOP/fwd | fwd tokens/s | DDIM s/step | s/clip ({s['sample_steps']} steps) | walt/latte |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in result["inference"]:
            if "error" in r:
                lines.append(f"| {r['layout']} | {r['model']} | {r['error']} | | | | | |")
                continue
            ratio = ""
            key = {"walt-window+text": r["layout"], "walt-window": f"{r['layout']},class"}.get(r["model"])
            if key:
                f = result["ratios"].get(f"forward_walt_over_latte[{key}]")
                g = result["ratios"].get(f"sampling_walt_over_latte[{key}]")
                ratio = f"fwd {_fmt(f, '.2f')}, sampling {_fmt(g, '.2f')}"
            lines.append(
                f"| {r['layout']} | {r['model']} | {r['params'] / 1e6:.1f} | {r['gflop_per_forward']:.1f} | "
                f"{r['forward_tokens_per_s']:.0f} | {r['s_per_step']:.3f} | {r['s_per_clip']:.2f} | {ratio} |"
            )
        lines += ["", "walt/latte: throughput ratio (> 1: W.A.L.T faster), on the W.A.L.T row; walt-window is "
                  "class-conditional, walt-window+text and Latte get the same "
                  f"{s['text_tokens']} caption tokens."]
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "python -m walt.bench.denoiser_speed") -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast where bf16 matmuls are faster (GPU), else fp32 (see fastest_dtype)")
    p.add_argument("--width", type=int)
    p.add_argument("--depth", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--batch", type=int, help="clips per step at the paper layout")
    p.add_argument("--sr-batch", type=int, help="clips per step at the sr layout")
    p.add_argument("--layouts", default="paper,sr", help=f"comma-separated, from {sorted(LAYOUTS)}")
    p.add_argument("--steps", type=int, help="timed training steps")
    p.add_argument("--repeats", type=int, help="timed forward passes")
    p.add_argument("--sample-steps", type=int, help="DDIM steps per clip")
    p.add_argument("--text-tokens", type=int, default=16)
    p.add_argument("--text-dim", type=int, default=384)
    p.add_argument("--no-rel-pos-bias", action="store_true", help="W.A.L.T without relative position bias")
    p.add_argument("--self-cond", action="store_true", help="add the self-conditioning pass to every step")
    p.add_argument("--skip-latte", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="outputs/bench_denoiser.json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda was asked for but no CUDA device is visible; use --device cpu")
    chosen = {k: getattr(a, k) for k in ("width", "depth", "heads", "batch", "sr_batch", "steps", "repeats", "sample_steps")}
    defaults = default_settings(a.device)
    merged = {k: v if v is not None else defaults[k] for k, v in chosen.items()}
    dtype = fastest_dtype(a.device)[0] if a.dtype == "auto" else a.dtype
    try:
        s = BenchSettings(
            device=a.device, dtype=dtype, layouts=tuple(x for x in a.layouts.split(",") if x),
            text_tokens=a.text_tokens, text_dim=a.text_dim, rel_pos_bias=not a.no_rel_pos_bias,
            self_cond=a.self_cond, latte=not a.skip_latte, train=not a.skip_train,
            peak_n=defaults["peak_n"], **merged,
        )
    except ValueError as e:
        p.error(str(e))
    size = "W.A.L.T-L size" if (s.width, s.depth, s.heads) == (1024, 24, 16) else "reduced size (not the paper's L)"
    print(f"bench_denoiser on {a.device}: width {s.width}, depth {s.depth}, heads {s.heads} -- {size}", flush=True)
    result = run(s, log=lambda m: print(m, flush=True))
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print()
    print(markdown(result))
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
