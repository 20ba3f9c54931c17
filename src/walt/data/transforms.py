"""Clip transforms: frame-count validation, frame sampling, resize + centre crop, value range.

Everything downstream of the decoder speaks one format: a float video `(3, T, H, W)` with
pixels in [-1, 1] (CONTRIBUTING.md). Decoders produce uint8 `(T, H, W, 3)`; `to_float_video`
bridges the two (`walt.io.to_uint8_frames` goes back for writers).

The causal autoencoder maps `1 + 4k` frames to `1 + k` latent frames (SPEC.md section 1), so
every clip length the data layer hands out is validated with `validate_num_frames`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

Resolution = int | tuple[int, int]

PAD_MODES = ("pad", "loop")


def validate_num_frames(num_frames: int, temporal_factor: int = 4, name: str = "num_frames") -> int:
    """Check that `num_frames` is `1 + temporal_factor * k` (k >= 0); return it.

    1 frame is an image; 5, 9, 13, 17, ... are videos for the default temporal factor 4.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {num_frames!r}")
    n = int(num_frames)
    if n < 1 or (n - 1) % temporal_factor != 0:
        lo = 1 + temporal_factor * ((n - 1) // temporal_factor) if n > 1 else 1
        hi = lo + temporal_factor
        raise ValueError(
            f"{name} must be 1 + {temporal_factor}k (1, {1 + temporal_factor}, {1 + 2 * temporal_factor}, "
            f"{1 + 4 * temporal_factor}, ...) for the causal autoencoder; got {n}, use {lo} or {hi}"
        )
    return n


def parse_resolution(resolution: Resolution, name: str = "resolution") -> tuple[int, int]:
    """`64` -> (64, 64); `(H, W)` -> (H, W). Raises ValueError on non-positive sizes."""
    if isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool):
        hw = (int(resolution), int(resolution))
    elif isinstance(resolution, Sequence) and len(resolution) == 2:
        hw = (int(resolution[0]), int(resolution[1]))
    else:
        raise ValueError(f"{name} must be an int or a (height, width) pair, got {resolution!r}")
    if min(hw) < 1:
        raise ValueError(f"{name} must be positive, got {resolution!r}")
    return hw


def to_float_video(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 frames `(T, H, W, 3)` -> float32 video `(3, T, H, W)` in [-1, 1]."""
    frames = torch.as_tensor(frames)
    if frames.dtype != torch.uint8 or frames.ndim != 4:
        raise ValueError(f"expected uint8 frames (T, H, W, C), got {frames.dtype} {tuple(frames.shape)}")
    return rearrange(frames, "t h w c -> c t h w").float().div_(127.5).sub_(1.0)


def resize_short_side(video: torch.Tensor, size: int, antialias: bool = True) -> torch.Tensor:
    """Resize a float video `(C, T, H, W)` so that its shorter side is `size` (bilinear)."""
    c, t, h, w = video.shape
    scale = size / min(h, w)
    new_hw = (max(size, round(h * scale)), max(size, round(w * scale)))
    return _resize(video, new_hw, antialias)


def _resize(video: torch.Tensor, hw: tuple[int, int], antialias: bool) -> torch.Tensor:
    if tuple(video.shape[-2:]) == tuple(hw):
        return video
    frames = rearrange(video, "c t h w -> t c h w")
    # Antialiasing matters when shrinking: without it, stripes and fine texture alias into
    # moire that the autoencoder then has to learn to reproduce.
    frames = F.interpolate(frames, size=hw, mode="bilinear", align_corners=False, antialias=antialias)
    return rearrange(frames, "t c h w -> c t h w")


def center_crop(video: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Centre crop `(C, T, H, W)` to `hw`; the video must be at least that large."""
    h, w = video.shape[-2:]
    th, tw = hw
    if th > h or tw > w:
        raise ValueError(f"cannot centre-crop a {h}x{w} video to {th}x{tw}; resize it first")
    top, left = (h - th) // 2, (w - tw) // 2
    return video[..., top : top + th, left : left + tw]


def resize_center_crop(video: torch.Tensor, resolution: Resolution, antialias: bool = True) -> torch.Tensor:
    """Resize `(C, T, H, W)` to cover `resolution` (keeping the aspect ratio), then centre crop.

    For a square target this is the usual "resize the short side, crop the centre".
    """
    th, tw = parse_resolution(resolution)
    h, w = video.shape[-2:]
    scale = max(th / h, tw / w)
    new_hw = (max(th, math.ceil(h * scale - 1e-6)), max(tw, math.ceil(w * scale - 1e-6)))
    return center_crop(_resize(video, new_hw, antialias), (th, tw))


def clip_indices(
    num_available: int,
    num_frames: int,
    *,
    frame_stride: int | None = None,
    fps: float | None = None,
    source_fps: float | None = None,
    start: str | int = "random",
    rng: np.random.Generator | None = None,
    pad_mode: str = "pad",
) -> list[int]:
    """Source frame indices of a clip of `num_frames` frames.

    Spacing: `frame_stride` source frames apart, or resampled to `fps` (needs `source_fps`;
    frames nearest to the target times are taken, so 30 -> 8 fps steps by 3.75 frames);
    neither means every frame. `start` is "random" (uniform over valid starts, drawn from
    `rng`), "center", "first", or an explicit first source index.

    A source shorter than the clip's span is handled by `pad_mode`: "pad" repeats the last
    frame, "loop" wraps around to the first frame (the clip then starts at frame 0).
    """
    if num_available < 1:
        raise ValueError("the video has no frames")
    if frame_stride is not None and fps is not None:
        raise ValueError("give frame_stride or fps, not both")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    if fps is not None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not source_fps or source_fps <= 0:
            raise ValueError("resampling to a target fps needs the source fps")
        step = float(source_fps) / float(fps)
    else:
        step = float(frame_stride or 1)
        if step < 1 or step != int(step):
            raise ValueError(f"frame_stride must be a positive integer, got {frame_stride!r}")
    span = (num_frames - 1) * step  # source frames covered, first to last
    slack = (num_available - 1) - span
    if isinstance(start, (int, np.integer)) and not isinstance(start, bool):
        first = float(start)
    elif start == "random":
        rng = rng if rng is not None else np.random.default_rng()
        first = float(rng.uniform(0.0, slack)) if slack > 0 else 0.0
    elif start == "center":
        first = max(slack, 0.0) / 2.0
    elif start == "first":
        first = 0.0
    else:
        raise ValueError(f"start must be 'random', 'center', 'first' or an int, got {start!r}")
    if step == int(step):
        first = float(math.floor(first))  # integer strides stay on source frames
    raw = [int(round(first + k * step)) for k in range(num_frames)]
    if pad_mode == "loop":
        return [i % num_available for i in raw]
    return [min(i, num_available - 1) for i in raw]
