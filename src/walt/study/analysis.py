"""From per-clip arrays to the study's numbers: every quality number with its 95% interval, every
row against the reference row by paired bootstrap (`walt.eval.intervals`).

    recon   PSNR, SSIM (per-clip means), the classifier's accuracy on the reconstructions (the
            ceiling of a denoiser through that autoencoder), feature FD and rFVD of the
            reconstructions of B against A
    time    the final weights (equal wall-clock): class accuracy of the samples (right when the
            classifier names the asked-for class), feature FD and FVD of the samples against A,
            and each seed set's values
    steps   the same at the common step (equal steps)

A difference (row - reference) resamples both rows with the same indices: the same held-out
clips for reconstruction, the same seeds for samples; it is "established" when its interval
excludes zero. The result is cached in analysis.json under a digest of its inputs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from walt.eval.intervals import (established, fd_interval, mean_interval, paired_fd_difference,
                                 paired_mean_difference)
from walt.experiment.runner import StageLog
from walt.io import read_json, write_json

__all__ = ["analyse", "VIEWS", "QUALITY"]

VIEWS = ("time", "steps")  # equal wall-clock (final weights), equal steps (the common snapshot)
QUALITY = {"recon": ("psnr", "ssim", "accuracy", "feature_fd", "rfvd"), "time": ("accuracy", "feature_fd", "fvd"),
           "steps": ("accuracy", "feature_fd", "fvd")}


def _with_flag(d: dict[str, Any]) -> dict[str, Any]:
    """The difference and whether it is established (a difference of round-off size never is)."""
    return {**d, "established": established(d) and max(abs(d["lo"]), abs(d["hi"])) > 1e-9}


def _recon_arrays(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"psnr": np.minimum(a["psnr"], 100.0), "ssim": a["ssim"], "accuracy": (a["pred"] == a["labels"]) * 1.0,
            "feature_fd": a["clf"], **({"rfvd": a["i3d"]} if "i3d" in a else {})}


def _view_arrays(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"accuracy": (a["pred"] == a["asked"]) * 1.0, "feature_fd": a["clf"], **({"fvd": a["i3d"]} if "i3d" in a else {})}


def _intervals(arrays: dict[str, np.ndarray], real: dict[str, np.ndarray]) -> dict[str, Any]:
    """mean_interval of per-clip values, fd_interval of feature sets (against `real[metric]`)."""
    return {k: fd_interval(real[k][:len(v)], v) if k in real else mean_interval(v) for k, v in arrays.items()}


def _differences(arrays: dict[str, np.ndarray], ref: dict[str, np.ndarray], real: dict[str, np.ndarray]):
    out = {}
    for k, v in arrays.items():
        if k in ref:
            d = paired_fd_difference(real[k][:len(v)], v, ref[k]) if k in real else paired_mean_difference(v, ref[k])
            out[k] = _with_flag(d)
    return out


def _per_seed(a: dict[str, np.ndarray], real: dict[str, np.ndarray]) -> dict[str, list[float]]:
    from walt.eval.class_score import feature_frechet

    sets = sorted(set(a["seed_set"].tolist()))
    ref = real["feature_fd"][:len(a["clf"])]  # the reference set of the pooled value, against one seed set
    out = {"accuracy": [float((a["pred"] == a["asked"])[a["seed_set"] == s].mean()) for s in sets],
           "feature_fd": [feature_frechet(ref, a["clf"][a["seed_set"] == s]) for s in sets]}
    if "i3d" in a:
        ref = real["fvd"][:len(a["i3d"])]
        out["fvd"] = [feature_frechet(ref, a["i3d"][a["i3d_seed_set"] == s]) for s in sets]
    return out


def _load(folder: Path, record: dict[str, Any] | None) -> dict[str, np.ndarray] | None:
    from walt.study.evaluate import load_arrays

    return None if record is None else load_arrays(folder, record)


def _row(study, row, step, ref_arrays, real) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    from walt.study.rows import failure

    folder = study.row_dir(row)
    log = StageLog(folder / "stages")
    out: dict[str, Any] = {"name": row.name, "label": row.label, "design": row.design, "paper": row.paper,
                           "paper_effect": dict(row.paper_effect),
                           "failed": failure(folder), "train": {k: log.get(k) for k in ("vae", "cache", "walt")},
                           "timing": log.get("timing"), "quality": {}, "diff": {}, "per_seed": {}}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    recon = _load(folder, log.get("recon"))
    if recon is not None:
        arrays["recon"] = _recon_arrays(recon)
    for view, stage in (("time", "eval_time"), ("steps", "eval_steps")):
        rec = log.get(stage)
        if rec is not None and (view == "time" or rec.get("step") == step):
            a = _load(folder, rec)
            arrays[view] = _view_arrays(a)
            out["per_seed"][view] = _per_seed(a, real[view])
            out[f"{view}_step"] = rec.get("step")
    for part, arr in arrays.items():
        out["quality"][part] = _intervals(arr, real[part])
        if ref_arrays is not None and part in ref_arrays:
            out["diff"][part] = _differences(arr, ref_arrays[part], real[part])
    return out, arrays


def _digest(study, step) -> str:
    parts = [step, (study.out / "stages" / "reference.json").read_text() if (study.out / "stages").is_dir() else ""]
    for row in study.rows:
        folder = study.row_dir(row)
        parts.append([row.name, row.label, StageLog(folder / "stages").stages, read_json(folder / "failed.json")])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def analyse(study, step: int | None, log: StageLog) -> dict[str, Any]:
    """Intervals and paired differences of every row (the first row is the reference) -> analysis.json."""
    from walt.study.reference import load_reference

    digest = _digest(study, step)
    cached = read_json(study.out / "analysis.json")
    if cached is not None and cached.get("digest") == digest:
        return cached
    cfg, ref_rec = study.cfg, log.get("reference")
    a = load_reference(study.shared_dir)
    n = cfg.heldout_clips
    clf_a, i3d_a = a["clf"][:n], a.get("i3d_a")
    real_view = {"feature_fd": clf_a, **({"fvd": i3d_a} if i3d_a is not None else {})}
    real = {"recon": {"feature_fd": clf_a, **({"rfvd": i3d_a} if i3d_a is not None else {})},
            "time": real_view, "steps": real_view}
    rows, ref_arrays = [], None
    for i, row in enumerate(study.rows):
        info, arrays = _row(study, row, step, ref_arrays, real)
        if i == 0:
            ref_arrays = arrays or None
        rows.append(info)
    shared = log.get("autoencoder")
    result = {"digest": digest, "reference_row": study.rows[0].name, "common_step": step, "reference": ref_rec,
              "rows": rows, "autoencoder": None}
    if shared is not None:  # the ablation's one autoencoder
        from walt.study.evaluate import load_arrays

        result["autoencoder"] = {"quality": _intervals(_recon_arrays(load_arrays(study.shared_dir, shared)),
                                                       real["recon"]), "timing": shared.get("timing")}
    write_json(study.out / "analysis.json", result)
    return result
