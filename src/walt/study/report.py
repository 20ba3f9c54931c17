"""Study outputs: results.csv (one row per design / variant), report.md, Pareto / bar plots (PNG).

A design is on the Pareto front when no other design is at least as good on both axes and
strictly better on one: e.g. no other design generates clips faster AND with a lower FVD. The
report states the protocol next to the numbers (FVD protocol name, hash and sample counts, the
training budget, the machine and its load), because FVD from a few dozen clips is only
comparable within one study.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any, Sequence

from walt.checkpoint import atomic_write


def pareto_front(xs: Sequence[float | None], ys: Sequence[float | None], maximize_x: bool = False,
                 maximize_y: bool = False) -> list[int]:
    """Indices of the non-dominated points, sorted by x (points with a missing value are skipped)."""
    pts = [(i, x if maximize_x else -x, y if maximize_y else -y) for i, (x, y) in enumerate(zip(xs, ys))
           if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    front = [i for i, a, b in pts
             if not any(a2 >= a and b2 >= b and (a2 > a or b2 > b) for _, a2, b2 in pts)]
    return sorted(front, key=lambda i: xs[i])


# ----------------------------------------------------------------------------- CSV


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


# ----------------------------------------------------------------------------- plots


def _scatter(ax, rows, xkey, ykey, xlabel, ylabel, maximize_x, maximize_y, logx=False) -> list[int]:
    xs = [r.get(xkey) for r in rows]
    ys = [r.get(ykey) for r in rows]
    front = pareto_front(xs, ys, maximize_x, maximize_y)
    for i, r in enumerate(rows):
        if xs[i] is None or ys[i] is None:
            continue
        on = i in front
        ax.scatter(xs[i], ys[i], s=40, c="tab:red" if on else "tab:blue", zorder=3, edgecolors="k", linewidths=0.5)
        # alternate above / below so neighbours with similar values stay readable
        ax.annotate(r["label"], (xs[i], ys[i]), fontsize=7, xytext=(4, 3 if i % 2 == 0 else -9),
                    textcoords="offset points")
    if len(front) > 1:
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", c="tab:red", lw=1, zorder=2,
                label="Pareto front")
        ax.legend(fontsize=7, loc="best")
    if logx:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    return front


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def plot_encoder(rows: list[dict[str, Any]], path: Path) -> dict[str, list[str]]:
    """Two panels: generation quality vs generated clips/s, reconstruction quality vs tokens per clip.

    FVD / rFVD when measured, else PSNR (higher is better). Returns the Pareto-front labels per panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_fvd = any(r.get("fvd") is not None for r in rows)
    has_rfvd = any(r.get("rfvd") is not None for r in rows)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    if has_fvd:
        f1 = _scatter(a, rows, "gen_clips_per_s", "fvd", "generated clips/s (DDIM + decode)", "FVD (lower is better)",
                      True, False, logx=True)
    else:
        f1 = _scatter(a, rows, "gen_clips_per_s", "walt_final_loss", "generated clips/s (DDIM + decode)",
                      "W.A.L.T final training loss", True, False, logx=True)
    a.set_title("generation: quality vs throughput", fontsize=9)
    if has_rfvd:
        f2 = _scatter(b, rows, "tokens_per_clip", "rfvd", "latent tokens per clip", "rFVD (lower is better)",
                      False, False, logx=True)
    else:
        f2 = _scatter(b, rows, "tokens_per_clip", "psnr", "latent tokens per clip", "reconstruction PSNR (dB)",
                      False, True, logx=True)
    b.set_title("autoencoder: reconstruction vs tokens", fontsize=9)
    _save(fig, path)
    return {"generation": [rows[i]["label"] for i in f1], "reconstruction": [rows[i]["label"] for i in f2]}


