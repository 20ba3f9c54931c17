"""The study's figures: Pareto plots with 95% error bars (encoder study), bars per variant (ablation).

A design is on the Pareto front when no other design is at least as good on both axes and
strictly better on one (e.g. no other design generates clips faster AND with a lower FVD). The
front is drawn through the point values; the error bars are the rows' 95% intervals (quality:
the bootstrap of `walt.eval.intervals`; throughput: the slowest and fastest timed call), so a
point whose bars overlap its neighbour's is not established as better or worse than it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from walt.io import atomic_write

__all__ = ["pareto_front", "log_ticks", "place_labels", "scatter_panel", "plot_pareto", "plot_reconstruction",
           "plot_ablation"]


def pareto_front(xs: Sequence[float | None], ys: Sequence[float | None], maximize_x: bool = False,
                 maximize_y: bool = False) -> list[int]:
    """Indices of the non-dominated points, sorted by x (points with a missing value are skipped)."""
    pts = [(i, x if maximize_x else -x, y if maximize_y else -y) for i, (x, y) in enumerate(zip(xs, ys))
           if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    front = [i for i, a, b in pts
             if not any(a2 >= a and b2 >= b and (a2 > a or b2 > b) for _, a2, b2 in pts)]
    return sorted(front, key=lambda i: xs[i])



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


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def _value(p: dict[str, Any], key: str) -> float | None:
    v = p.get(key)
    return None if v is None else float(v["value"])


def _err(ps: list[dict[str, Any]], key: str):
    """(2, N) asymmetric error bars of `key` for matplotlib, or None when no point has an interval."""
    lo = [p[key]["value"] - p[key].get("lo", p[key]["value"]) for p in ps]
    hi = [p[key].get("hi", p[key]["value"]) - p[key]["value"] for p in ps]
    return [lo, hi] if any(lo) or any(hi) else None


def _reference_lines(ax, lines) -> None:
    """Horizontal references: (interval or value, label); an interval is drawn as a band around its line."""
    for ref, label in lines:
        if ref is None:
            continue
        v = ref["value"] if isinstance(ref, dict) else float(ref)
        ax.axhline(v, ls=":", lw=1.2, c="black", zorder=1, label=label)
        if isinstance(ref, dict) and "lo" in ref:
            ax.axhspan(ref["lo"], ref["hi"], color="gray", alpha=0.15, zorder=0)


def scatter_panel(ax, pts: list[dict[str, Any]], xkey: str, ykey: str, xlabel: str, ylabel: str, maximize_x: bool,
                  maximize_y: bool, logx: bool = False, lines=()) -> list[int]:
    """Points with 95% error bars (the Pareto front in red), reference lines; returns the front's indices."""
    xs, ys = [_value(p, xkey) for p in pts], [_value(p, ykey) for p in pts]
    front = pareto_front(xs, ys, maximize_x, maximize_y)
    shown = [i for i in range(len(pts)) if xs[i] is not None and ys[i] is not None]
    for group, color in (([i for i in shown if i not in front], "tab:blue"), ([i for i in shown if i in front], "tab:red")):
        if group:
            g = [pts[i] for i in group]
            ax.errorbar([xs[i] for i in group], [ys[i] for i in group], xerr=_err(g, xkey), yerr=_err(g, ykey),
                        fmt="o", ms=5, color=color, mec="k", mew=0.5, ecolor=color, elinewidth=0.8, capsize=2,
                        zorder=3)
    if len(front) > 1:
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", c="tab:red", lw=1, zorder=2, label="Pareto front")
    if logx:
        vals = [pts[i][xkey].get(k, pts[i][xkey]["value"]) for i in shown for k in ("lo", "hi")]
        _set_log_axis(ax, "x", vals)
    else:
        ax.margins(x=0.15)
    ax.margins(y=0.15)
    _reference_lines(ax, lines)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if len(front) > 1 or any(ref is not None for ref, _ in lines):
        ax.legend(fontsize=6, loc="best")
    return front


def _label_points(ax, pts: list[dict[str, Any]], xkey: str, ykey: str) -> None:
    ax.figure.canvas.draw()  # the final layout: label placement measures text in display space
    shown = [p for p in pts if p.get(xkey) is not None and p.get(ykey) is not None]
    place_labels(ax, [_value(p, xkey) for p in shown], [_value(p, ykey) for p in shown], [p["label"] for p in shown])


