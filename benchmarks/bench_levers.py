"""Paired, interleaved micro-benchmarks of the performance levers (docs/notes/performance_levers.md).

Every comparison times a baseline A and a candidate B in ONE process, alternating A B, B A, ...
for `--rounds` rounds, and prints the median seconds of each and the median (min..max) of the
per-round ratio B/A (< 1: B is faster). Pairing keeps a ratio meaningful when other work on the
machine changes its speed during the run; run it under `nice -n 19` on a shared machine.

    python -m benchmarks.bench_levers ae-format   --preset ucf101 --frames 5 --size 64
    python -m benchmarks.bench_levers ae-dtype    --preset ucf101 --frames 5 --size 64
    python -m benchmarks.bench_levers gn-silu     --channels 128 --frames 17 --size 128 --compile
    python -m benchmarks.bench_levers ae-peers    --frames 5 --size 64 --dtype auto
    python -m benchmarks.bench_levers dn-peers    --layout paper --dtype auto
    python -m benchmarks.bench_levers attention   --layout paper --dtype auto
    python -m benchmarks.bench_levers profile-ae  --op decode --frames 5 --size 64
    python -m benchmarks.bench_levers profile-dn  --layout paper --cond class
    python -m benchmarks.bench_levers time --what dn-class    # one workload; run from two checkouts to pair them

`--dtype auto` is `walt.train.precision.fastest_dtype` (bf16 autocast where this CPU runs it
natively, else fp32); emulate an AVX2-only CPU with `ATEN_CPU_CAPABILITY=avx2` and `--dtype fp32`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext
from typing import Callable

import torch
import torch.nn.functional as F

from walt.experiment.machine import machine


def _dtype(name: str, device: str = "cpu") -> str:
    if name != "auto":
        return name
    from walt.train.precision import fastest_dtype

    return fastest_dtype(device)[0]


def _autocast(dtype: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()


def paired(fns: dict[str, Callable[[], object]], rounds: int, calls: int = 1, warmup: int = 1) -> dict:
    """Median seconds per call of each fn and the median per-round ratio of each to the first.

    The order inside a round rotates, so no fn always runs first (after a cold cache) or last.
    """
    names = list(fns)
    with torch.no_grad():
        for n in names:
            for _ in range(warmup):
                fns[n]()
        times = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                t0 = time.perf_counter()
                for _ in range(calls):
                    fns[n]()
                times[n].append((time.perf_counter() - t0) / calls)
    base = names[0]
    out = {}
    for n in names:
        ratios = [b / a for a, b in zip(times[base], times[n])]
        out[n] = {"median_s": statistics.median(times[n]), "ratio": statistics.median(ratios),
                  "ratio_min": min(ratios), "ratio_max": max(ratios)}
    return out


def report(title: str, res: dict, dtype: str) -> None:
    cap = torch.backends.cpu.get_cpu_capability()
    print(f"\n## {title}\n{machine()}, ATen CPU capability {cap}, dtype {dtype}")
    base = next(iter(res))
    print(f"| variant | median s | ratio to {base} (median, min..max over rounds) |\n|---|---:|---:|")
    for n, r in res.items():
        print(f"| {n} | {r['median_s']:.4g} | {r['ratio']:.3f} ({r['ratio_min']:.3f}..{r['ratio_max']:.3f}) |")


# --- the autoencoder --------------------------------------------------------------------------


def _vae_inputs(preset: str, frames: int, size: int):
    from walt.autoencoder import CausalVAE

    torch.manual_seed(0)
    vae = CausalVAE.from_preset(preset).eval()
    c = vae.config
    x = torch.rand(1, 3, frames, size, size) * 2 - 1  # (B, 3, T, H, W)
    z = torch.randn(1, c.latent_channels, 1 + (frames - 1) // c.temporal_factor, size // c.spatial_factor,
                    size // c.spatial_factor)
    return vae, x, z


def ae_format(a) -> None:
    """Contiguous (NCDHW) vs channels-last 3D (NDHWC) weights and inputs, encode and decode."""
    dtype = _dtype(a.dtype)
    vae, x, z = _vae_inputs(a.preset, a.frames, a.size)
    cl = torch.channels_last_3d
    vae_cl, x_cl, z_cl = _vae_inputs(a.preset, a.frames, a.size)
    vae_cl.to(memory_format=cl)
    x_cl, z_cl = x_cl.contiguous(memory_format=cl), z_cl.contiguous(memory_format=cl)
    for op in ("encode", "decode"):
        def run(net, inp, op=op):
            with _autocast(dtype):
                return getattr(net, op)(inp)
        fa = (lambda: run(vae, x)) if op == "encode" else (lambda: run(vae, z))
        fb = (lambda: run(vae_cl, x_cl)) if op == "encode" else (lambda: run(vae_cl, z_cl))
        with torch.no_grad():
            diff = (fa().float() - fb().float()).abs().max().item()
        res = paired({"contiguous": fa, "channels_last_3d": fb}, a.rounds)
        report(f"{a.preset} {op} {a.frames}x{a.size}x{a.size}: memory format (max |A-B| {diff:.2e})", res, dtype)


def ae_dtype(a) -> None:
    """fp32 vs bf16 autocast, encode and decode (the same weights)."""
    vae, x, z = _vae_inputs(a.preset, a.frames, a.size)
    for op, inp in (("encode", x), ("decode", z)):
        def run(d, op=op, inp=inp):
            with _autocast(d):
                return getattr(vae, op)(inp)
        res = paired({"fp32": lambda: run("fp32"), "bf16": lambda: run("bf16")}, a.rounds)
        report(f"{a.preset} {op} {a.frames}x{a.size}x{a.size}: precision", res, "fp32 vs bf16 autocast")


def ae_peers(a) -> None:
    """walt (late, early) vs CogVideoX, each op interleaved in one process, the same dtype."""
    from walt.bench.vae_speed import build, calls

    dtype = _dtype(a.dtype)
    fns = {"encode": {}, "decode": {}}
    for model, preset in (("cogvideox", "ucf101"), ("walt", "ucf101"), ("walt-early", "ucf101-early")):
        torch.manual_seed(0)
        net, c = build(model.split("-")[0], preset, torch.device("cpu"))
        x = torch.rand(1, 3, a.frames, a.size, a.size) * 2 - 1
        z = torch.randn(1, c.latent_channels, 1 + (a.frames - 1) // c.temporal_factor, a.size // c.spatial_factor,
                        a.size // c.spatial_factor)
        enc, dec = calls(model.split("-")[0], net, x, z, None)
        for op, f in (("encode", enc), ("decode", dec)):
            def run(f=f):
                with _autocast(dtype):
                    return f()
            fns[op][model] = run
    for op in ("encode", "decode"):
        report(f"{op} {a.frames}x{a.size}x{a.size}, time ratio to CogVideoX (speed = 1 / ratio)",
               paired(fns[op], a.rounds), dtype)


def gn_silu(a) -> None:
    """Per-frame GroupNorm + SiLU of one activation: eager NCDHW, eager NDHWC, and torch.compile's fusion."""
    from walt.autoencoder.conv_blocks import frame_group_norm

    dtype = _dtype(a.dtype)
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    x = torch.randn(1, a.channels, a.frames, a.size, a.size).to(dt)  # (B, C, T, H, W)
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)

    def eager(t):
        return F.silu(frame_group_norm(t, 32))

    def eager_inplace(t):
        return F.silu(frame_group_norm(t, 32), inplace=True)

    fns = {"NCDHW": lambda: eager(x), "NCDHW, SiLU in place": lambda: eager_inplace(x),
           "NDHWC": lambda: eager(x_cl), "NDHWC, SiLU in place": lambda: eager_inplace(x_cl)}
    if a.compile:
        fused = torch.compile(eager, dynamic=False)
        for name, t in (("NCDHW", x), ("NDHWC", x_cl)):
            t0 = time.perf_counter()
            try:
                fused(t)
                print(f"torch.compile GroupNorm + SiLU ({name}) compiled in {time.perf_counter() - t0:.1f} s")
                fns[f"{name}, torch.compile (fused)"] = lambda t=t: fused(t)
            except Exception as e:  # noqa: BLE001 - report why it does not run here
                print(f"torch.compile does not run here: {type(e).__name__}: {str(e)[:300]}")
    report(f"GroupNorm(32 groups, per frame) + SiLU on {tuple(x.shape)}", paired(fns, a.rounds, a.calls), dtype)


