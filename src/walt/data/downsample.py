"""Low-resolution twins of a dataset for super-resolution training pairs (W.A.L.T §4, SPEC §4).

An SR stage trains on pairs of the same videos at two resolutions: the low-res side of a pair
is the high-res clip's PIXELS downsampled, then encoded by the same autoencoder; `Downsampled` wraps any dataset (items {"video": (3, T, H, W) in [-1, 1], ...}) and
does exactly that per item:

    hi = SyntheticVideos(64, num_frames=17, resolution=(256, 448))
    lo = Downsampled(hi, (128, 224))          # the same clips, area-downsampled 2x

    walt encode --data builtin --resolution 256x448 --out cache/hi ...
    walt encode --data builtin --resolution 128x224 --downsample-from 256x448 --out cache/lo ...

Filter (*choice*, the paper does not say): "area" (default) = the mean over each source pixel
block (`F.interpolate(mode="area")`, exact box filter for integer factors; the usual
anti-aliased image downsample); "bilinear" = antialiased bilinear (`antialias=True`, a triangle
filter over the scale). Each frame is filtered on its own (no temporal mixing).

Without `Downsampled` a low-res cache of the built-in dataset is the same scenes re-rendered at
the low resolution (its geometry is resolution-independent, with analytic anti-aliasing): close,
but not the same pixels; for video folders both caches resize the same source files.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["DOWNSAMPLE_MODES", "downsample_video", "Downsampled"]

DOWNSAMPLE_MODES = ("area", "bilinear")


def downsample_video(video: torch.Tensor, size: tuple[int, int], mode: str = "area") -> torch.Tensor:
    """(C, T, H, W) or (B, C, T, H, W) -> the same with every frame resized to `size` = (h, w) <= (H, W)."""
    if mode not in DOWNSAMPLE_MODES:
        raise ValueError(f"downsample mode must be one of {DOWNSAMPLE_MODES}, got {mode!r}")
    squeeze = video.ndim == 4
    x = video[None] if squeeze else video  # (B, C, T, H, W)
    if x.ndim != 5:
        raise ValueError(f"expected a video (C, T, H, W) or (B, C, T, H, W), got shape {tuple(video.shape)}")
    b, c, t, H, W = x.shape
    h, w = size
    if h > H or w > W:
        raise ValueError(f"cannot downsample {H}x{W} frames to a larger {h}x{w}")
    frames = x.transpose(1, 2).reshape(b * t, c, H, W).float()  # (B*T, C, H, W)
    if mode == "area":
        out = F.interpolate(frames, size=(h, w), mode="area")
    else:
        out = F.interpolate(frames, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    out = out.reshape(b, t, c, h, w).transpose(1, 2).to(video.dtype)  # (B, C, T, h, w)
    return out[0] if squeeze else out


def _resolution_of(dataset: Dataset) -> tuple[int, int] | None:
    """(H, W) of a walt dataset (SyntheticVideos: height / width; folders: resolution), through a Subset."""
    base = getattr(dataset, "dataset", dataset)
    if getattr(base, "height", None) is not None and getattr(base, "width", None) is not None:
        return int(base.height), int(base.width)
    res = getattr(base, "resolution", None)
    return (int(res[0]), int(res[1])) if isinstance(res, (tuple, list)) and len(res) == 2 else None


class Downsampled(Dataset):
    """The clips of `dataset`, each frame downsampled to `resolution` = (h, w) (same labels, captions, indices)."""

    def __init__(self, dataset: Dataset, resolution: tuple[int, int], mode: Literal["area", "bilinear"] = "area",
                 source_resolution: tuple[int, int] | None = None):
        if mode not in DOWNSAMPLE_MODES:
            raise ValueError(f"downsample mode must be one of {DOWNSAMPLE_MODES}, got {mode!r}")
        self.source = dataset  # (not `.dataset`: that would read as a Subset in `walt encode`'s summary)
        self.height, self.width = int(resolution[0]), int(resolution[1])
        self.mode = mode
        self.source_resolution = tuple(int(v) for v in source_resolution) if source_resolution else _resolution_of(dataset)
        src = self.source_resolution
        if src is not None and (self.height > src[0] or self.width > src[1]):
            raise ValueError(f"cannot downsample {src[0]}x{src[1]} clips to a larger {self.height}x{self.width}")
        # What `walt.data.latent_cache` records about the source (and what resumption compares).
        for key in ("seed", "num_frames", "as_images", "root", "class_names", "num_classes"):
            if hasattr(dataset, key):
                setattr(self, key, getattr(dataset, key))

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.source[index])
        item["video"] = downsample_video(item["video"], (self.height, self.width), self.mode)  # (3, T, h, w)
        return item

    def describe(self) -> dict[str, Any]:
        """JSON description for the latent cache index: the source, its resolution and the filter."""
        base = getattr(self.source, "dataset", self.source)  # a Subset's underlying dataset
        d: dict[str, Any] = {"class": f"Downsampled({type(base).__name__})", "length": len(self),
                             "height": self.height, "width": self.width, "downsample_mode": self.mode}
        if self.source_resolution is not None:
            d["downsampled_from"] = list(self.source_resolution)
        for key in ("seed", "num_frames", "as_images", "class_names", "num_classes"):
            v = getattr(self, key, None)
            if isinstance(v, (int, float, str, bool)):
                d[key] = v
            elif isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v):
                d[key] = list(v)
        for key in ("frame_stride", "fps"):  # how real videos were sampled (resumption compares them)
            v = getattr(base, key, None)
            d[key] = v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        root = getattr(self, "root", None)
        if root is not None:
            d["root"] = str(root)
        return d
