"""Video files in and out with PyAV (decoding, H.264/MPEG-4 writing) and Pillow (GIF, PNG grids).

Reading decodes only what a clip needs: frames before the first wanted one are skipped after
a keyframe seek (long files are not decoded from the start), and decoding stops at the last
wanted frame. Frame `i` is the frame whose presentation time is nearest `i / fps` after the
stream start, the same convention every frame-index based loader uses.

Every writer is atomic (temp file in the same folder, then rename; `walt.checkpoint.atomic_write`):
a crash mid-write never leaves a truncated video where a good one is expected.

GIFs are written with Pillow, not PyAV: PyAV's GIF encoder uses one global palette and its
colour error is large (SPEC.md section 7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import av
import numpy as np
import torch
from PIL import Image

from walt.checkpoint import atomic_write
from walt.data.transforms import clip_indices, to_float_video, to_uint8_frames

# Container extension -> (PyAV format name, video codec) for `write_video`.
_WRITE_FORMATS = {
    ".mp4": ("mp4", "libx264"),
    ".mov": ("mov", "libx264"),
    ".mkv": ("matroska", "libx264"),
    ".avi": ("avi", "mpeg4"),
}
# Seek instead of decoding from the start when the first wanted frame is this far in.
_SEEK_MIN_FRAMES = 16


class VideoReadError(ValueError):
    """A video file could not be opened or decoded (missing, corrupt, no video stream)."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream.

    `num_frames` comes from the container's frame count when it stores one, otherwise from
    duration x fps, so it can be off by a frame or two for some files (`read_video` repeats the
    last frame for indices past the real end).
    """

    num_frames: int
    fps: float
    width: int
    height: int
    duration: float  # seconds

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return (self.height, self.width)


def _open(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"video not found: {path}")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoReadError(f"cannot open video {path}: {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path} has no video stream")
    return container


def _stream_info(container, path) -> VideoInfo:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if fps <= 0:
        raise VideoReadError(f"{path}: cannot determine the frame rate")
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    num_frames = int(stream.frames or 0)
    if num_frames <= 0:
        num_frames = max(1, int(round(duration * fps)))
    elif duration <= 0:
        duration = num_frames / fps
    return VideoInfo(num_frames, fps, stream.codec_context.width, stream.codec_context.height, duration)


def video_info(path: str | Path) -> VideoInfo:
    """Frame count, fps, size and duration of a video file, from its header (no decoding)."""
    container = _open(path)
    try:
        return _stream_info(container, path)
    finally:
        container.close()


def _frame_index(frame, start_pts: int, time_base, fps: float) -> int | None:
    if frame.pts is None or time_base is None:
        return None
    return int(round(float((frame.pts - start_pts) * time_base) * fps))


def _decode_indices(container, path, wanted: list[int], fps: float) -> dict[int, np.ndarray]:
    """Decode the frames with source indices in `wanted` (sorted, unique) -> {index: (H, W, 3) uint8}."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    time_base = stream.time_base
    start_pts = stream.start_time or 0
    first, last = wanted[0], wanted[-1]
    wanted_set = set(wanted)
    out: dict[int, np.ndarray] = {}

    def run(seeked: bool) -> bool:
        """Decode; return False when a seek overshot the first wanted frame (caller retries)."""
        counter = -1
        for frame in container.decode(stream):
            idx = _frame_index(frame, start_pts, time_base, fps)
            if idx is None:
                if seeked:  # without timestamps a seek position cannot be recovered
                    return False
                counter += 1
                idx = counter
            if seeked and not out and idx > first:
                return False
            if idx in wanted_set and idx not in out:
                out[idx] = frame.to_ndarray(format="rgb24")
            if idx >= last:
                break
        return True

    seeked = first >= _SEEK_MIN_FRAMES and time_base is not None
    try:
        if seeked:
            target = start_pts + int(math.floor(first / fps / float(time_base)))
            container.seek(target, stream=stream, backward=True, any_frame=False)
        if not run(seeked):
            out.clear()
            container.seek(start_pts, stream=stream, backward=True, any_frame=False)
            run(False)
    except av.FFmpegError as e:
        if not out:
            raise VideoReadError(f"cannot decode {path}: {e}") from None
        # A damaged tail: keep the frames decoded so far, the rest is padded by the caller.
    return out


def read_video(
    path: str | Path,
    indices: Sequence[int] | None = None,
    *,
    start_sec: float = 0.0,
    num_frames: int | None = None,
    frame_stride: int | None = None,
    fps: float | None = None,
    output: str = "uint8",
) -> torch.Tensor:
    """Decode frames of a video file.

    Which frames: explicit source frame `indices` (any order, repeats allowed), or a run
    starting at `start_sec` of `num_frames` frames (None: to the end) spaced `frame_stride`
    source frames apart or resampled to `fps` (nearest source frame to each target time).
    Indices past the real end of the stream get the last decoded frame (container frame
    counts are estimates for some formats).

    Returns uint8 `(T, H, W, 3)` for `output="uint8"`, or float `(3, T, H, W)` in [-1, 1] for
    `output="float"`. Raises VideoReadError for a missing, corrupt or empty file.
    """
    if output not in ("uint8", "float"):
        raise ValueError(f"output must be 'uint8' or 'float', got {output!r}")
    container = _open(path)
    try:
        info = _stream_info(container, path)
        if indices is None:
            first = int(round(max(start_sec, 0.0) * info.fps))
            if first >= info.num_frames:
                raise ValueError(f"start_sec={start_sec} is past the end of {path} ({info.duration:.2f} s)")
            remaining = max(info.num_frames - first, 1)
            step = info.fps / fps if fps else float(frame_stride or 1)
            count = num_frames if num_frames is not None else max(1, int((remaining - 1) // step) + 1)
            indices = clip_indices(
                first + remaining, count, frame_stride=frame_stride, fps=fps, source_fps=info.fps,
                start=first, pad_mode="pad",
            )
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError("no frames requested (empty indices)")
        if min(indices) < 0:
            raise ValueError(f"frame indices must be >= 0, got {min(indices)}")
        wanted = sorted(set(indices))
        decoded = _decode_indices(container, path, wanted, info.fps)
    finally:
        container.close()
    if not decoded:
        raise VideoReadError(f"{path}: no frame could be decoded at indices {wanted[0]}..{wanted[-1]}")
    # Past-the-end indices (estimated frame counts) take the last frame that exists.
    have = sorted(decoded)
    frames = []
    for i in indices:
        j = i if i in decoded else have[max(0, np.searchsorted(have, i, side="right") - 1)]
        frames.append(decoded[j])
    video = torch.from_numpy(np.stack(frames))  # (T, H, W, 3)
    return to_float_video(video) if output == "float" else video


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