def plot_ablation(rows: list[dict[str, Any]], path: Path) -> None:
    """Bars per variant: FVD (or final loss without FVD) and training steps/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in rows]
    has_fvd = any(r.get("fvd") is not None for r in rows)
    key, label = ("fvd", "FVD (lower is better)") if has_fvd else ("walt_final_loss", "final training loss")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, k, lab, color in ((axes[0], key, label, "tab:blue"),
                              (axes[1], "walt_train_steps_per_s", "training steps/s", "tab:green")):
        vals = [r.get(k) if r.get(k) is not None else 0.0 for r in rows]
        ax.bar(range(len(rows)), vals, color=[("tab:gray" if n == "default" else color) for n in names])
        ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(lab, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


# ----------------------------------------------------------------------------- Markdown


def _cell(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0 or abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


ENCODER_COLUMNS = (
    ("label", "design"), ("temporal_factor", "f_t"), ("spatial_factor", "f_s"), ("latent_channels", "c"),
    ("causal", "causal"), ("latent_shape", "latent c x t x h x w"), ("tokens_per_clip", "tokens/clip"),
    ("compression", "compression"), ("psnr", "PSNR dB"), ("ssim", "SSIM"), ("rfvd", "rFVD"),
    ("encode_clips_per_s", "encode clips/s"), ("decode_clips_per_s", "decode clips/s"),
    ("walt_final_loss", "W.A.L.T loss"), ("walt_train_steps_per_s", "train steps/s"),
    ("sample_clips_per_s", "sample clips/s"), ("gen_clips_per_s", "gen clips/s"), ("fvd", "FVD"),
)
ABLATION_COLUMNS = (
    ("variant", "variant"), ("label", "change"), ("walt_params", "params"), ("walt_final_loss", "final loss"),
    ("walt_train_steps_per_s", "train steps/s"), ("sample_clips_per_s", "sample clips/s"),
    ("gen_clips_per_s", "gen clips/s"), ("fvd", "FVD"), ("paper", "paper (UCF-101)"),
)


def markdown_table(rows: list[dict[str, Any]], columns) -> str:
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k)) for k, _ in columns) + " |")
    return "\n".join(lines)


def _protocol_lines(cfg, rows: list[dict[str, Any]], machine: dict[str, Any], command: str | None, data: str,
                    fvd_record: dict[str, Any] | None, kind: str, autoencoder: str | None,
                    fvd_floor: float | None) -> list[str]:
    from walt.study.common import fvd_protocol_for

    if kind == "ablation":
        budget = (f"{cfg.walt_steps} W.A.L.T steps (batch {cfg.walt_batch_size}) for every variant"
                  if cfg.budget_minutes is None else
                  f"{(1 - cfg.vae_fraction) * cfg.budget_minutes:g} wall-clock minutes of W.A.L.T training per variant")
        budget += f"; one autoencoder shared by every variant: {autoencoder or 'see study.json'}"
    elif cfg.budget_minutes is not None:
        budget = (f"{cfg.budget_minutes:g} wall-clock minutes of training per row ({cfg.vae_fraction:.0%} autoencoder), "
                  "turned into steps by timing each row's own models (see the steps columns of results.csv)")
    else:
        budget = f"{cfg.vae_steps} autoencoder steps (batch {cfg.vae_batch_size}) and {cfg.walt_steps} W.A.L.T steps " \
                 f"(batch {cfg.walt_batch_size}) for every row"
    lines = [
        f"- command: `{command}`" if command else "- command: (Python API)",
        f"- data: {data}; {cfg.resolution}x{cfg.resolution} clips of {cfg.num_frames} frames; "
        f"{cfg.train_clips} training clips, {cfg.eval_clips} held-out real clips",
        f"- budget: {budget}",
        f"- models: autoencoder base width {cfg.vae_base_channels}, multipliers {tuple(cfg.vae_channel_multipliers)}, "
        f"{cfg.vae_num_res_blocks} res block(s)/level; W.A.L.T depth {cfg.walt_depth}, width {cfg.walt_hidden_size}, "
        f"{cfg.walt_num_heads} heads, patch {cfg.patch_size}",
        f"- sampling: DDIM {cfg.sample_steps} steps, no guidance, {cfg.fake_clips} clips per row (fixed seeds, labels cycling)",
    ]
    if cfg.fvd:
        p = fvd_protocol_for(cfg)
        rec = fvd_record or {}
        net = ("the reference Kinetics-400 I3D" if rec.get("i3d_is_reference", True)
               else "**a non-reference feature network (test only; not an FVD)**")
        lines.append(f"- FVD: protocol `{p.name}` with {p.num_fake} generated vs {p.num_real} real clips, hash "
                     f"`{p.protocol_hash()}`; {net} (weights `{str(rec.get('i3d_weights_sha256', '?'))[:16]}`), "
                     f"first {p.num_frames} frames, {p.resize} resize to {p.resolution}; rFVD: reconstructions vs "
                     f"the same {p.num_real} real clips")
        if fvd_floor is not None:
            lines.append(f"- FVD floor of this protocol: **{fvd_floor:.0f}** = FVD between the {p.num_real} held-out real "
                         f"clips and {p.num_real} other real clips (training clips). Two samples of the same data score "
                         "this much at these sample counts; read every FVD / rFVD below relative to it")
    else:
        lines.append("- FVD: not measured (--no-fvd)")
    m = machine
    load = m.get("load_average")
    lines.append(f"- machine: {m.get('cpu', '?')} ({m.get('cpu_cores')} cores, {m.get('torch_threads')} torch threads), "
                 f"{m.get('gpu', 'no GPU')}, device {m.get('device')}, torch {m.get('torch')}"
                 + (f"; load average (1/5/15 min) when this report was written {load}" if load else ""))
    row_loads = [r["load_1min"] for r in rows if r.get("load_1min") is not None]
    if row_loads:
        lines.append(f"- 1-minute load average as each row finished: {min(row_loads):g} to {max(row_loads):g} "
                     "(column load_1min of results.csv)")
    lines.append(f"- written {time.strftime('%Y-%m-%d %H:%M')}")
    return lines


CAVEATS = (
    "FVD and rFVD from so few clips are strongly biased upwards and noisy (a 400-d covariance from a "
    "few dozen samples): compare rows of this table with each other, never with published numbers.",
    "Throughputs (clips/s, steps/s) are wall-clock measurements on the machine above. On a shared, "
    "loaded machine the same work can run twice as fast or slow from one minute to the next: treat "
    "differences smaller than that as noise unless they are repeated on an idle machine.",
    "Tiny training budgets favour designs that are easy to fit quickly; a ranking can change with "
    "longer training.",
)


def write_study_report(out: Path, rows: list[dict[str, Any]], kind: str, cfg, machine: dict[str, Any],
                       command: str | None = None, data: str = "builtin",
                       fvd_record: dict[str, Any] | None = None, plots: bool = True,
                       autoencoder: str | None = None, fvd_floor: float | None = None) -> dict[str, Any]:
    """results.csv, report.md and (with `plots`) the plot for the finished rows; returns {"front": ...}."""
    out = Path(out)
    write_csv(out / "results.csv", rows)
    if kind == "encoder":
        title, columns, plot = "Causal encoder design study (walt study encoder)", ENCODER_COLUMNS, "pareto.png"
        fronts = plot_encoder(rows, out / plot) if rows and plots else {}
    elif kind == "ablation":
        title, columns, plot = "W.A.L.T ablation at small scale (walt study ablation)", ABLATION_COLUMNS, "ablation.png"
        fronts = {}
        if rows and plots:
            plot_ablation(rows, out / plot)
    else:
        raise ValueError(f"unknown study kind {kind!r}; use 'encoder' or 'ablation'")
    md = [f"# {title}", "", "## Protocol", "", *_protocol_lines(cfg, rows, machine, command, data, fvd_record, kind, autoencoder, fvd_floor), "",
          "## Results", "", markdown_table(rows, columns), ""]
    if plots:
        md += [f"![plot]({plot})", ""]
    if fronts:
        md += ["Pareto front (red in the plot):", ""]
        md += [f"- {k}: {', '.join(v) or 'n/a'}" for k, v in fronts.items()]
        md.append("")
    md += ["## Caveats", "", *[f"- {c}" for c in CAVEATS], ""]
    text = "\n".join(md)
    atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text(text))
    return {"front": fronts}
