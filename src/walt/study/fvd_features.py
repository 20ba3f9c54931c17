"""The FVD side of a study: the Kinetics-400 I3D, the protocol record, features under one protocol.

Every FVD of a study is computed under the same protocol (`walt.eval.fvd`, its sample counts and
clip length set from the `StudyConfig`) and recorded with its hash and the I3D weights' hash.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from walt.study.study_config import StudyConfig

__all__ = ["load_fvd_network", "protocol_record", "fvd_identity", "fvd_protocol_for", "features"]


def load_fvd_network(device: torch.device | str):
    """The Kinetics-400 I3D, or a ValueError saying how to get it / how to run without it."""
    from walt.eval.i3d import load_i3d
    from walt.eval.i3d_weights import I3DWeightsError

    try:
        return load_i3d(device=torch.device(device))
    except I3DWeightsError as e:
        raise ValueError(f"the I3D weights for FVD are not available ({' '.join(str(e).split())}); "
                         "set WALT_I3D_WEIGHTS to i3d-kinetics-400.ckpt, or pass --no-fvd") from None


def protocol_record(cfg: StudyConfig, i3d) -> dict[str, Any] | None:
    """What results record about FVD: protocol name / hash / overrides, I3D weights hash, whether
    it is the reference network (None without FVD)."""
    if i3d is None:
        return None
    from walt.eval.fvd_record import i3d_weights_hash, protocol_record as record

    return record(fvd_protocol_for(cfg), i3d_weights_hash(i3d))


def fvd_identity(fvd_record: dict[str, Any] | None) -> dict[str, Any]:
    """Columns every result row carries: the FVD protocol (name, hash) and the I3D weights that
    measured it, and whether those are the reference network (all None without FVD)."""
    rec = fvd_record or {}
    return {"fvd_protocol": rec.get("name"), "fvd_protocol_hash": rec.get("hash"),
            "i3d_weights_sha256": rec.get("i3d_weights_sha256"), "i3d_is_reference": rec.get("i3d_is_reference")}


def fvd_protocol_for(cfg: StudyConfig):
    """The named protocol with the study's counts and clip length (its first min(16, frames) frames)."""
    from walt.eval.fvd import fvd_protocol

    return fvd_protocol(cfg.fvd_protocol, num_fake=cfg.fvd_clips, num_real=cfg.fvd_clips,
                        num_frames=min(16, cfg.num_frames))


def features(i3d, videos: torch.Tensor, cfg: StudyConfig) -> np.ndarray:
    """(N, 400) float64 I3D features of (N, 3, T, H, W) clips in [-1, 1] under the study's protocol."""
    from walt.eval.fvd import i3d_features

    p = fvd_protocol_for(cfg)
    return i3d_features(i3d, videos, batch_size=8, num_frames=p.num_frames, resize=p.resize, center_crop=p.center_crop)
