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

from walt.io import atomic_write


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


def log_ticks(lo: float, hi: float, min_ticks: int = 3) -> list[float]:
    """Readable tick values for a log axis spanning [lo, hi]: 1-2-5 per decade, or 1..9 when the
    range is under a decade (matplotlib's default leaves such an axis with one or no label)."""
    if not (lo > 0 and hi > 0 and math.isfinite(lo) and math.isfinite(hi)):
        return []
    lo, hi = min(lo, hi), max(lo, hi)
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0 ** k for k in decades for m in mantissas]
        ticks = [t for t in ticks if lo / 1.25 <= t <= hi * 1.25]
        if len(ticks) >= min_ticks:
            # keep a handful: thin the densest candidate set evenly
            step = max(1, math.ceil(len(ticks) / 8))
            return ticks[::step]
    return ticks


def _tick_label(v: float) -> str:
    return f"{v:g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.0e}"


def _set_log_axis(ax, axis: str, values: Sequence[float]) -> None:
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter, NullLocator

    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    getattr(ax, f"set_{axis}scale")("log")
    if not vals:
        return
    lo, hi = min(vals), max(vals)
    if lo == hi:
        lo, hi = lo / 2, hi * 2
    ticks = log_ticks(lo, hi)
    a = getattr(ax, f"{axis}axis")
    a.set_major_locator(FixedLocator(ticks))
    a.set_major_formatter(FixedFormatter([_tick_label(t) for t in ticks]))
    a.set_minor_locator(NullLocator())
    a.set_minor_formatter(NullFormatter())
    getattr(ax, f"set_{axis}lim")(lo / 1.3, hi * 1.3)


# candidate label offsets (points) around a marker, tried in order
_OFFSETS = ((5, 4), (5, -10), (-5, 4), (-5, -10), (0, 9), (0, -15), (9, -3), (-9, -3),
            (14, 12), (14, -18), (-14, 12), (-14, -18))


def place_labels(ax, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], fontsize: int = 7) -> list:
    """Annotate each point with its label, choosing for each (greedily, in order) the first offset
    whose text box overlaps no label placed so far, no marker, not the legend, and stays inside the
    axes; when none fits, the least-overlapping offset is used. Returns the annotations."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    ax_box = ax.get_window_extent(renderer)
    marker_boxes = []
    for x, y in zip(xs, ys):
        px, py = ax.transData.transform((x, y))
        marker_boxes.append((px - 4, py - 4, px + 4, py + 4))

    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    placed, anns = [], []
    legend = ax.get_legend()
    if legend is not None:  # the legend is an obstacle like a placed label
        lb = legend.get_window_extent(renderer)
        placed.append((lb.x0, lb.y0, lb.x1, lb.y1))
    for x, y, text in zip(xs, ys, labels):
        best = None
        for dx, dy in _OFFSETS:
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, ha=ha)
            ann.set_in_layout(False)  # the layout must not move the axes after placement
            bb = ann.get_window_extent(renderer)
            box = (bb.x0 - 1, bb.y0 - 1, bb.x1 + 1, bb.y1 + 1)
            cost = sum(overlap(box, o) for o in placed) + sum(overlap(box, m) for m in marker_boxes)
            outside = (max(0, ax_box.x0 - box[0]) + max(0, box[2] - ax_box.x1) +
                       max(0, ax_box.y0 - box[1]) + max(0, box[3] - ax_box.y1))
            cost += 50 * outside
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann, box)
            else:
                ann.remove()
            if cost == 0:
                break
        placed.append(best[2])
        anns.append(best[1])
    return anns


def _floor_line(ax, floor: float | None, label: str = "FVD floor (real vs real)", zorder: float = 1) -> None:
    """A horizontal line at the protocol's real-vs-real FVD: two samples of real data score this much."""
    if floor is None or not math.isfinite(floor):
        return
    ax.axhline(floor, ls=":", lw=1.2, c="black" if zorder > 2 else "tab:gray", zorder=zorder, label=label)
    lo, hi = ax.get_ylim()
    if floor < lo or floor > hi:  # keep the floor in view
        ax.set_ylim(min(lo, floor * 0.95), max(hi, floor * 1.05))


def _scatter(ax, rows, xkey, ykey, xlabel, ylabel, maximize_x, maximize_y, logx=False,
             floor: float | None = None, labels: bool = True) -> list[int]:
    """Points (Pareto front in red), axes, the FVD floor and, with `labels`, the point labels
    (placed last, on the final layout; a figure of several panels places them itself once every
    panel is set up, see `plot_encoder`)."""
    xs = [r.get(xkey) for r in rows]
    ys = [r.get(ykey) for r in rows]
    front = pareto_front(xs, ys, maximize_x, maximize_y)
    shown = [i for i in range(len(rows)) if xs[i] is not None and ys[i] is not None]
    for i in shown:
        on = i in front
        ax.scatter(xs[i], ys[i], s=40, c="tab:red" if on else "tab:blue", zorder=3, edgecolors="k", linewidths=0.5)
    if len(front) > 1:
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", c="tab:red", lw=1, zorder=2,
                label="Pareto front")
    if logx:
        _set_log_axis(ax, "x", [xs[i] for i in shown])
    else:
        ax.margins(x=0.15)
    ax.margins(y=0.15)
    _floor_line(ax, floor)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if len(front) > 1 or floor is not None:
        ax.legend(fontsize=7, loc="best")
    if labels:
        _label_points(ax, rows, xkey, ykey)
    return front