_X_AXES = (("gen_clips_per_s", "generated clips/s (DDIM + decode)", True),
           ("tokens_per_clip", "latent tokens per clip", False))
_Y_AXES = {"fvd": ("FVD (lower is better)", False), "feature_fd": ("classifier feature FD (lower is better)", False),
           "accuracy": ("class accuracy of samples (higher is better)", True),
           "psnr": ("reconstruction PSNR dB (higher is better)", True), "rfvd": ("rFVD (lower is better)", False),
           "recon_accuracy": ("class accuracy of reconstructions", True)}


def _grid(panels, path: Path, title: str, ncols: int) -> dict[str, list[str]]:
    """Draw `panels` [(pts, xkey, xlabel, max_x, ykey, lines)] on a grid, label the points last; the fronts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.8 * nrows), layout="constrained", squeeze=False)
    fig.suptitle(title, fontsize=10)
    fronts, drawn = {}, []
    for ax, (pts, xkey, xlabel, max_x, ykey, lines) in zip(axes.flat, panels):
        ylabel, max_y = _Y_AXES[ykey]
        front = scatter_panel(ax, pts, xkey, ykey, xlabel, ylabel, max_x, max_y, logx=True, lines=lines)
        fronts[f"{ykey} vs {xkey}"] = [pts[i]["label"] for i in front]
        drawn.append((ax, pts, xkey, ykey))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for ax, pts, xkey, ykey in drawn:
        _label_points(ax, pts, xkey, ykey)
    _save(fig, path)
    return fronts


def plot_pareto(pts: list[dict[str, Any]], path: Path, title: str, lines: dict[str, list]) -> dict[str, list[str]]:
    """Generation quality (FVD, feature FD, class accuracy; the measured ones) vs generated clips/s
    (top row) and vs tokens per clip (bottom row). `lines[metric]`: its reference lines (floor, chance)."""
    metrics = [m for m in ("fvd", "feature_fd", "accuracy") if any(p.get(m) for p in pts)]
    panels = [(pts, xk, xl, mx, m, lines.get(m, ())) for xk, xl, mx in _X_AXES for m in metrics]
    return _grid(panels, path, title, len(metrics))


def plot_reconstruction(pts: list[dict[str, Any]], path: Path, lines: dict[str, list]) -> dict[str, list[str]]:
    """Reconstruction quality (PSNR, rFVD, the classifier's accuracy on reconstructions) vs tokens per clip."""
    metrics = [m for m in ("psnr", "rfvd", "recon_accuracy") if any(p.get(m) for p in pts)]
    _, xl, mx = _X_AXES[1]
    return _grid([(pts, "tokens_per_clip", xl, mx, m, lines.get(m, ())) for m in metrics], path,
                 "autoencoders: reconstruction of held-out clips vs latent tokens", len(metrics))


def plot_ablation(pts: list[dict[str, Any]], path: Path, lines: dict[str, list]) -> None:
    """Bars per variant with 95% error bars: quality at equal wall-clock and at equal steps, training steps/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("fvd", "feature_fd", "accuracy") if any(p.get(f"time.{m}") for p in pts)]
    fig, axes = plt.subplots(1, len(metrics) + 1, figsize=(4.2 * (len(metrics) + 1), 3.9), layout="constrained",
                             squeeze=False)
    names, x = [p["label"] for p in pts], list(range(len(pts)))
    for ax, m in zip(axes.flat, metrics):
        for k, (view, color) in enumerate((("time", "tab:blue"), ("steps", "tab:orange"))):
            key = f"{view}.{m}"
            have = [i for i in x if pts[i].get(key)]
            if have:
                g = [pts[i] for i in have]
                ax.bar([i + (k - 0.5) * 0.38 for i in have], [_value(p, key) for p in g], 0.38, color=color,
                       yerr=_err(g, key), capsize=2, label={"time": "equal wall-clock", "steps": "equal steps"}[view])
        _reference_lines(ax, lines.get(m, ()))
        ax.set_ylabel(_Y_AXES[m][0], fontsize=8)
        ax.legend(fontsize=6, loc="best")
    ax = axes.flat[len(metrics)]
    have = [i for i in x if pts[i].get("train_steps_per_s")]
    ax.bar(have, [_value(pts[i], "train_steps_per_s") for i in have], 0.6, color="tab:green",
           yerr=_err([pts[i] for i in have], "train_steps_per_s") if have else None, capsize=2)
    ax.set_ylabel("denoiser training steps/s (timing pass)", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
