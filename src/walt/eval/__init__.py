"""Evaluation: reconstruction metrics, the Kinetics-400 I3D, FVD, and the motion-class score.

Evaluation never trains the models it scores (the motion-class score trains only its own small classifier)."""

from walt.eval.fvd import FVDProtocol, feature_stats, frechet_distance, fvd, fvd_protocol, i3d_features
from walt.eval.i3d import KINETICS400_LABELS, InceptionI3d, load_i3d
from walt.eval.metrics import psnr, ssim

__all__ = [
    "FVDProtocol", "feature_stats", "frechet_distance", "fvd", "fvd_protocol", "i3d_features",
    "KINETICS400_LABELS", "InceptionI3d", "load_i3d", "psnr", "ssim",
]
