"""bench.md: the tables of a `walt bench` result (`walt.bench.suite.run_suite`), one per section.

`MARKDOWN` maps each section to (shown, table): whether the result holds it, and its lines.
"""

from __future__ import annotations

import math
from typing import Any, Callable


def _f(x: Any, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _md_ae(r: dict) -> list[str]:
    a = r["autoencoder"]
    dtype = a.get("dtype", "fp32")
    L = ["## Autoencoder", "", f"Memory: {a['memory']}. Peak MB is the whole process (Python, torch, the "
         "weights and, for CogVideoX, the diffusers import); over model MB is what the calls themselves add "
         "(the fair comparison). walt: the paper's MAGVIT-v2 layout (time compressed in the late levels); "
         "walt-early: time compressed in the first levels, as CogVideoX does. A clip marked cold is one timed "
         "call without a warm-up, its FLOPs counted on the meta device.", "",
         f"| model | params (M) | op | frames | frames/s | GFLOP/call | utilisation ({dtype}) | peak MB | over model MB |",
         "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for x in a["rows"]:
        cold = " (cold)" if x.get("cold") else ""
        L.append(f"| {x.get('name', x['model'])} | {x['params'] / 1e6:.3g} | {x['op']} | "
                 f"{x['frames']}×{x['size']}×{x['size']}{cold} | {x['frames_per_s']:.2f} | {x['gflop_per_call']:.3g} | "
                 f"{100 * x['utilisation']:.1f}% | {x['peak_mb']:.0f} | {x['peak_over_base_mb']:.0f} |")
    L.append("")
    st = a.get("streaming")
    if st:
        lo, sh = st["long"], st["short"]
        verdict = ("-" if st["ratio_over_baseline"] is None else
                   f"{st['ratio_over_baseline']:.2f} ({'within' if st['within_limit'] else 'OVER'} the {st['limit']}x limit)")
        L += [f"Streaming: decoding {lo['frames']}×{lo['size']}×{lo['size']} in chunks of 1 latent frame peaks at "
              f"{lo['peak_mb']:.0f} MB ({lo['peak_over_base_mb']:.0f} MB over the model, {lo['seconds']:.1f} s) vs a "
              f"whole-clip {sh['frames']}-frame decode at {sh['peak_mb']:.0f} MB ({sh['peak_over_base_mb']:.0f} MB over "
              f"the model, {sh['seconds']:.1f} s): ratio over the model {verdict}; total {st['ratio_total']:.2f}.", ""]
    return L


def _md_denoiser(r: dict) -> list[str]:
    from walt.bench.denoiser_speed import train_table

    d = r["denoiser"]
    return (["## W.A.L.T training (window vs full attention)", "",
             f"{d['dtype']}; forward + backward + AdamW step; MFU against the {d['dtype']} matmul peak.", ""]
            + train_table(d["train"], r["ratios"], batch_and_memory=True)
            + ["", "Paper (TPU, L): window 5×8×8 2.00 vs full 1.20 steps/s (ratio 1.67).", ""])


def _md_samplers(r: dict) -> list[str]:
    sm = r["samplers"]
    L = ["## Sampling", "",
         f"Class-conditional window W.A.L.T ({sm['params'] / 1e6:.3g}M parameters, {sm['dtype']}), latent "
         f"{'×'.join(map(str, sm['grid']))}, {sm['gflop_per_call']:.3g} GFLOP per network call.", "",
         "| sampler | steps | network calls | s/clip | s/step | utilisation | peak MB |",
         "|---|---:|---:|---:|---:|---:|---:|"]
    for x in sm["rows"]:
        L.append(f"| {x['sampler']} | {x['steps']} | {x.get('network_calls', '-')} | {x['s_per_clip']:.2f} | "
                 f"{x['s_per_step']:.3f} | {100 * x['utilisation']:.1f}% | {x['peak_mb']:.0f} |")
    fast = sm.get("fast_path")
    if fast:
        L += ["", f"Fast path: DPM-Solver++ at 20 steps makes {fast['calls_ddim50_over_dpmpp20']:.2f}x fewer network "
              f"calls than DDIM at 50 (the paper's sampler) and samples {fast['speed_dpmpp20_over_ddim50']:.2f}x faster "
              "per clip; whether its samples are as good is a quality question (class score, FVD), not measured here."]
    return L + [""]


def _md_peers(r: dict) -> list[str]:
    L = ["## Peers (walt / peer)", "", "| comparison | ratio |", "|---|---:|"]
    L += [f"| {k} | {v:.2f} |" for k, v in r["ratios"].items() if "cogvideox" in k or "latte" in k]
    L += ["", "Speed ratios > 1: walt faster; memory ratio > 1: walt uses more (memory_ratio: whole-process peaks, "
          "activation_memory_ratio: memory above the weights). `[layout]`: W.A.L.T text-conditioned (the paper's "
          "joint window + text cross-attention in the spatial layers); `[layout,class]`: W.A.L.T class-conditional "
          "(no text path). Latte always cross-attends to its caption (diffusers' model cannot run without one): "
          f"{r.get('latte', {}).get('text_tokens', '-')} random caption tokens in both comparisons; same width, "
          f"depth, heads and tokens, {r.get('latte', {}).get('dtype', '-')} on both sides.", ""]
    if "latte" in r:
        L += ["| layout | model | params (M) | GFLOP/fwd | fwd tokens/s | DDIM s/clip |", "|---|---|---:|---:|---:|---:|"]
        for x in r["latte"]["inference"]:
            if "error" in x:
                L.append(f"| {x['layout']} | {x['model']} | {x['error']} | | | |")
                continue
            L.append(f"| {x['layout']} | {x['model']} | {x['params'] / 1e6:.3g} | {x['gflop_per_forward']:.3g} | "
                     f"{x['forward_tokens_per_s']:.0f} | {x['s_per_clip']:.2f} ({x['sample_steps']} steps) |")
        L.append("")
    return L


# Which result key a section's table needs (the peers table shows whenever a peer was measured).
MARKDOWN: dict[str, tuple[Callable[[dict], bool], Callable[[dict], list[str]]]] = {
    "ae": (lambda r: "autoencoder" in r, _md_ae),
    "denoiser": (lambda r: "denoiser" in r, _md_denoiser),
    "samplers": (lambda r: "samplers" in r, _md_samplers),
    "peers": (lambda r: "latte" in r or any("cogvideox" in k for k in r["ratios"]), _md_peers),
    "toy": (lambda r: "toy" in r, lambda r: ["## Latent motion toy", "", *_toy_md(r["toy"]), ""]),
}


def _toy_md(t: dict) -> list[str]:
    from walt.bench.toy import markdown as toy_markdown

    return toy_markdown(t)


def markdown(r: dict) -> str:
    """bench.md: one table per section, with the machine, the sizes and the peaks on top."""
    peaks = ", ".join(f"{k} {v:.4g} GFLOP/s" for k, v in r["matmul_peak_gflops"].items())
    L = [f"# walt bench ({r['size']['name']} size, {r['device']})", "",
         f"Machine: {r['machine']}. {r['date']}, walt {r['walt_version']}, {r['elapsed_s']:.0f} s in all; load "
         f"average at start {r['machine_info']['load_average']}, at end {r['load_average_end']}.", "",
         f"Sizes: {r['size']['description']}.", "", f"Measured matmul peak: {peaks}.", "",
         f"dtype {r.get('dtype', '-')} for every section and both sides of each comparison: {r.get('dtype_reason', '-')}.",
         ""]
    if r.get("section_s"):
        L += ["Seconds per section: " + ", ".join(f"{k} {v:.0f}" for k, v in r["section_s"].items()) + ".", ""]
    for shown, table in MARKDOWN.values():
        if shown(r):
            L += table(r)
    L += [f"Note: {n}" for n in r["notes"]]
    return "\n".join(L).rstrip() + "\n"
