"""Reading video files with PyAV (writing them is `walt.io`'s job).

Reading decodes only what a clip needs: frames before the first wanted one are skipped after
a keyframe seek (long files are not decoded from the start), and decoding stops at the last
wanted frame. Frame `i` is the frame whose presentation time is nearest `i / fps` after the
stream start, the same convention every frame-index based loader uses.

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

from walt.data.transforms import clip_indices, to_float_video

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


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as a float `(3, H, W)` in [-1, 1] (VideoReadError when it cannot be read)."""
    from PIL import UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    except (OSError, UnidentifiedImageError) as e:
        raise VideoReadError(f"{path}: cannot read it as an image ({' '.join(str(e).split())}); give a PNG or JPEG") from None
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0
