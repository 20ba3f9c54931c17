"""The clips a study trains and evaluates on: a training pool, classifier clips, two held-out sets.

    data = builtin_data(cfg)                 # RestrictedVideos of cfg's classes and restriction
    data = folder_data(dataset, cfg, "...")  # a folder / CSV / UCF-101 dataset, split in three

`heldout` holds 2 x `cfg.heldout_clips` clips that no network trains on: the first half is the
reference set A (every FD is measured against it), the second half B (the real-vs-real floor,
and the clips the autoencoders reconstruct). The motion classifier learns from `classifier`
(real clips of the training distribution). A `StudyData` is plain data: it is sent to the
worker processes as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["StudyData", "builtin_data", "folder_data", "stack_clips"]

HELDOUT_SEED_OFFSET = 20_011  # the demo's held-out seed offset: clips no stage trains on


@dataclass
class StudyData:
    train: Any  # dataset of {"video", "label"}: the autoencoder's pool and the latent cache
    classifier: Any  # labelled real clips for the motion classifier
    heldout: Any  # 2 x heldout_clips clips: A = the first half, B = the second
    class_names: tuple[str, ...]
    description: str
    key: dict[str, Any]  # what the clips are (the classifier's cache key)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def stack_clips(dataset, ids) -> tuple[torch.Tensor, torch.Tensor]:
    """(videos (N, 3, T, H, W), labels (N,)) of `dataset[i]` for i in `ids`."""
    items = [dataset[int(i)] for i in ids]
    return torch.stack([it["video"] for it in items]), torch.tensor([int(it["label"]) for it in items])


def builtin_data(cfg) -> StudyData:
    """The built-in clips with cfg's restriction: training seed `cfg.seed`, held-out seed + 20011."""
    from walt.data.restricted import RestrictedVideos

    kw = cfg.data_kwargs()
    train = RestrictedVideos(cfg.train_clips, seed=cfg.seed, **kw)
    restricted = bool(cfg.backgrounds or cfg.textures or cfg.shapes) or cfg.shape_scale != 1 or cfg.speed_scale != 1
    what = "the built-in procedural dataset" + (
        f" restricted as the CPU demo's (backgrounds {list(cfg.backgrounds) or 'all'}, textures "
        f"{list(cfg.textures) or 'all'}, shapes {list(cfg.shapes) or 'all'}, shape scale {cfg.shape_scale:g}, "
        f"speed x{cfg.speed_scale:g})" if restricted else "")
    return StudyData(train=train, classifier=RestrictedVideos(cfg.classifier_train_clips, seed=cfg.seed, **kw),
                     heldout=RestrictedVideos(2 * cfg.heldout_clips, seed=cfg.seed + HELDOUT_SEED_OFFSET, **kw),
                     class_names=tuple(cfg.classes), description=f"{what}; held-out clips from seed "
                     f"{cfg.seed + HELDOUT_SEED_OFFSET}, training clips from seed {cfg.seed}",
                     key={"dataset": "walt.data.restricted.RestrictedVideos", "seed": cfg.seed, **kw})


def folder_data(dataset, cfg, name: str) -> StudyData:
    """A labelled dataset split in three: the last 2 x heldout_clips clips are held out, the
    training pool (also the classifier's clips) comes first."""
    from torch.utils.data import Subset

    n_held = 2 * cfg.heldout_clips
    if len(dataset) < n_held + 2:
        raise ValueError(f"{name} has {len(dataset)} clips; the study holds out 2 x heldout_clips = {n_held} "
                         f"and needs >= 2 more to train on (lower heldout_clips with --set)")
    n_train = min(cfg.train_clips, len(dataset) - n_held)
    train, held = Subset(dataset, range(n_train)), Subset(dataset, range(len(dataset) - n_held, len(dataset)))
    names = tuple(getattr(dataset, "class_names", None) or ())
    if not names:
        names = tuple(str(k) for k in range(1 + max(int(dataset[i]["label"]) for i in range(len(dataset)))))
    return StudyData(train=train, classifier=train, heldout=held, class_names=names,
                     description=f"{name} ({n_train} training + {n_held} held-out clips)",
                     key={"dataset": name, "clips": len(dataset), "frames": cfg.num_frames,
                          "resolution": cfg.resolution})
