"""Study outputs: report.json (everything below is rendered from it), results.csv, report.md, plots.

Every quality number is printed with its 95% interval as `value [lo, hi]`, every difference
against the reference row as `+d [lo, hi]` followed by "established" (its paired interval
excludes zero) or "not established"; throughputs carry the range of their timed calls. The
report states the command, the machine, the data, the budget and every clip count, so that
`walt study docs` can rebuild docs/study/README.md from the folders alone (`walt.study.docs`).
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

from walt.io import atomic_write, write_json
from walt.study import tables as TB

__all__ = ["write_study_report", "render_report", "write_csv", "points", "IMAGES"]

IMAGES = {"encoder": ("pareto_time.png", "pareto_steps.png", "reconstruction.png"), "ablation": ("ablation.png",)}


def points(rows: list[dict[str, Any]], view: str | None) -> list[dict[str, Any]]:
    """Plot points of the rows that have numbers: quality intervals of `view` (None: both views,
    as "time.<metric>" / "steps.<metric>"), reconstruction, throughput ranges, tokens per clip."""
    pts = []
    for r in rows:
        walt, t, q = (r["train"] or {}).get("walt"), r.get("timing") or {}, r["quality"]
        if walt is None:
            continue
        p = {"label": r["label"], "tokens_per_clip": {"value": walt["tokens_per_clip"]},
             "gen_clips_per_s": t.get("gen_clips_per_s"), "train_steps_per_s": t.get("train_steps_per_s")}
        for v in ((view,) if view else ("time", "steps")):
            for m, iv in q.get(v, {}).items():
                p[m if view else f"{v}.{m}"] = iv
        rec = q.get("recon", {})
        p.update(psnr=rec.get("psnr"), rfvd=rec.get("rfvd"), recon_accuracy=rec.get("accuracy"))
        pts.append(p)
    return pts


def _lines(meta: dict[str, Any]) -> dict[str, list]:
    ref = meta["analysis"]["reference"] or {}
    fvd, ffd = (ref.get("floor_fvd") or {}).get("at_rows"), (ref.get("floor_feature_fd") or {}).get("at_rows")
    acc = [(1.0 / meta["num_classes"], "chance"), (ref.get("real_accuracy"), "real held-out clips")]
    return {"fvd": [(fvd, "floor: real vs real")], "rfvd": [(fvd, "floor: real vs real")],
            "feature_fd": [(ffd, "floor: real vs real")], "accuracy": acc, "recon_accuracy": acc[1:]}


def _plots(out: Path, meta: dict[str, Any]) -> dict[str, list[str]]:
    from walt.study import plots as P

    rows, lines, fronts = meta["analysis"]["rows"], _lines(meta), {}
    if meta["kind"] == "ablation":
        P.plot_ablation(points(rows, None), out / "ablation.png", lines)
        return fronts
    step = meta["analysis"]["common_step"]
    for view, title in (("time", "equal wall-clock: final weights of every row"),
                        ("steps", f"equal steps: every row's EMA weights at step {step}")):
        pts = points(rows, view)
        if any(p.get("accuracy") for p in pts):
            fronts.update({f"{view}: {k}": v for k, v in P.plot_pareto(pts, out / f"pareto_{view}.png", title,
                                                                         lines).items()})
    pts = points(rows, "time")
    if any(p.get("psnr") for p in pts):
        fronts.update({f"reconstruction: {k}": v for k, v in P.plot_reconstruction(pts, out / "reconstruction.png",
                                                                                    lines).items()})
    return fronts


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


def write_study_report(study, analysis: dict[str, Any]) -> dict[str, Any]:
    """report.json, results.csv, report.md and the plots of `analysis` (`walt.study.analysis.analyse`)."""
    from walt.config import config_to_dict
    from walt.experiment.machine import machine_info
    from walt.study.fvd_features import fvd_identity

    out = Path(study.out)
    meta = {"kind": study.kind, "command": study.command, "config": config_to_dict(study.cfg),
            "data": study.data.description, "num_classes": study.data.num_classes,
            "class_names": list(study.data.class_names), "fvd": study.fvd_record,
            "machine": machine_info(study.device), "vae": str(study.vae_path) if study.vae_path else None,
            "denoiser": study.cfg.walt_kwargs(),
            "written": time.strftime("%Y-%m-%d %H:%M:%S"), "analysis": analysis}
    meta["fronts"] = _plots(out, meta)
    write_json(out / "report.json", meta)
    ident = fvd_identity(study.fvd_record)
    write_csv(out / "results.csv", [{**TB.csv_row(r), **ident} for r in analysis["rows"]])
    text = render_report(meta)
    atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text(text))
    return {"rows": analysis["rows"], "analysis": analysis, "fronts": meta["fronts"]}


def render_report(meta: dict[str, Any], level: int = 1, images: str = "") -> str:
    """The Markdown report of `meta` (report.json); `level`: the title's heading level; `images`:
    a prefix for the plot files (docs/study puts both studies' plots in one folder)."""
    h = "#" * level
    kind = meta["kind"]
    title = ("Causal encoder design vs quality and throughput (walt study encoder)" if kind == "encoder"
             else "The paper's Table 3 knobs at small scale (walt study ablation)")
    md = [f"{h} {title}", "", f"{h}# How it was measured", "", *TB.protocol_lines(meta), "",
          f"{h}# The real-vs-real floor and the clip counts", "", *TB.floor_section(meta), ""]
    if kind == "encoder":
        md += [f"{h}# Cost (timing pass: one row at a time)", "", TB.cost_table(meta), "",
               f"{h}# Reconstruction of held-out clips", "", TB.quality_table(meta, "recon"), ""]
    else:
        md += [f"{h}# Cost (timing pass: one variant at a time)", "", TB.cost_table(meta), "",
               f"{h}# Next to the paper (W.A.L.T Table 3, UCF-101)", "", TB.paper_table(meta), ""]
    step = meta["analysis"]["common_step"]
    md += [f"{h}# Generation at equal wall-clock (final weights)", "", TB.quality_table(meta, "time"), "",
           f"{h}# Generation at equal steps (EMA weights at step {step})", "",
           TB.quality_table(meta, "steps") if step else "No step was reached by every row (see the failures).", "",
           f"{h}# Each seed set", "", TB.per_seed_table(meta), ""]
    md += [f"{h}# Plots", ""] + [f"![{name}]({images}{name})" for name in IMAGES[kind]] + [""]
    if meta.get("fronts"):
        md += ["Pareto front (red in the plots; point values, see the intervals before reading an order):", ""]
        md += [f"- {k}: {', '.join(v) or 'n/a'}" for k, v in meta["fronts"].items()] + [""]
    failed = [r for r in meta["analysis"]["rows"] if r.get("failed")]
    if failed:
        md += [f"{h}# Failed rows", ""] + [f"- {r['label']} (`{r['name']}`), {r['failed']['phase']}: "
                                            f"{r['failed']['error']}" for r in failed] + [""]
    md += [f"{h}# Reading the numbers", "", *[f"- {c}" for c in TB.CAVEATS], ""]
    return "\n".join(md)
