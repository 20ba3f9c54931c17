"""`walt bench`: every benchmark in one run on one device -> bench.json + bench.md.

Sections (`--only` picks a subset; each is a function in `SECTIONS` writing its part of the
result, and a function in `walt.bench.suite_markdown.MARKDOWN` writing its table):

  ae        CausalVAE encode / decode frames/s, peak memory, FLOP utilisation of both layouts (walt:
            MAGVIT-v2's late temporal compression, the paper's; walt-early: CogVideoX's early one) at
            each clip size; streaming: peak memory of a chunked 1+4N-frame decode vs a whole
            17-frame decode (limit 1.5x)
  denoiser  W.A.L.T training tokens/s and MFU, window attention vs its full-attention twin
            (same weights; paper §5.3: 5x8x8 windows 2.00 vs full 1.20 steps/s)
  samplers  seconds per clip and network calls of ddim / dpmpp at each step count and ddpm at its
            stated count, with the FLOP utilisation of the network calls; DPM-Solver++ 20 steps
            against DDIM 50 (the paper's) as the fast path
  peers     diffusers' AutoencoderKLCogVideoX and LatteTransformer3DModel at matched sizes, in the
            run's dtype on both sides, reported as walt/peer ratios (> 1: walt faster, or for
            memory: walt uses more); W.A.L.T both class-conditional and text-conditioned
  toy       the latent motion toy (`walt.bench.toy`): does the demo-size denoiser move a blob the way
            its label says (class-conditional samples, frame prediction, label influence)

FLOP utilisation = FLOPs counted by `torch.utils.flop_counter.FlopCounterMode` (matmuls,
convolutions, attention; elementwise ops, normalisations, the optimizer and the samplers' own
float64 updates are not counted) / seconds / the machine's measured dense matmul peak in the
same dtype (`matmul_peak_gflops`). Sizes are presets in `SIZES` (functions, one per name). The dtype
(`dtype auto`) is `walt.train.precision.fastest_dtype`'s, recorded with its probe and the reason.

A new section: a `_section_<name>(run)` that measures into `run.result` (timing each part with
`run.timed(label)`), a `_md_<name>(result)` for its table in `walt.bench.suite_markdown`, both
added to their tables, and the name added to `walt.bench.SECTIONS` (the torch-free list the command line checks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

import walt.bench
from walt.bench.measure import PeakMemory, count_flops, fastest_dtype, matmul_peak_gflops, sync
from walt.experiment.machine import load_average, machine, machine_info


@dataclass(frozen=True)
class SuiteSize:
    """The workload sizes of one `walt bench --size` (written into bench.json / bench.md)."""

    name: str
    description: str
    ae_preset: str = "ucf101"
    # (frames, size, cold) clips; cold: FLOPs counted on the meta device and one timed call, no warm-up
    ae_clips: tuple[tuple[int, int, bool], ...] = ((17, 128, False),)
    ae_repeats: int = 3
    ae_isolated: bool = True  # CPU: one process per case so peak RSS is the case's own
    ae_stream_size: int = 128  # streaming decode resolution (128x128)
    ae_long_latents: int = 64  # streaming decode of 1+4N frames (N = 64: 257 frames); 0 = skip
    # walt.bench.denoiser_speed.BenchSettings fields (width, depth, heads, batch, layouts, steps, ...)
    denoiser: dict[str, Any] = field(default_factory=dict)
    sampler_layout: str = "paper"
    sampler_batch: int = 1
    sampler_steps: tuple[int, ...] = (10, 20, 25, 50)  # ddim and dpmpp at each (dpmpp 20 vs ddim 50: the fast path)
    ddpm_steps: int = 1000  # ddpm's own default (classic DDPM)
    peak_n: int = 2048  # matrix size of the matmul-peak measurement
    toy_quick: bool = False  # the toy at smoke-test sizes (its numbers mean nothing)


def _tiny() -> SuiteSize:
    return SuiteSize(
        "tiny", "smoke-test sizes (tests only; numbers mean nothing)",
        ae_preset="tiny", ae_clips=((5, 16, False), (9, 16, True)), ae_repeats=1, ae_isolated=False, ae_stream_size=16,
        ae_long_latents=6,
        denoiser=dict(layouts=("tiny",), width=16, depth=2, heads=2, batch=1, steps=1, repeats=1, sample_steps=2,
                      text_tokens=2, text_dim=8, dtype="fp32", peak_n=128),
        sampler_layout="tiny", sampler_steps=(2, 4), ddpm_steps=4, peak_n=128, toy_quick=True,
    )


def _cpu() -> SuiteSize:
    return SuiteSize(
        "cpu", "reduced sizes for a small CPU: VAE ucf101 and ucf101-early presets at 5x64x64 (1 timed call after a "
        "warm-up) and 17x128x128 (1 cold timed call, FLOPs counted on the meta device); streaming decode of "
        "1+4*8 = 33 frames at 128x128 (not 257) vs a whole 17x128x128 decode; W.A.L.T width 256, depth 4, "
        "heads 4 (not the paper's L) at the paper latent layout 5x16x16 and the SR-like 5x32x56, batch 1, dtype auto "
        "(fp32 on an AVX2-only CPU, where bf16 matmuls are slower) for every section; samplers 10/20/25/50 steps, "
        "ddpm 25 steps (not its default 1000)",
        ae_clips=((5, 64, False), (17, 128, True)), ae_repeats=1, ae_long_latents=8,
        denoiser=dict(layouts=("paper", "sr"), width=256, depth=4, heads=4, batch=1, sr_batch=1, steps=3, repeats=3,
                      sample_steps=5, dtype="auto", peak_n=2048),
        sampler_steps=(10, 20, 25, 50), ddpm_steps=25, peak_n=2048,
    )


def _paper() -> SuiteSize:
    return SuiteSize(
        "paper", "paper sizes: VAE ucf101 and ucf101-early presets at 17x128x128, streaming decode of 1+4*64 = 257 "
        "frames at 128x128; "
        "W.A.L.T-L (width 1024, depth 24, heads 16) "
        "at the paper latent layout 5x16x16 (training batch 8) and the SR-like 5x32x56 (batch 1), dtype auto "
        "(bf16 autocast on a GPU); samplers 10/20/25/50 steps, ddpm 1000 steps (its default)",
        ae_repeats=5,
        denoiser=dict(layouts=("paper", "sr"), width=1024, depth=24, heads=16, batch=8, sr_batch=1, steps=20, repeats=10,
                      sample_steps=50, dtype="auto", peak_n=8192),
        peak_n=8192,
    )


SIZES: dict[str, Callable[[], SuiteSize]] = {"tiny": _tiny, "cpu": _cpu, "paper": _paper}


def _settings(size: SuiteSize, device: torch.device, latte: bool, train: bool):
    from walt.bench.denoiser_speed import BenchSettings

    return BenchSettings(device=str(device), latte=latte, train=train, **size.denoiser)


def _dtype(name: str) -> torch.dtype:
    return torch.bfloat16 if name == "bf16" else torch.float32


# --- sections -------------------------------------------------------------------------------


def bench_ae(size: SuiteSize, device: torch.device, peers: bool, peak: float, dtype: str, log,
             stream: bool = True) -> dict:
    """Encode / decode rows of both walt layouts (+ CogVideoX and the ratios with `peers`) at every clip
    of `size.ae_clips`, all in `dtype`, and, with `stream`, the streaming decode."""
    from walt.bench.vae_speed import WALT_LAYOUTS, speed, streaming

    isolated = size.ae_isolated and device.type == "cpu"
    models = list(WALT_LAYOUTS) + ([{"model": "cogvideox"}] if peers else [])
    res: dict[str, Any] = {"rows": [], "ratios": {}, "dtype": dtype}
    for frames, side, cold in size.ae_clips:
        common = dict(preset=size.ae_preset, size=side, frames=frames, device=str(device), repeats=size.ae_repeats,
                      dtype=dtype, cold=cold)
        part = speed(common, models, isolated, log=lambda m: log(f"ae  {m}"))
        res["rows"] += part["rows"]
        res["ratios"].update(part["ratios"])
    for r in res["rows"]:
        r["utilisation"] = r["achieved_gflops"] / peak
    if stream and size.ae_long_latents > 0:
        stream = dict(preset=size.ae_preset, size=size.ae_stream_size, device=str(device), repeats=1, dtype=dtype)
        res["streaming"] = streaming(stream, size.ae_long_latents, isolated, log=lambda m: log(f"ae  {m}"))
    res["memory"] = ("CUDA allocator peak" if device.type == "cuda" else
                     "peak RSS of a fresh process per case" if isolated else
                     res["rows"][0]["memory_method"] + ", in this process")
    return res


def bench_samplers(size: SuiteSize, device: torch.device, peak: float, log) -> dict:
    """Seconds per clip for each sampler and step count, one class-conditional window W.A.L.T."""
    from walt.bench.denoiser_nets import LAYOUTS, autocast, build_walt, n_params
    from walt.diffusion import DiffusionSchedule, make_generators, sample, seeded_noise

    s = _settings(size, device, latte=False, train=False)
    net = build_walt(s, size.sampler_layout).to(device).eval()
    b = size.sampler_batch
    t, h, w = LAYOUTS[size.sampler_layout]["input_size"]
    y = torch.zeros(b, dtype=torch.long, device=device) if net.config.num_classes else None

    calls = [0]

    def model_fn(x, tt, self_cond=None):
        calls[0] += 1
        with autocast(s):
            return net(x, tt, y=y, self_cond=self_cond).float()

    noise = seeded_noise((b, net.config.in_channels, t, h, w), list(range(b)), device=device)  # (B, C, T, H, W)
    schedule = DiffusionSchedule()
    tt = torch.full((b,), schedule.num_timesteps - 1, dtype=torch.long, device=device)
    with torch.no_grad():
        # One network call with a self-conditioning input, as at every step after the first.
        flops = count_flops(lambda: model_fn(noise, tt, self_cond=noise))  # also the warm-up
    runs = [(name, n) for name in ("ddim", "dpmpp") for n in size.sampler_steps] + [("ddpm", size.ddpm_steps)]
    rows = []
    for name, steps in runs:
        calls[0] = 0
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            out = sample(name, model_fn, noise, schedule, steps, generator=make_generators(list(range(b))))
            sync(device)
            sec = time.perf_counter() - t0
        if not torch.isfinite(out).all():
            raise RuntimeError(f"sampler {name} produced a non-finite sample")
        row = {"sampler": name, "steps": steps, "network_calls": calls[0], "batch": b, "seconds": sec, "s_per_clip": sec / b,
               "s_per_step": sec / steps, "gflop_per_clip": flops * steps / b / 1e9,
               "achieved_gflops": flops * steps / sec / 1e9, "utilisation": flops * steps / sec / 1e9 / peak,
               "peak_mb": mem.peak_mb, "peak_over_base_mb": mem.over_base_mb, "memory_method": mem.method}
        rows.append(row)
        log(f"samplers {name:5s} {steps:4d} steps  {row['s_per_clip']:8.2f} s/clip  "
            f"utilisation {100 * row['utilisation']:5.1f}%")
    by = {(r["sampler"], r["steps"]): r for r in rows}
    fast = None
    if ("ddim", 50) in by and ("dpmpp", 20) in by:  # the fast path: DPM-Solver++ 20 steps vs the paper's DDIM 50
        d, f = by["ddim", 50], by["dpmpp", 20]
        fast = {"calls_ddim50_over_dpmpp20": d["network_calls"] / f["network_calls"],
                "speed_dpmpp20_over_ddim50": d["s_per_clip"] / f["s_per_clip"]}
    return {"layout": size.sampler_layout, "grid": [t, h, w], "params": n_params(net),
            "gflop_per_call": flops / 1e9, "dtype": s.dtype, "rows": rows, "fast_path": fast}


def peers_available() -> bool:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return False
    return True


# --- the run --------------------------------------------------------------------------------


@dataclass
class _Run:
    """One `walt bench` run: what it measures with, what it has measured, how long each part took."""

    size: SuiteSize
    device: torch.device
    only: tuple[str, ...]
    log: Callable[[str], None]
    peaks: dict[str, float]
    result: dict[str, Any]
    peers: bool = False

    @contextlib.contextmanager
    def timed(self, label: str):
        t0 = time.perf_counter()
        yield
        self.result["section_s"][label] = time.perf_counter() - t0


def _section_ae(run: _Run) -> None:
    """CausalVAE encode / decode and the streaming decode; with peers also CogVideoX (same calls)."""
    dtype = run.size.denoiser["dtype"]
    with run.timed("ae"):
        run.result["autoencoder"] = bench_ae(run.size, run.device, run.peers, run.peaks[dtype], dtype, run.log)
        run.result["ratios"].update(run.result["autoencoder"]["ratios"])


def _section_denoiser(run: _Run) -> None:
    from walt.bench.denoiser_speed import run as run_denoiser

    dn = _settings(run.size, run.device, latte=False, train=True)
    with run.timed("denoiser"):
        res = run_denoiser(dn, log=lambda m: run.log(f"denoiser {m}"), peak_gflops=run.peaks[dn.dtype])
        run.result["denoiser"] = {"train": res["train"], "dtype": dn.dtype, "settings": res["settings"]}
        run.result["ratios"].update(res["ratios"])


def _section_samplers(run: _Run) -> None:
    dtype = run.size.denoiser["dtype"]
    with run.timed("samplers"):
        run.result["samplers"] = bench_samplers(run.size, run.device, run.peaks[dtype], run.log)


def _section_peers(run: _Run) -> None:
    """diffusers' CogVideoX (unless the ae section measured it) and Latte, as walt/peer ratios."""
    from walt.bench.denoiser_speed import run as run_denoiser

    if not run.peers:
        return
    if "ae" not in run.only:  # the ratio needs walt measured the same way
        with run.timed("peers (cogvideox)"):
            dtype = run.size.denoiser["dtype"]
            run.result["autoencoder"] = bench_ae(run.size, run.device, True, run.peaks[dtype], dtype, run.log,
                                                 stream=False)
            run.result["ratios"].update(run.result["autoencoder"]["ratios"])
    s = _settings(run.size, run.device, latte=True, train=False)
    with run.timed("peers (latte)"):
        res = run_denoiser(s, log=lambda m: run.log(f"peers {m}"), peak_gflops=run.peaks[s.dtype])
        run.result["latte"] = {"inference": res["inference"], "dtype": s.dtype, "sample_steps": s.sample_steps,
                               "text_tokens": s.text_tokens}
        run.result["ratios"].update(res["ratios"])


