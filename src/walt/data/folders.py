"""Real video datasets decoded with PyAV: UCF-101, generic video folders / CSV lists, image folders.

Every dataset returns the same dict as `SyntheticVideos`: `{"video": (3, T, H, W) float in
[-1, 1], "label": int (-1 when unlabelled), "caption": str ("" when none), "index": int,
"path": str}`. Images are 1-frame videos `(3, 1, H, W)`, so image and video batches share one
code path (joint image-video training, SPEC.md section 2).

Clip sampling: `num_frames` (1 + 4k) frames spaced `frame_stride` source frames apart, or
resampled to `fps`; the clip start is
    "random"         a fresh uniform draw every time (training),
    "deterministic"  drawn from (seed, index, epoch); call `set_epoch` each epoch,
    "center"         the middle of the file (evaluation).
Each clip is resized to cover `resolution` (antialiased) and centre-cropped.

Files shorter than the clip's span: `pad_mode="pad"` (default) repeats the last frame,
`pad_mode="loop"` wraps around to the first; `skip_short=True` drops them at construction
instead (listed in `ds.skipped` with the reason "too short").

Unreadable files are skipped with a warning and recorded in `ds.skipped` as (path, reason):
at construction when `probe=True` (the header of every file is opened once), otherwise when
first loaded (the next readable file is returned in its place). With DataLoader workers,
load-time skips are recorded in the worker's copy only; the warnings still appear.
A dataset with no readable file is a ValueError naming the path.
"""

from __future__ import annotations

import csv
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from walt.data.transforms import (
    PAD_MODES,
    Resolution,
    clip_indices,
    parse_resolution,
    resize_center_crop,
    validate_num_frames,
)
from walt.data.video_io import VideoInfo, VideoReadError, read_video, video_info

logger = logging.getLogger("walt.data")

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SAMPLING = ("random", "deterministic", "center")
_DECODE_ERRORS = (VideoReadError, av.FFmpegError, OSError, UnidentifiedImageError)