def profile_ae(a) -> None:
    dtype = _dtype(a.dtype)
    vae, x, z = _vae_inputs(a.preset, a.frames, a.size)
    if a.channels_last:
        vae.to(memory_format=torch.channels_last_3d)
        x, z = x.contiguous(memory_format=torch.channels_last_3d), z.contiguous(memory_format=torch.channels_last_3d)
    fn = (lambda: vae.encode(x)) if a.op == "encode" else (lambda: vae.decode(z))
    _profile(fn, dtype, f"{a.preset} {a.op} {a.frames}x{a.size}x{a.size}")


def _profile(fn, dtype: str, title: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), _autocast(dtype):
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
    print(f"\n## profile: {title}\n{machine()}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"dtype {dtype}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


# --- the transformer --------------------------------------------------------------------------


def _dn_settings(a, dtype: str):
    from walt.bench.denoiser_nets import BenchSettings

    return BenchSettings(dtype=dtype, width=a.width, depth=a.depth, heads=a.heads, layouts=(a.layout,))


def _dn_fns(a, dtype: str) -> dict[str, Callable[[], object]]:
    """Forward closures: latte, walt class-conditional, walt text-conditioned (the bench's nets)."""
    from walt.bench.denoiser_nets import LAYOUTS, build_latte, build_walt, latte_model_fn, walt_model_fn

    s = _dn_settings(a, dtype)
    t, h, w = LAYOUTS[a.layout]["input_size"]
    torch.manual_seed(0)
    text = torch.randn(1, s.text_tokens, s.text_dim)
    x = torch.randn(1, 8, t, h, w)
    tt = torch.full((1,), 999, dtype=torch.long)
    latte = build_latte(s, a.layout).eval()
    walt_text = build_walt(s, a.layout, text=True).eval()
    walt_class = build_walt(s, a.layout).eval()
    y = torch.zeros(1, dtype=torch.long)

    def class_fn():
        with _autocast(dtype):
            return walt_class(x, tt, y=y)

    lf, wf = latte_model_fn(s, latte, text), walt_model_fn(s, walt_text, text)
    return {"latte": lambda: lf(x, tt), "walt-class": class_fn, "walt-text": lambda: wf(x, tt)}


def dn_peers(a) -> None:
    dtype = _dtype(a.dtype)
    fns = _dn_fns(a, dtype)
    report(f"forward at layout {a.layout}, width {a.width}, depth {a.depth}, heads {a.heads}: time ratio to Latte",
           paired(fns, a.rounds, calls=a.calls), dtype)


def profile_dn(a) -> None:
    dtype = _dtype(a.dtype)
    fn = _dn_fns(a, dtype)["latte" if a.cond == "latte" else f"walt-{a.cond}"]
    _profile(fn, dtype, f"{a.cond} forward at layout {a.layout}")


def attention(a) -> None:
    """One window-attention call: SDPA with the expanded bias (walt's) vs other layouts and FlexAttention."""
    from walt.bench.denoiser_nets import LAYOUTS

    dtype = _dtype(a.dtype)
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    heads, d = a.heads, a.width // a.heads
    grid = LAYOUTS[a.layout]["input_size"]
    for kind in ("spatial_window", "spatiotemporal_window"):
        win = LAYOUTS[a.layout][kind]
        n = win[0] * win[1] * win[2]
        nw = (grid[0] // win[0]) * (grid[1] // win[1]) * (grid[2] // win[2])
        torch.manual_seed(0)
        q, k, v = (torch.randn(nw, heads, n, d, dtype=dt) for _ in range(3))
        table = torch.randn(n * n, heads) * 0.02  # what RelativePositionBias gathers: (N*N, heads)
        permuted = table.view(n, n, heads).permute(2, 0, 1).to(dt)  # a (heads, N, N) view, stride heads
        bias = permuted.contiguous()
        fns = {
            "sdpa, permuted (h, N, N) view expanded": lambda: F.scaled_dot_product_attention(
                q, k, v, attn_mask=permuted.expand(nw, -1, -1, -1)),
            "sdpa, contiguous (h, N, N) expanded": lambda: F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias.expand(nw, -1, -1, -1)),
            "sdpa, contiguous (1, h, N, N)": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None]),
            "sdpa, no bias": lambda: F.scaled_dot_product_attention(q, k, v),
        }
        if a.flex:
            from torch.nn.attention.flex_attention import flex_attention

            flex = torch.compile(flex_attention, dynamic=False)

            def score_mod(score, b, h, qi, ki):
                return score + bias[h, qi, ki]

            t0 = time.perf_counter()
            try:
                flex(q, k, v, score_mod=score_mod)
                print(f"flex_attention compiled in {time.perf_counter() - t0:.1f} s")
                fns["flex_attention + score_mod (compiled)"] = lambda: flex(q, k, v, score_mod=score_mod)
            except Exception as e:  # noqa: BLE001 - report why it does not run here
                print(f"flex_attention does not compile here: {type(e).__name__}: {str(e)[:300]}")
        ref = fns["sdpa, permuted (h, N, N) view expanded"]().float()
        for name, f in fns.items():
            if "no bias" not in name:
                print(f"{name}: max |diff| to the first {(f().float() - ref).abs().max().item():.2e}")
        report(f"attention {kind} {win} x {nw} windows, heads {heads}, head dim {d}", paired(fns, a.rounds, a.calls),
               dtype)


