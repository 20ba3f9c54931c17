"""Where the autoencoder loop's clips come from: a `batch_fn(step)` or a dataset split over ranks.

Either source makes the data position explicit, so a resumed run sees exactly the batches the
uninterrupted run would have seen:
  - `batch_fn(step) -> (B, 3, T, H, W)`: the GLOBAL batch of `step`, a deterministic function of
    the step (the position is the step itself). Under torchrun every rank calls it and keeps
    its 1/world_size share, so it suits cheap, procedural data;
  - a map-style dataset (`len(ds)`, `ds[i]` a `(3, T, H, W)` tensor or a dict with "video"):
    a seeded permutation per epoch, cut into global batches, each rank loading only its share
    (`walt.train.batches.ResumableBatchSampler`, the denoiser loop's sampler); the
    position (epoch, batch in epoch) goes into every checkpoint. Datasets with `set_epoch`
    (real video folders: the clip start depends on (seed, index, epoch)) are told the epoch.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from walt.train.batches import ResumableBatchSampler

__all__ = ["VAEBatches"]


def _is_dataset(data: Any) -> bool:
    return hasattr(data, "__len__") and hasattr(data, "__getitem__")


def _epoch_target(ds: Any) -> Any:
    """The (possibly wrapped, e.g. by Subset) dataset that has `set_epoch`, or None."""
    while ds is not None and not hasattr(ds, "set_epoch"):
        ds = getattr(ds, "dataset", None)
    return ds


class VAEBatches:
    """`batches.get(step) -> (B_rank, 3, T, H, W)` float32 on the CPU: this rank's share of the global batch."""

    def __init__(self, data: Callable[[int], Tensor] | Any, global_batch: int, seed: int, rank: int, world: int):
        if global_batch % world:
            raise ValueError(f"batch_size {global_batch} must be divisible by the world size {world}")
        self.global_batch, self.rank, self.world = global_batch, rank, world
        self.per_rank = global_batch // world
        self.sampler: ResumableBatchSampler | None = None
        self.batch_fn: Callable[[int], Tensor] | None = None
        if _is_dataset(data):
            self.dataset = data
            self.sampler = ResumableBatchSampler(len(data), global_batch, seed=seed, rank=rank, world_size=world)
            self._epoch_ds = _epoch_target(data)
        elif callable(data):
            self.batch_fn = data
        else:
            raise ValueError(f"train_vae needs a batch_fn(step) or a dataset, got {type(data).__name__}")

    @property
    def epoch(self) -> int | None:
        return self.sampler.epoch if self.sampler is not None else None

    def get(self, step: int) -> Tensor:
        if self.batch_fn is not None:
            x = self.batch_fn(step)
            if not isinstance(x, Tensor) or x.ndim != 5:
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"batch_fn({step}) must return a video tensor (B, 3, T, H, W), got {shape}")
            if x.shape[0] != self.global_batch:
                raise ValueError(f"batch_fn({step}) returned {x.shape[0]} clips but batch_size={self.global_batch}; "
                                 "make them agree")
            x = x[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
        else:
            ids = self.sampler.next_indices()  # (B_rank,) this rank's share of the next global batch
            if self._epoch_ds is not None:
                self._epoch_ds.set_epoch(self.sampler.epoch)
            x = torch.stack([self._video(int(i)) for i in ids])
        return x.to(torch.float32)  # (B_rank, 3, T, H, W)

    def _video(self, index: int) -> Tensor:
        item = self.dataset[index]
        video = item["video"] if isinstance(item, dict) else item
        if not isinstance(video, Tensor) or video.ndim != 4:
            raise ValueError(f"dataset item {index} must be a (3, T, H, W) tensor or a dict with 'video', "
                             f"got {type(video).__name__}")
        return video

    def state_dict(self, step: int) -> dict[str, Any]:
        if self.sampler is None:
            return {"kind": "batch_fn", "position": step}  # batch_fn(step) is the next batch
        return {"kind": "dataset", **self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        kind = (state or {}).get("kind", "batch_fn")  # checkpoints before datasets were supported: batch_fn
        if (kind == "dataset") != (self.sampler is not None):
            now = "a dataset" if self.sampler is not None else "a batch_fn"
            raise ValueError(f"the checkpoint was trained from {'a dataset' if kind == 'dataset' else 'a batch_fn'} "
                             f"but this run reads {now}; resume with the same kind of data source")
        if self.sampler is not None:
            self.sampler.load_state_dict({k: v for k, v in state.items() if k != "kind"})
