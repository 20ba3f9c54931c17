"""Config and presets of the causal 3D CNN autoencoder (W.A.L.T Sec. 3.1 / SPEC §1).

The layout follows the MAGVIT-v2 tokenizer (Yu et al. 2023): `num_levels` resolution levels of
residual blocks, joined by `num_levels - 1` *transitions* (strided convs in the encoder,
depth-to-space in the decoder). Spatial downsampling happens in the FIRST log2(f_s) transitions,
temporal downsampling in the LAST log2(f_t) transitions (MAGVIT-v2 compresses time late, so the
high-resolution levels still see every frame), or with `temporal_downsampling="early"` in the
first ones (CogVideoX's VAE: the high-resolution levels see half the frames, fewer FLOPs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from walt.config import replace_config

SPATIAL_FACTORS = (2, 4, 8, 16)
TEMPORAL_FACTORS = (1, 2, 4, 8)


@dataclass(frozen=True)
class CausalVAEConfig:
    """Hyper-parameters of `CausalVAE`.

    A video (B, in_channels, 1 + T, H, W) maps to latents
    (B, latent_channels, 1 + T / temporal_factor, H / spatial_factor, W / spatial_factor).
    """

    in_channels: int = 3
    latent_channels: int = 8           # c; paper default 8 (study: 4 / 8 / 16 / 32)
    spatial_factor: int = 8            # f_s = H / h
    temporal_factor: int = 4           # f_t = T / t; 1 = an image ("2D") autoencoder
    base_channels: int = 128
    channel_multipliers: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 4            # per level, and in the middle of encoder / decoder
    causal: bool = True                # False: symmetric temporal padding (study variant)
    kl: bool = True                    # diagonal-Gaussian posterior (encoder outputs mean, logvar)
    temporal_kernel_size: int = 3      # k_t of every 3D conv; 1 only for an image model
    norm_groups: int = 32              # GroupNorm groups (gcd with the width, so tiny models work)
    temporal_downsampling: str = "late"  # "late" (MAGVIT-v2, the paper) or "early" (CogVideoX: fewer FLOPs)

    def __post_init__(self) -> None:
        if self.temporal_downsampling not in ("late", "early"):
            raise ValueError(f"temporal_downsampling must be 'late' (MAGVIT-v2) or 'early' (CogVideoX), "
                             f"got {self.temporal_downsampling!r}")
        if self.spatial_factor not in SPATIAL_FACTORS:
            raise ValueError(
                f"spatial_factor={self.spatial_factor} is not supported; use one of {SPATIAL_FACTORS}"
            )
        if self.temporal_factor not in TEMPORAL_FACTORS:
            raise ValueError(
                f"temporal_factor={self.temporal_factor} is not supported; use one of {TEMPORAL_FACTORS}"
            )
        for name in ("in_channels", "latent_channels", "base_channels", "num_res_blocks", "norm_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if not self.channel_multipliers or any(m < 1 for m in self.channel_multipliers):
            raise ValueError(
                f"channel_multipliers={self.channel_multipliers} must be a non-empty tuple of positive ints"
            )
        k = self.temporal_kernel_size
        if k < 1 or k % 2 == 0:
            raise ValueError(f"temporal_kernel_size={k} must be odd (1, 3, 5, ...)")
        if self.temporal_factor > 1 and k < 2:
            # A stride-2 conv with k_t=1 would skip frames (and break the streaming cache).
            raise ValueError(
                f"temporal_kernel_size=1 is only valid for an image model (temporal_factor=1); "
                f"temporal_factor={self.temporal_factor} needs temporal_kernel_size >= 3"
            )

    # ---- derived layout -------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        """Resolution levels; extended when a factor needs more transitions than the multipliers give."""
        need = max(int(math.log2(self.spatial_factor)), int(math.log2(self.temporal_factor)))
        return max(len(self.channel_multipliers), need + 1)

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Width of each level; the multipliers are extended by repeating the last one."""
        mults = list(self.channel_multipliers)
        mults += [mults[-1]] * (self.num_levels - len(mults))
        return tuple(self.base_channels * m for m in mults)

    @property
    def transition_strides(self) -> tuple[tuple[int, int], ...]:
        """(temporal, spatial) stride of each transition between levels i and i+1."""
        n = self.num_levels - 1
        n_s = int(math.log2(self.spatial_factor))
        n_t = int(math.log2(self.temporal_factor))
        if self.temporal_downsampling == "early":  # time halves in the first transitions, with space
            return tuple((2 if i < n_t else 1, 2 if i < n_s else 1) for i in range(n))
        return tuple((2 if i >= n - n_t else 1, 2 if i < n_s else 1) for i in range(n))


# ---- presets ---------------------------------------------------------------------------------
def _tiny() -> CausalVAEConfig:
    """CPU tests in seconds: 8-16 channels, 3 levels extended to 4 by f_s=8, 1 res block."""
    return CausalVAEConfig(base_channels=8, channel_multipliers=(1, 2, 2), num_res_blocks=1,
                           latent_channels=4, norm_groups=4)


def _ucf101() -> CausalVAEConfig:
    """SPEC §1 video model: 17x128x128 -> 8 x 5 x 16 x 16."""
    return CausalVAEConfig(base_channels=128, channel_multipliers=(1, 2, 2, 4), num_res_blocks=4,
                           latent_channels=8)


def _ucf101_early() -> CausalVAEConfig:
    """`ucf101` with time compressed in the first transitions (as CogVideoX's VAE does): the
    full-resolution levels see 1 + T/2 frames instead of 1 + T, ~25% fewer encoder FLOPs."""
    return CausalVAEConfig(base_channels=128, channel_multipliers=(1, 2, 2, 4), num_res_blocks=4,
                           latent_channels=8, temporal_downsampling="early")


def _imagenet() -> CausalVAEConfig:
    """SPEC §1 ImageNet model (MAGVIT-v2 multipliers (1,1,2,4)): 256x256 image -> 8 x 1 x 32 x 32."""
    return CausalVAEConfig(base_channels=128, channel_multipliers=(1, 1, 2, 4), num_res_blocks=4,
                           latent_channels=8)


PRESETS: dict[str, Callable[[], CausalVAEConfig]] = {
    "tiny": _tiny,
    "ucf101": _ucf101,
    "ucf101-early": _ucf101_early,
    "imagenet": _imagenet,
}


def preset_config(name: str, **overrides) -> CausalVAEConfig:
    """The named preset with `overrides` applied (unknown keys -> ConfigError naming them)."""
    if name not in PRESETS:
        raise ValueError(f"unknown CausalVAE preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace_config(PRESETS[name](), **overrides)


def image_config(video_config: CausalVAEConfig) -> CausalVAEConfig:
    """The image ("2D") twin of a video config: temporal_factor=1 and k_t=1 (see inflate.py)."""
    return replace_config(video_config, temporal_factor=1, temporal_kernel_size=1)