def humanize(name: str) -> str:
    """Class folder name -> caption words: "ApplyEyeMakeup" -> "apply eye makeup"."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ")
    return " ".join(words.split()).lower()


@dataclass(frozen=True)
class _Item:
    path: Path
    label: int = -1
    caption: str = ""


def _find_files(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    exts = {e.lower() for e in extensions}
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."))


class _FileDataset(Dataset):
    """Shared machinery: an item list, up-front probing, skip-with-warning, summary log."""

    kind = "file"

    def __init__(self, items: list[_Item], source: Path, probe: bool):
        self.source = source
        self.skipped: list[tuple[str, str]] = []
        self._skipped_paths: set[str] = set()
        if probe:
            kept = []
            for item in items:
                reason = self._probe(item)
                if reason is None:
                    kept.append(item)
                else:
                    self._skip(item.path, reason)
            items = kept
        if not items:
            extra = f" ({len(self.skipped)} unreadable or too short)" if self.skipped else ""
            raise ValueError(f"no readable {self.kind} files found in {source}{extra}; check the path and extensions")
        self.items = items
        summary = f"{type(self).__name__}({source}): {len(items)} {self.kind} files, {len(self.skipped)} skipped"
        if self.skipped:
            logger.warning(summary + " (see .skipped)")
        else:
            logger.info(summary)

    def _probe(self, item: _Item) -> str | None:
        """Return None if the file looks usable, else the reason to skip it."""
        raise NotImplementedError

    def _load(self, item: _Item, index: int) -> torch.Tensor:
        raise NotImplementedError

    def _skip(self, path: Path, reason: str) -> None:
        if str(path) in self._skipped_paths:
            return
        self._skipped_paths.add(str(path))
        self.skipped.append((str(path), reason))
        warnings.warn(f"skipping {path}: {reason}", RuntimeWarning, stacklevel=3)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names is not None else 0

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} files")
        index = int(index) % len(self)
        # A file that fails now (not caught by probing) is skipped: try the next ones.
        for attempt in range(min(len(self), 16)):
            j = (index + attempt) % len(self)
            item = self.items[j]
            try:
                video = self._load(item, j)
            except _DECODE_ERRORS as e:
                self._skip(item.path, str(e) or type(e).__name__)
                continue
            return {"video": video, "label": item.label, "caption": item.caption, "index": j, "path": str(item.path)}
        raise RuntimeError(f"{self.source}: 16 consecutive files failed to load from index {index}; see .skipped")


class VideoFolder(_FileDataset):
    """Videos from a folder (searched recursively) or from a CSV list.

    Folder: with `labels=True`, the first sub-folder under `root` is the class (sorted names,
    caption = the humanised class name); files directly in `root` get label -1.
    CSV (Kinetics-style): a header with `path` and optionally `label` and `caption` columns;
    relative paths are relative to the CSV's folder; labels may be integers or class names
    (names are indexed in sorted order).
    """

    kind = "video"

    def __init__(
        self,
        source: str | Path,
        num_frames: int = 17,
        resolution: Resolution = 128,
        frame_stride: int | None = None,
        fps: float | None = None,
        *,
        labels: bool = True,
        sampling: str = "random",
        seed: int = 0,
        pad_mode: str = "pad",
        skip_short: bool = False,
        probe: bool = True,
        extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
        temporal_factor: int = 4,
        items: list[_Item] | None = None,
        class_names: list[str] | None = None,
    ):
        source = Path(source)
        self.num_frames = validate_num_frames(num_frames, temporal_factor)
        self.resolution = parse_resolution(resolution)
        if frame_stride is not None and fps is not None:
            raise ValueError("give frame_stride or fps, not both")
        if frame_stride is not None and (int(frame_stride) != frame_stride or frame_stride < 1):
            raise ValueError(f"frame_stride must be a positive integer, got {frame_stride!r}")
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if skip_short and not probe:
            raise ValueError("skip_short=True needs probe=True (frame counts are read when probing)")
        self.frame_stride, self.fps = frame_stride, fps
        self.sampling, self.seed, self.epoch = sampling, int(seed), 0
        self.pad_mode, self.skip_short = pad_mode, skip_short
        self._infos: dict[str, VideoInfo] = {}
        if items is None:
            items, class_names = self._list_source(source, labels, extensions)
        self.class_names = class_names
        super().__init__(items, source, probe)

    # -- listing
    @staticmethod
    def _list_source(source: Path, labels: bool, extensions) -> tuple[list[_Item], list[str] | None]:
        if source.is_file() and source.suffix.lower() == ".csv":
            return _read_csv(source)
        if not source.is_dir():
            raise ValueError(f"{source} is neither a folder of videos nor a .csv file list")
        files = _find_files(source, extensions)
        if not labels:
            return [_Item(f) for f in files], None
        rel = [f.relative_to(source).parts for f in files]
        class_names = sorted({parts[0] for parts in rel if len(parts) > 1})
        index = {c: i for i, c in enumerate(class_names)}
        items = [
            _Item(f, index[parts[0]], humanize(parts[0])) if len(parts) > 1 else _Item(f)
            for f, parts in zip(files, rel)
        ]
        return items, class_names

    # -- probing / loading
    def _span(self, info: VideoInfo) -> float:
        step = info.fps / self.fps if self.fps else float(self.frame_stride or 1)
        return (self.num_frames - 1) * step

    def _probe(self, item: _Item) -> str | None:
        try:
            info = video_info(item.path)
        except _DECODE_ERRORS as e:
            return str(e) or type(e).__name__
        if self.skip_short and info.num_frames < self._span(info) + 1:
            return f"too short ({info.num_frames} frames for a clip spanning {self._span(info) + 1:.0f})"
        self._infos[str(item.path)] = info
        return None

    def set_epoch(self, epoch: int) -> None:
        """Clip starts with sampling="deterministic" depend on (seed, index, epoch)."""
        self.epoch = int(epoch)

    def _load(self, item: _Item, index: int) -> torch.Tensor:
        info = self._infos.get(str(item.path)) or video_info(item.path)
        start = "center" if self.sampling == "center" else "random"
        rng = np.random.default_rng([self.seed, index, self.epoch]) if self.sampling == "deterministic" else None
        indices = clip_indices(
            info.num_frames, self.num_frames, frame_stride=self.frame_stride, fps=self.fps,
            source_fps=info.fps, start=start, rng=rng, pad_mode=self.pad_mode,
        )
        video = read_video(item.path, indices, output="float")  # (3, T, H, W)
        return resize_center_crop(video, self.resolution)


def _read_csv(path: Path) -> tuple[list[_Item], list[str] | None]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no rows; expected a header with a 'path' column and one row per video")
    if "path" not in rows[0]:
        raise ValueError(f"{path} needs a 'path' column (optional: 'label', 'caption'); found {list(rows[0])}")
    base = path.parent
    raw = [(r.get("label") or "").strip() for r in rows]
    class_names = None
    if any(raw):
        if all(re.fullmatch(r"-?\d+", x) for x in raw if x):
            labels = [int(x) if x else -1 for x in raw]
        else:
            class_names = sorted({x for x in raw if x})
            index = {c: i for i, c in enumerate(class_names)}
            labels = [index[x] if x else -1 for x in raw]
    else:
        labels = [-1] * len(rows)
    items = []
    for r, label, name in zip(rows, labels, raw):
        p = Path(r["path"].strip())
        caption = (r.get("caption") or "").strip() or (humanize(name) if class_names and name else "")
        items.append(_Item(p if p.is_absolute() else base / p, label, caption))
    return items, class_names


class UCF101(VideoFolder):
    """UCF-101 (13,320 clips, 101 action classes) from its original layout.

    `root` holds the class folders of .avi files (or a `UCF-101/` folder with them). The
    official splits `trainlist0{fold}.txt` / `testlist0{fold}.txt` are read from `root` or
    `root/ucfTrainTestlist` when present (else every file is used, with a warning); classes
    come from `classInd.txt` there (1-based in the file, 0-based here), else from the sorted
    folder names. Captions are the humanised class names ("apply eye makeup"), the prompts
    used for UCF-101 zero-shot text-to-video (SPEC.md section 5). Paths in the split files are
    matched case-insensitively (the official lists spell "HandStandPushups" where the folder
    is "HandstandPushups").
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        fold: int = 1,
        num_frames: int = 17,
        resolution: Resolution = 128,
        frame_stride: int | None = None,
        fps: float | None = None,
        extensions: tuple[str, ...] = (".avi",),
        **kwargs,
    ):
        root = Path(root)
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        if fold not in (1, 2, 3):
            raise ValueError(f"UCF-101 has folds 1, 2, 3; got {fold!r}")
        if not root.is_dir():
            raise ValueError(f"UCF-101 root {root} is not a folder")
        video_root = root / "UCF-101" if (root / "UCF-101").is_dir() else root
        names = ("classInd.txt", f"trainlist0{fold}.txt", f"testlist0{fold}.txt")
        list_dir = next((d for d in (root / "ucfTrainTestlist", root) if any((d / n).is_file() for n in names)), None)
        files = _find_files(video_root, extensions)
        by_rel = {str(f.relative_to(video_root)).replace("\\", "/").lower(): f for f in files}

        if list_dir is not None and (list_dir / "classInd.txt").is_file():
            class_names = []
            for line in (list_dir / "classInd.txt").read_text().splitlines():
                if line.strip():
                    class_names.append(line.split()[-1])  # "1 ApplyEyeMakeup"
        else:
            rel_parts = [f.relative_to(video_root).parts for f in files]
            class_names = sorted({parts[0] for parts in rel_parts if len(parts) > 1})
        class_index = {c.lower(): i for i, c in enumerate(class_names)}

        def item(path: Path) -> _Item:
            cls = path.relative_to(video_root).parts[0]
            label = class_index.get(cls.lower(), -1)
            return _Item(path, label, humanize(class_names[label]) if label >= 0 else "")

        lists = {"train": [f"trainlist0{fold}.txt"], "test": [f"testlist0{fold}.txt"]}
        lists["all"] = lists["train"] + lists["test"]
        if list_dir is not None and all((list_dir / n).is_file() for n in lists[split]):
            items, missing = [], 0
            for name in lists[split]:
                for line in (list_dir / name).read_text().splitlines():
                    if not line.strip():
                        continue
                    rel = line.split()[0].replace("\\", "/")
                    path = by_rel.get(rel.lower())
                    if path is None:
                        missing += 1
                        continue
                    items.append(item(path))
            if missing:
                logger.warning(f"UCF101({root}): {missing} files named in the {split} split are missing on disk")
        else:
            if split != "all":
                warnings.warn(
                    f"UCF101({root}): no {lists[split][0]} found (looked in {root} and {root / 'ucfTrainTestlist'}); "
                    "using every file", RuntimeWarning, stacklevel=2,
                )
            items = [item(f) for f in files]
        self.split, self.fold = split, fold
        super().__init__(
            root, num_frames, resolution, frame_stride, fps, items=items, class_names=class_names, **kwargs
        )


class ImageFolder(_FileDataset):
    """Images as 1-frame videos `(3, 1, H, W)` for joint image-video training (Pillow decode).

    With `labels=True` the first sub-folder is the class, as in `VideoFolder`.
    """

    kind = "image"

    def __init__(
        self,
        root: str | Path,
        resolution: Resolution = 128,
        *,
        labels: bool = True,
        probe: bool = True,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    ):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"{root} is not a folder of images")
        self.resolution = parse_resolution(resolution)
        items, self.class_names = VideoFolder._list_source(root, labels, extensions)
        super().__init__(items, root, probe)

    def _probe(self, item: _Item) -> str | None:
        try:
            with Image.open(item.path) as im:
                im.verify()  # header + structure check without a full decode
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            return str(e) or type(e).__name__
        return None

    def _load(self, item: _Item, index: int) -> torch.Tensor:
        with Image.open(item.path) as im:
            rgb = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8
        video = torch.from_numpy(rgb.copy()).permute(2, 0, 1).unsqueeze(1).float() / 127.5 - 1.0  # (3, 1, H, W)
        return resize_center_crop(video, self.resolution)