def _label_points(ax, rows, xkey, ykey) -> None:
    ax.figure.canvas.draw()  # the final layout: label placement measures text in display space
    shown = [r for r in rows if r.get(xkey) is not None and r.get(ykey) is not None]
    place_labels(ax, [r[xkey] for r in shown], [r[ykey] for r in shown], [r["label"] for r in shown])


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def plot_encoder(rows: list[dict[str, Any]], path: Path, fvd_floor: float | None = None) -> dict[str, list[str]]:
    """Two panels: generation quality vs generated clips/s, reconstruction quality vs tokens per clip.

    FVD / rFVD when measured, else PSNR (higher is better); the protocol's real-vs-real FVD floor
    (`fvd_floor`) is drawn on both FVD panels (rFVD is measured against the same real clips).
    Returns the Pareto-front labels per panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_fvd = any(r.get("fvd") is not None for r in rows)
    has_rfvd = any(r.get("rfvd") is not None for r in rows)
    # constrained layout: point labels are placed once both panels are complete (annotations are
    # kept out of the layout, so saving does not move the axes under them)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    a.set_title("generation: quality vs throughput", fontsize=9)
    b.set_title("autoencoder: reconstruction vs tokens", fontsize=9)
    ya = "fvd" if has_fvd else "walt_final_loss"
    f1 = _scatter(a, rows, "gen_clips_per_s", ya, "generated clips/s (DDIM + decode)",
                  "FVD (lower is better)" if has_fvd else "W.A.L.T final training loss", True, False, logx=True,
                  floor=fvd_floor if has_fvd else None, labels=False)
    yb = "rfvd" if has_rfvd else "psnr"
    f2 = _scatter(b, rows, "tokens_per_clip", yb, "latent tokens per clip",
                  "rFVD (lower is better)" if has_rfvd else "reconstruction PSNR (dB)", False, not has_rfvd,
                  logx=True, floor=fvd_floor if has_rfvd else None, labels=False)
    _label_points(a, rows, "gen_clips_per_s", ya)
    _label_points(b, rows, "tokens_per_clip", yb)
    _save(fig, path)
    return {"generation": [rows[i]["label"] for i in f1], "reconstruction": [rows[i]["label"] for i in f2]}


def plot_ablation(rows: list[dict[str, Any]], path: Path, fvd_floor: float | None = None) -> None:
    """Bars per variant: FVD (or final loss without FVD; with the real-vs-real FVD floor as a
    line) and training steps/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in rows]
    has_fvd = any(r.get("fvd") is not None for r in rows)
    key, label = ("fvd", "FVD (lower is better)") if has_fvd else ("walt_final_loss", "final training loss")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for ax, k, lab, color in ((axes[0], key, label, "tab:blue"),
                              (axes[1], "walt_train_steps_per_s", "training steps/s", "tab:green")):
        vals = [r.get(k) if r.get(k) is not None else 0.0 for r in rows]
        ax.bar(range(len(rows)), vals, color=[("tab:gray" if n == "default" else color) for n in names])
        ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(lab, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    if has_fvd and fvd_floor is not None:
        _floor_line(axes[0], fvd_floor, zorder=3)  # over the bars
        axes[0].legend(fontsize=7, loc="lower right")
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
    ("variant", "variant"), ("label", "change"), ("st_window", "ST window"), ("walt_params", "params"),
    ("walt_final_loss", "final loss"),
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
    from walt.study.fvd import fvd_protocol_for

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
    lines.append(f"- machine: {m.get('cpu', '?')} ({m.get('logical_cpus', m.get('cpu_cores'))} cores, {m.get('torch_threads')} torch threads), "
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
    from walt.study.fvd import fvd_identity

    out = Path(out)
    # Every CSV row names the protocol and network that measured it; rows finished before these
    # columns existed get them from the study's record (check_settings keeps it the same).
    ident = fvd_identity(fvd_record)
    write_csv(out / "results.csv", [{**r, **{k: v for k, v in ident.items() if k not in r}} for r in rows])
    if kind == "encoder":
        title, columns, plot = "Causal encoder design study (walt study encoder)", ENCODER_COLUMNS, "pareto.png"
        fronts = plot_encoder(rows, out / plot, fvd_floor) if rows and plots else {}
    elif kind == "ablation":
        title, columns, plot = "W.A.L.T ablation at small scale (walt study ablation)", ABLATION_COLUMNS, "ablation.png"
        fronts = {}
        if rows and plots:
            plot_ablation(rows, out / plot, fvd_floor)
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