def _section_toy(run: _Run) -> None:
    from walt.bench.toy import ToySettings, quick, run_toy

    settings = quick(ToySettings()) if run.size.toy_quick else ToySettings()
    with run.timed("toy"):
        run.result["toy"] = run_toy(settings, run.device, log=run.log)


SECTIONS: dict[str, Callable[[_Run], None]] = {
    "ae": _section_ae, "denoiser": _section_denoiser, "samplers": _section_samplers, "peers": _section_peers,
    "toy": _section_toy,
}
assert tuple(SECTIONS) == walt.bench.SECTIONS, "walt.bench.SECTIONS must list the sections of SECTIONS, in order"


def dtype_reason(chosen: str, probe: dict[str, float], device: torch.device) -> str:
    """Why `fastest_dtype` chose `chosen`, in words (written into bench.json and bench.md)."""
    if device.type == "cuda":
        return "bf16 autocast on a GPU"
    if probe.get("bf16_kernels") == 0.0:
        return "fp32: the bf16 attention / 3D-convolution kernels do not run on this CPU"
    cmp = f"bf16 {probe['bf16']:.3g} vs fp32 {probe['fp32']:.3g} GFLOP/s in the n=256 matmul probe"
    return f"{chosen}: {cmp} (bf16 must win by 20%)"


