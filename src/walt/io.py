"""Files written atomically: JSON, videos (MP4 / GIF) and frame-grid PNGs.

Every writer goes through `atomic_write`: the bytes land in a temporary file in the same
folder, are fsync'ed, then renamed over the target, so a crash mid-write never leaves a
truncated file where a good one is expected (checkpoints, caches and reports all rely on it).

Videos are float `(3, T, H, W)` in [-1, 1] or uint8 (`to_uint8_frames` accepts both layouts).
GIFs are written with Pillow, not PyAV: PyAV's GIF encoder uses one global palette and its
colour error is large (SPEC §7).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np
import torch
from einops import rearrange
from PIL import Image

# Container extension -> (PyAV format name, video codec) for `write_video`.
_WRITE_FORMATS = {
    ".mp4": ("mp4", "libx264"),
    ".mov": ("mov", "libx264"),
    ".mkv": ("matroska", "libx264"),
    ".avi": ("avi", "mpeg4"),
}


def atomic_write(path: str | Path, write_fn: Callable[[str], Any]) -> None:
    """Call `write_fn(tmp_path)` then atomically rename the temp file onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, data: Any, **dumps_kwargs: Any) -> Path:
    """`data` as indented JSON at `path`, atomically (`dumps_kwargs` go to `json.dumps`, e.g. default=float)."""
    text = json.dumps(data, indent=2, **dumps_kwargs)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return Path(path)


def read_json(path: str | Path) -> Any:
    """The JSON document at `path`, or None when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------------- videos


def to_uint8_frames(video: torch.Tensor | np.ndarray) -> np.ndarray:
    """A video in either layout -> uint8 numpy frames `(T, H, W, 3)`.

    Accepted: float `(3, T, H, W)` in [-1, 1] (clamped), or uint8 in `(3, T, H, W)` or
    `(T, H, W, 3)` layout (the last axis of size 3 decides). Grey videos (1 channel) are
    repeated to RGB.
    """
    v = torch.as_tensor(video).detach().cpu()
    if v.ndim != 4:
        raise ValueError(f"expected a video with 4 axes (3, T, H, W), got shape {tuple(v.shape)}")
    if v.dtype == torch.uint8:
        if v.shape[-1] in (1, 3) and v.shape[0] not in (1, 3):
            frames = v
        elif v.shape[0] in (1, 3):
            frames = rearrange(v, "c t h w -> t h w c")
        else:
            frames = v
    elif v.is_floating_point():
        if v.shape[0] not in (1, 3):
            raise ValueError(f"float videos must be (3, T, H, W) in [-1, 1], got shape {tuple(v.shape)}")
        frames = rearrange(v.float(), "c t h w -> t h w c").add(1.0).mul(127.5).round().clamp(0, 255)
        frames = frames.to(torch.uint8)
    else:
        raise ValueError(f"videos must be float in [-1, 1] or uint8, got dtype {v.dtype}")
    if frames.shape[-1] == 1:
        frames = frames.expand(-1, -1, -1, 3)
    if frames.shape[-1] != 3:
        raise ValueError(f"expected 3 colour channels, got shape {tuple(v.shape)}")
    return np.ascontiguousarray(frames.numpy())


def _even_pad(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row / column when odd."""
    t, h, w, c = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frames


def write_video(
    path: str | Path, video: torch.Tensor | np.ndarray, fps: float = 8, *, codec: str | None = None,
    crf: int = 18,
) -> Path:
    """Encode a video (float `(3, T, H, W)` in [-1, 1] or uint8 `(3, T, H, W)` / `(T, H, W, 3)`).

    The container follows the extension (.mp4 / .mov / .mkv: H.264, .avi: MPEG-4 part 2),
    pixels are yuv420p, odd sizes are padded to even by repeating the edge. Atomic.
    """
    path = Path(path)
    if path.suffix.lower() not in _WRITE_FORMATS:
        raise ValueError(f"unsupported video extension {path.suffix!r}; use one of {sorted(_WRITE_FORMATS)}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    fmt, default_codec = _WRITE_FORMATS[path.suffix.lower()]
    codec = codec or default_codec
    frames = _even_pad(to_uint8_frames(video))
    rate = _as_fraction(fps)

    def write(tmp: str) -> None:
        with av.open(tmp, mode="w", format=fmt) as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            if codec in ("libx264", "h264"):
                stream.options = {"crf": str(crf), "preset": "medium"}
            else:
                stream.bit_rate = 8_000_000  # MPEG-4 part 2 has no crf; a generous bitrate
                stream.options = {"qscale": "2"}
            for f in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    atomic_write(path, write)
    return path


def _as_fraction(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


def write_mp4(path: str | Path, video: torch.Tensor | np.ndarray, fps: float = 8, crf: int = 18) -> Path:
    """Write an H.264 / yuv420p MP4 (see `write_video` for the accepted layouts). Atomic."""
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"write_mp4 writes .mp4 files, got {path.name!r}; use write_video for other containers")
    return write_video(path, video, fps, codec="libx264", crf=crf)


def write_gif(path: str | Path, video: torch.Tensor | np.ndarray, fps: float = 8, loop: int = 0) -> Path:
    """Write an animated GIF with Pillow (an adaptive palette per frame). Atomic.

    GIF frame delays are stored in 10 ms units, so fps is approximate (8 fps -> 120 ms).
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    frames = to_uint8_frames(video)
    images = [Image.fromarray(f) for f in frames]
    duration = max(20, int(round(1000.0 / fps / 10.0)) * 10)
    path = Path(path)

    def write(tmp: str) -> None:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=loop,
            optimize=False, disposal=1,
        )

    atomic_write(path, write)
    return path


def frame_grid(
    videos: torch.Tensor | np.ndarray, max_frames: int | None = None, pad: int = 2, pad_value: int = 255
) -> np.ndarray:
    """Tile videos `(N, 3, T, H, W)` (float in [-1, 1] or uint8) into one uint8 image `(rows, cols, 3)`.

    Rows are samples, columns frames; with `max_frames` the columns are evenly spaced frames
    (always including the first and the last).
    """
    v = torch.as_tensor(videos)
    if v.ndim == 4:
        v = v.unsqueeze(0)
    if v.ndim != 5:
        raise ValueError(f"expected videos (N, 3, T, H, W), got shape {tuple(v.shape)}")
    n, _, t, h, w = v.shape
    cols = list(range(t))
    if max_frames is not None and t > max_frames:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        cols = sorted({int(round(x)) for x in np.linspace(0, t - 1, max_frames)})
    grid = np.full((n * h + (n + 1) * pad, len(cols) * w + (len(cols) + 1) * pad, 3), pad_value, np.uint8)
    for r in range(n):
        frames = to_uint8_frames(v[r])  # (T, H, W, 3)
        for c, fi in enumerate(cols):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[y : y + h, x : x + w] = frames[fi]
    return grid


def write_frame_grid_png(
    path: str | Path, videos: torch.Tensor | np.ndarray, max_frames: int | None = 9, pad: int = 2
) -> Path:
    """Save `frame_grid(videos, max_frames, pad)` as a PNG (rows = samples, columns = frames). Atomic."""
    grid = frame_grid(videos, max_frames=max_frames, pad=pad)
    path = Path(path)
    atomic_write(path, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))
    return path
