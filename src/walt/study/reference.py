"""What every row is measured against: one motion classifier, the real held-out features, the floor.

    classifier  a `MotionClassifier` trained once on REAL clips of the training distribution (not
                on any design's reconstructions), cached in shared/, so its features and its
                accuracy mean the same thing for every design (walt.eval.class_score)
    real sets   held-out A (the reference of every FD) and B: classifier predictions / features of
                both, I3D features of their first clips
    floor       FD(A[:n], B[:n]) of two disjoint real sets with its 95% interval, at each n of
                `floor_counts` (classifier features) and `fvd_floor_counts` (I3D), and the
                smallest n whose whole interval is <= 10% of the floor
                (`walt.eval.intervals.clips_for_relative_width`); also at the rows' own counts

The arrays go to shared/reference.npz; the record (intervals, the clip-count search) is the
study's "reference" stage.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from walt.study.study_config import StudyConfig
from walt.study.clip_sets import StudyData, stack_clips

__all__ = ["common_classifier", "reference_stage", "load_reference", "heldout_b"]


def common_classifier(cfg: StudyConfig, data: StudyData, folder: Path, progress: bool = False):
    """(classifier, info): the study's motion classifier, trained on real clips or read from `folder`."""
    from walt.eval.class_score import ClassifierConfig, classifier_for

    ds = data.classifier

    def clips(n: int):
        return stack_clips(ds, [i % len(ds) for i in range(n)])

    ccfg = ClassifierConfig(steps=cfg.classifier_steps, train_clips=cfg.classifier_train_clips, seed=cfg.seed)
    return classifier_for(None, clips, data.num_classes, data.key, ccfg, folder=folder, progress=progress)


def heldout_b(cfg: StudyConfig, data: StudyData, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` (default: a row's sample count) clips of held-out set B, and their labels."""
    n = cfg.samples if n is None else n
    return stack_clips(data.heldout, range(cfg.heldout_clips, cfg.heldout_clips + n))


def _floor_search(a: np.ndarray, b: np.ndarray, counts, at: int) -> dict[str, Any]:
    from walt.eval.intervals import clips_for_relative_width, fd_interval

    counts = sorted({int(n) for n in counts if n <= min(len(a), len(b))})
    search = clips_for_relative_width(lambda n: fd_interval(a[:n], b[:n]), counts)
    return {**search, "at_rows": fd_interval(a[:at], b[:at]), "rows_clips": at}


def reference_stage(cfg: StudyConfig, data: StudyData, folder: Path, i3d, progress: bool = False,
                    say=print) -> dict[str, Any]:
    """Train (or read) the classifier, score the real sets, measure the floor -> the stage record."""
    from walt.eval.class_score import classify
    from walt.eval.intervals import mean_interval
    from walt.io import atomic_write
    from walt.study.fvd_features import features

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    clf, built = common_classifier(cfg, data, folder, progress)
    n = cfg.heldout_clips
    videos, labels = stack_clips(data.heldout, range(2 * n))  # A = first half, B = second half
    pred, feats = classify(clf, videos)
    arrays = {"labels": labels.numpy(), "pred": pred.numpy(), "clf": feats.double().numpy()}
    correct = arrays["pred"] == arrays["labels"]
    record: dict[str, Any] = {
        "classifier": {**built, "train_clips": cfg.classifier_train_clips, "steps": cfg.classifier_steps,
                       "trained_on": "real clips of the training distribution"},
        "real_accuracy": mean_interval(correct.astype(np.float64)), "heldout_clips": n,
        "floor_feature_fd": _floor_search(arrays["clf"][:n], arrays["clf"][n:], (*cfg.floor_counts, cfg.samples),
                                          cfg.samples)}
    say(f"  classifier: real held-out accuracy {record['real_accuracy']['value']:.3f} "
        f"({'read from' if built['cached'] else 'trained into'} {folder})")
    if i3d is not None:
        m = max(*cfg.fvd_floor_counts, cfg.fvd_clips)
        t1 = time.perf_counter()
        arrays["i3d_a"], arrays["i3d_b"] = features(i3d, videos[:m], cfg), features(i3d, videos[n:n + m], cfg)
        record["i3d_seconds_per_clip"] = (time.perf_counter() - t1) / (2 * m)
        record["floor_fvd"] = _floor_search(arrays["i3d_a"], arrays["i3d_b"], (*cfg.fvd_floor_counts, cfg.fvd_clips),
                                            cfg.fvd_clips)
    path = folder / "reference.npz"
    atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), **arrays))
    record.update(file=str(path), seconds=time.perf_counter() - t0)
    return record


def load_reference(folder: Path) -> dict[str, np.ndarray]:
    with np.load(Path(folder) / "reference.npz") as z:
        return {k: z[k] for k in z.files}