def run_suite(size: SuiteSize, device: torch.device, only: tuple[str, ...] = walt.bench.SECTIONS,
              log: Callable[[str], None] = print) -> dict:
    """Run the chosen sections on `device` -> the JSON-able result (see `markdown`)."""
    from walt import __version__

    t_start = time.perf_counter()
    torch.manual_seed(0)
    probe: dict[str, float] = {}
    why = f"set by the size ({size.denoiser.get('dtype')})"
    if size.denoiser.get("dtype", "auto") == "auto":  # the faster matmul dtype of this device (see fastest_dtype)
        chosen, probe = fastest_dtype(device)
        size = dataclasses.replace(size, denoiser={**size.denoiser, "dtype": chosen})
        why = dtype_reason(chosen, probe, device)
        log(f"dtype auto -> {chosen}: {why}")
    dtypes = ["fp32"] + ([size.denoiser["dtype"]] if size.denoiser["dtype"] != "fp32" else [])
    peaks = {}
    for d in dtypes:
        peaks[d] = matmul_peak_gflops(device, _dtype(d), n=size.peak_n)
        log(f"peak  matmul {d} (n={size.peak_n}): {peaks[d]:.4g} GFLOP/s")
    result: dict[str, Any] = {
        "walt_version": __version__, "machine": machine(), "machine_info": machine_info(device),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": str(device), "size": dataclasses.asdict(size), "sections": list(only),
        "matmul_peak_gflops": peaks, "dtype": size.denoiser["dtype"], "dtype_reason": why, "dtype_probe_gflops": probe,
        "ratios": {}, "notes": [], "section_s": {},
        "flops": "counted with torch.utils.flop_counter.FlopCounterMode: matmuls, convolutions, attention "
                 "(incl. the CPU SDPA kernel); not counted: elementwise ops, normalisations, the optimizer, "
                 "the samplers' float64 updates. Utilisation is against the matmul peak in the workload's dtype.",
    }
    run = _Run(size, device, only, log, peaks, result, peers="peers" in only and peers_available())
    if "peers" in only and not run.peers:
        result["notes"].append("peers skipped: diffusers is not installed (pip install 'walt[peers]')")
        log("peers skipped: diffusers is not installed")
    for name, section in SECTIONS.items():
        if name in only:
            section(run)
    result["load_average_end"] = load_average()
    result["elapsed_s"] = time.perf_counter() - t_start
    return result


# --- the Markdown tables ---------------------------------------------------------------------
