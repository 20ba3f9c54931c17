"""The FVD side of a study: the Kinetics-400 I3D, the protocol record, real features computed once.

Every row's FVD is computed under the same protocol (`walt.eval.fvd`, its sample counts set from
the `StudyConfig`) and recorded with its hash and the I3D weights' hash; the real held-out clips'
features are cached in the study folder, and FVD between them and as many other real clips is
the floor every row is read against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from walt.io import atomic_write
from walt.study.config import StudyConfig

__all__ = ["load_fvd_network", "prepare_fvd", "fvd_identity", "fvd_protocol_for", "features", "real_features",
           "real_vs_real_fvd", "stack_videos"]


def stack_videos(dataset, ids) -> torch.Tensor:
    return torch.stack([dataset[int(i)]["video"] for i in ids])  # (B, 3, T, H, W)


def load_fvd_network(device: torch.device):
    """The Kinetics-400 I3D, or a ValueError saying how to get it / how to run without it."""
    from walt.eval.i3d import load_i3d
    from walt.eval.i3d_weights import I3DWeightsError

    try:
        return load_i3d(device=device)
    except I3DWeightsError as e:
        raise ValueError(f"the I3D weights for FVD are not available ({' '.join(str(e).split())}); "
                         "set WALT_I3D_WEIGHTS to i3d-kinetics-400.ckpt, or pass --no-fvd") from None


def prepare_fvd(cfg: StudyConfig, i3d, device: torch.device):
    """(network or None, protocol record or None): the I3D (loaded unless injected) and what results record
    about it (protocol name / hash / overrides, I3D weights hash, whether it is the reference network)."""
    if not cfg.fvd:
        return None, None
    from walt.eval.fvd_record import i3d_weights_hash, protocol_record

    i3d = i3d if i3d is not None else load_fvd_network(device)
    return i3d, protocol_record(fvd_protocol_for(cfg), i3d_weights_hash(i3d))


def fvd_identity(fvd_record: dict[str, Any] | None) -> dict[str, Any]:
    """Columns every result row carries: the FVD protocol (name, hash) and the I3D weights that
    measured it, and whether those are the reference network (all None without FVD)."""
    rec = fvd_record or {}
    return {"fvd_protocol": rec.get("name"), "fvd_protocol_hash": rec.get("hash"),
            "i3d_weights_sha256": rec.get("i3d_weights_sha256"), "i3d_is_reference": rec.get("i3d_is_reference")}


def fvd_protocol_for(cfg: StudyConfig):
    from walt.eval.fvd import fvd_protocol

    return fvd_protocol(cfg.fvd_protocol, num_fake=cfg.fake_clips, num_real=cfg.eval_clips)


def features(i3d, videos: torch.Tensor, cfg: StudyConfig) -> np.ndarray:
    from walt.eval.fvd import i3d_features

    p = fvd_protocol_for(cfg)
    return i3d_features(i3d, videos, batch_size=4, num_frames=p.num_frames, resize=p.resize, center_crop=p.center_crop)


def real_features(i3d, real: torch.Tensor, cfg: StudyConfig, path: Path) -> np.ndarray:
    """I3D features of the real held-out clips, computed once per study and cached in `path` (.npy)."""
    if path.is_file():
        feats = np.load(path)
        if feats.shape[0] == real.shape[0]:
            return feats
    feats = features(i3d, real, cfg)
    atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), feats))
    return feats


def real_vs_real_fvd(i3d, train_data, real_feats: np.ndarray, cfg: StudyConfig, path: Path) -> float:
    """FVD between the held-out real clips and as many *other* real clips (the training pool's first ones).

    Two samples of the same distribution: the protocol's floor at these sample counts (bias + noise).
    A row's FVD means something only as its distance above this floor.
    """
    from walt.eval.fvd import fvd

    n = min(len(train_data), real_feats.shape[0])
    other = real_features(i3d, stack_videos(train_data, range(n)), cfg, path)
    return fvd(real_feats, other)
