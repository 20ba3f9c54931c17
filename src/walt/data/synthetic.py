"""A built-in, procedurally rendered, class-labelled video dataset (no download; the demo's and tests' default).

Eight motion classes (bouncing, rotating, growing, orbiting, sliding, pulsing, panning, flipping)
of textured shapes on varied backgrounds, each sample a deterministic function of `(seed, index)`
at any resolution and frame count, usable as a still image (its first frame) and with a short
caption for text conditioning. What a clip shows and how it is drawn is `walt.data.synthetic_scene`;
this module holds the torch Datasets over those clips.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from walt.data.synthetic_scene import CLASS_NAMES, ClipParams, caption_for, render_clip, sample_clip_params
from walt.data.transforms import Resolution, parse_resolution

__all__ = ["SyntheticImages", "SyntheticVideos"]


class SyntheticVideos(Dataset):
    """Procedural class-labelled videos: `ds[i]` depends only on `(seed, i)`.

    Returns dicts `{"video": (3, T, H, W) float in [-1, 1], "label": int, "caption": str,
    "index": int}`. Labels cycle through the classes (`label = i % num_classes`), so any
    prefix of the dataset is class-balanced. `classes` restricts (and orders) the motion
    classes; labels then index into `ds.class_names`. `as_images=True` yields each sample's
    first frame as a 1-frame video `(3, 1, H, W)` (joint image-video training).
    """

    def __init__(
        self,
        num_samples: int,
        num_frames: int = 17,
        resolution: Resolution = 64,
        seed: int = 0,
        classes: list[str] | tuple[str, ...] | None = None,
        as_images: bool = False,
    ):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.class_names = tuple(classes) if classes is not None else CLASS_NAMES
        unknown = [c for c in self.class_names if c not in CLASS_NAMES]
        if unknown or not self.class_names or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"classes must be distinct names from {CLASS_NAMES}; got {list(self.class_names)}")
        self.num_samples = int(num_samples)
        self.num_frames = 1 if as_images else int(num_frames)
        self.height, self.width = parse_resolution(resolution)
        self.seed = int(seed)
        self.as_images = as_images

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.num_samples

    def _check_index(self, index: int) -> int:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        return index % self.num_samples

    def params(self, index: int) -> tuple[int, ClipParams]:
        """(label, ClipParams) of sample `index`; `render_clip` turns them into the clip."""
        index = self._check_index(index)
        rng = np.random.default_rng([self.seed, index])  # independent stream per (seed, index)
        return index % self.num_classes, sample_clip_params(rng)

    def caption(self, index: int) -> str:
        label, p = self.params(index)
        return caption_for(self.class_names[label], p)

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(int(index))
        label, p = self.params(index)
        name = self.class_names[label]
        video = render_clip(name, p, self.num_frames, self.height, self.width)
        return {"video": video, "label": label, "caption": caption_for(name, p), "index": index}


class SyntheticImages(SyntheticVideos):
    """The first frames of `SyntheticVideos` as 1-frame videos `(3, 1, H, W)` (same labels/captions)."""

    def __init__(self, num_samples: int, resolution: Resolution = 64, seed: int = 0, classes=None):
        super().__init__(num_samples, 1, resolution, seed, classes, as_images=True)