def time_one(a) -> None:
    """Median seconds of one workload, for comparing two checkouts (PYTHONPATH=OTHER/src) paired from outside."""
    dtype = _dtype(a.dtype)
    if a.what.startswith("ae-"):
        vae, x, z = _vae_inputs(a.preset, a.frames, a.size)
        if a.channels_last:
            vae.to(memory_format=torch.channels_last_3d)

        def fn():
            with _autocast(dtype):
                return vae.encode(x) if a.what == "ae-encode" else vae.decode(z)
    else:
        fn = _dn_fns(a, dtype)[{"dn-class": "walt-class", "dn-text": "walt-text", "latte": "latte"}[a.what]]
    res = paired({a.what: fn}, a.rounds, a.calls)
    print(f"{a.what} {dtype} median {res[a.what]['median_s']:.4g} s ({machine()}, "
          f"{torch.backends.cpu.get_cpu_capability()})")


LEVERS = {"time": time_one, "gn-silu": gn_silu, "ae-format": ae_format, "ae-dtype": ae_dtype, "ae-peers": ae_peers, "profile-ae": profile_ae,
          "dn-peers": dn_peers, "profile-dn": profile_dn, "attention": attention}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_levers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("lever", choices=sorted(LEVERS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=1, help="calls per timing (short workloads)")
    p.add_argument("--dtype", default="fp32", choices=("auto", "fp32", "bf16"))
    p.add_argument("--threads", type=int)
    p.add_argument("--preset", default="ucf101")
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--op", default="decode", choices=("encode", "decode"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--layout", default="paper")
    p.add_argument("--cond", default="class", choices=("class", "text", "latte"))
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--flex", action="store_true", help="attention: also FlexAttention (torch.compile)")
    p.add_argument("--compile", action="store_true", help="gn-silu: also torch.compile's fused kernel")
    p.add_argument("--channels", type=int, default=128, help="gn-silu: channels")
    p.add_argument("--what", default="dn-class", choices=("ae-encode", "ae-decode", "dn-class", "dn-text", "latte"),
                   help="time: the workload")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    LEVERS[a.lever](a)


if __name__ == "__main__":
    main()
