"""Where the denoiser loop's batches come from: latent caches read in a restorable order.

    source = LatentBatches(videos, cfg, labels=True, image_dataset=images, text=captions)  # base, joint
    source = PairBatches(high_res, low_res, cfg, scale=2, text=captions)                  # an SR stage
    batch = source.next_batch(step)   # this rank's {"z", "y"?, "text"?, "text_mask"?, "lowres"?, "kind"}

A batch source hands `walt.train.denoiser_loop.train_denoiser` one dict of CPU tensors per step (the
loop moves them to the device and cuts micro-batches); "z" is always the normalised target
latents (B_rank, c, t, h, w). It also says what the checkpoints record about the data
(`describe`, `export_extras`), checks the data against the network (`check`) and saves / restores
its position (`state_dict` / `load_state_dict`), so a resumed run sees exactly the batches the
uninterrupted run would have seen. Any object with these methods can be plugged in.

The order is `ResumableBatchSampler`: a seeded permutation per epoch, cut into global batches,
each rank taking its share.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch

from walt.autoencoder.latent_stats import LatentStats
from walt.train.distributed import get_rank, get_world_size

__all__ = ["ResumableBatchSampler", "LatentBatches", "PairBatches", "TensorBatches", "is_image_step", "check_latents", "check_text",
           "check_pair_caches"]


class ResumableBatchSampler:
    """Deterministic, restorable batches: a seeded permutation per epoch, split across ranks.

    Epoch e visits `torch.randperm(num_samples)` drawn from a generator seeded with
    (seed, e); consecutive slices of `global_batch` indices form the global batches (the last
    incomplete slice is dropped, like DistributedSampler(drop_last=True)); rank r takes the r-th
    of `world_size` equal parts of each. The data position is (epoch, batch in epoch): save it with
    `state_dict()`, restore it with `load_state_dict()`, and a resumed run sees exactly the same
    batches. Because the permutation is global, the global batches do not depend on world_size.
    """

    def __init__(self, num_samples: int, global_batch: int, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, shuffle: bool = True):
        self.world_size = get_world_size() if world_size is None else world_size
        self.rank = get_rank() if rank is None else rank
        if global_batch < 1 or global_batch % self.world_size:
            raise ValueError(f"global batch {global_batch} must be a positive multiple of the world size {self.world_size}")
        if num_samples < global_batch:
            raise ValueError(f"the dataset has {num_samples} items, fewer than one global batch of {global_batch}; "
                             "lower batch_size or add data")
        self.num_samples, self.global_batch, self.seed, self.shuffle = num_samples, global_batch, seed, shuffle
        self.batches_per_epoch = num_samples // global_batch
        self.epoch, self.position = 0, 0
        self._perm: torch.Tensor | None = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            if self.shuffle:
                g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % (2**63))
                self._perm = torch.randperm(self.num_samples, generator=g)
            else:
                self._perm = torch.arange(self.num_samples)
        return self._perm

    def next_global(self) -> torch.Tensor:
        """The next global batch (global_batch,) of dataset indices; advances the position."""
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
        lo = self.position * self.global_batch
        batch = self._permutation()[lo:lo + self.global_batch]
        self.position += 1
        return batch

    def next_indices(self) -> torch.Tensor:
        """This rank's share (global_batch / world_size,) of the next global batch."""
        per_rank = self.global_batch // self.world_size
        return self.next_global()[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __iter__(self) -> Iterator[list[int]]:
        """Iterate this rank's batches to the end of the current epoch (usable as a DataLoader batch_sampler)."""
        while self.position < self.batches_per_epoch:
            yield self.next_indices().tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "num_samples": self.num_samples, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "num_samples", "global_batch"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(f"data position was saved with {key}={state[key]}, now {getattr(self, key)}; "
                                 "resume with the same dataset, batch size and seed")
        self.epoch, self.position, self._perm = int(state["epoch"]), int(state["position"]), None


def is_image_step(step: int, ratio: float) -> bool:
    """Step `step` takes an image batch: exactly round(ratio * n) of any n first steps do (0.5 alternates)."""
    return ratio > 0 and math.floor((step + 1) * ratio + 1e-9) > math.floor(step * ratio + 1e-9)


def _sampler(ds, global_batch: int, seed: int, grad_accum: int) -> ResumableBatchSampler:
    world = get_world_size()
    if global_batch % (world * grad_accum):
        raise ValueError(f"batch size {global_batch} must be divisible by world_size x grad_accum = "
                         f"{world} x {grad_accum}")
    return ResumableBatchSampler(len(ds), global_batch, seed=seed, rank=get_rank(), world_size=world)


def _text_batch(text, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    tok, mask = text.batch(ids)  # (B, L, D) float32, (B, L) bool
    return {"text": tok, "text_mask": mask}


# ----------------------------------------------------------------------------- sources


class LatentBatches:
    """Video latents with their labels and captions; with `image_dataset`, joint image-video steps.

    Joint training (SPEC §2): `cfg.image_ratio` of the steps take a batch of 1-frame image latents
    from a second cache of the same autoencoder (`is_image_step`), normalised with the VIDEO
    statistics (one latent space), without captions. `labels`: pass the class labels (a
    class-conditional network).
    """

    def __init__(self, dataset, cfg, labels: bool, image_dataset=None, text=None):
        self.dataset, self.image_dataset, self.text, self.labels = dataset, image_dataset, text, labels
        self.stats: LatentStats = dataset.stats
        self.vae_sha256 = dataset.vae_sha256
        self.image_ratio = cfg.image_ratio if image_dataset is not None else 0.0
        self.uses_images = self.image_ratio > 0  # DDP: image steps leave the spatiotemporal blocks unused
        if self.uses_images and image_dataset.vae_sha256 != self.vae_sha256:
            raise ValueError("the image cache was encoded by a different VAE than the video cache; re-encode it")
        self.video = _sampler(dataset, cfg.batch_size, cfg.seed, cfg.grad_accum)
        self.image = (_sampler(image_dataset, cfg.image_batch_size or cfg.batch_size, cfg.seed + 7919, cfg.grad_accum)
                      if self.uses_images else None)
        self.text_info = dict(text.encoder_info) if text is not None else None

    def check(self, net_config) -> None:
        check_latents(self.dataset, net_config, "video cache")
        if self.uses_images:
            check_latents(self.image_dataset, net_config, "image cache")
        check_text(self.text, self.dataset, net_config)

    def next_batch(self, step: int) -> dict[str, Any]:
        image_step = self.uses_images and is_image_step(step, self.image_ratio)
        ds, sampler = (self.image_dataset, self.image) if image_step else (self.dataset, self.video)
        ids = sampler.next_indices()  # (B_rank,) this rank's share of the global batch
        batch = {"z": self.stats.normalize(ds.latents(ids, raw=True)),  # (B_rank, c, t, h, w), video stats for both
                 "kind": "image" if image_step else "video", "epoch": sampler.epoch}
        if self.labels:
            batch["y"] = ds.labels[ids]
        if self.text is not None and not image_step:
            batch.update(_text_batch(self.text, ids))
        return batch

    def describe(self) -> dict[str, Any]:
        """The "cache" entry of a training state."""
        return {"vae_sha256": self.vae_sha256, "dir": str(self.dataset.cache_dir),
                "image_dir": str(self.image_dataset.cache_dir) if self.uses_images else None}

    def export_extras(self) -> dict[str, Any]:
        """What the exported weights record about the data (read back by `walt.cascade.Stage`)."""
        out = {"latent_stats": self.stats.to_dict(), "vae_sha256": self.vae_sha256}
        if self.text_info is not None:
            out["text_encoder"] = self.text_info
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"video": self.video.state_dict(), "image": self.image.state_dict() if self.image is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.video.load_state_dict(state["video"])
        if self.image is not None and state.get("image") is not None:
            self.image.load_state_dict(state["image"])


class PairBatches:
    """High-res latents ("z") and the low-res latents ("lowres") of the same clips: an SR stage's pairs.

    The caches hold the same clips encoded at two resolutions by the same autoencoder
    (`check_pair_caches`; the low-res side is the high-res pixels downsampled, `walt.data.downsample`).
    Each side is normalised with its own cache's statistics; both are stored with the stage, the
    low-res ones are what `walt.cascade.sr.super_resolve` normalises the previous stage's output with.
    """

    uses_images = False

    def __init__(self, dataset, lowres_dataset, cfg, scale: int = 2, text=None):
        if cfg.sample_every:
            raise ValueError("periodic samples of an SR stage would need low-res latents; set sample_every=0")
        check_pair_caches(dataset, lowres_dataset, scale)
        self.dataset, self.lowres, self.text = dataset, lowres_dataset, text
        self.stats: LatentStats = dataset.stats
        self.vae_sha256 = dataset.vae_sha256
        self.sampler = _sampler(dataset, cfg.batch_size, cfg.seed, cfg.grad_accum)
        self.text_info = dict(text.encoder_info) if text is not None else None

    def check(self, net_config) -> None:
        if net_config.lowres_channels != self.lowres.latent_shape[0]:
            raise ValueError(f"the network takes {net_config.lowres_channels} low-res channels, the low-res cache has "
                             f"{self.lowres.latent_shape[0]}")
        check_latents(self.dataset, net_config, "high-res cache")
        if (net_config.text_dim > 0) != (self.text is not None):
            raise ValueError("text features must be given exactly when the network has text_dim > 0")
        check_text(self.text, self.dataset, net_config)

    def next_batch(self, step: int) -> dict[str, Any]:
        ids = self.sampler.next_indices()
        batch = {"z": self.dataset.latents(ids),  # (B_rank, c, t, H, W) normalised (high-res stats)
                 "lowres": self.lowres.latents(ids),  # (B_rank, c, t, H/s, W/s) normalised (low-res stats)
                 "kind": "video", "epoch": self.sampler.epoch}
        if self.text is not None:
            batch.update(_text_batch(self.text, ids))
        return batch

    def describe(self) -> dict[str, Any]:
        return {"vae_sha256": self.vae_sha256, "dir": str(self.dataset.cache_dir),
                "lowres_dir": str(self.lowres.cache_dir)}

    def export_extras(self) -> dict[str, Any]:
        out = {"latent_stats": self.stats.to_dict(), "lowres_latent_stats": self.lowres.stats.to_dict(),
               "vae_sha256": self.vae_sha256}
        if self.text_info is not None:
            out["text_encoder"] = self.text_info
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"video": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["video"])


class TensorBatches:
    """Latents held in memory (already normalised) with optional labels: synthetic benchmarks, tests.

    `z` (N, c, t, h, w) is what the network learns; `stats` the normalisation it records (identity
    by default, so the exported weights say "these latents were not rescaled").
    """

    uses_images = False
    text_info = None

    def __init__(self, z: torch.Tensor, cfg, labels: torch.Tensor | None = None, stats: LatentStats | None = None,
                 name: str = "in-memory latents"):
        self.z, self.labels, self.name = z, labels, name
        c = z.shape[1]
        self.stats = stats or LatentStats(torch.zeros(c), torch.ones(c))
        self.vae_sha256 = None
        self.latent_shape = tuple(z.shape[1:])
        self.sampler = _sampler(z, cfg.batch_size, cfg.seed, cfg.grad_accum)

    def __len__(self) -> int:
        return len(self.z)

    def check(self, net_config) -> None:
        check_latents(self, net_config, self.name)

    def next_batch(self, step: int) -> dict[str, Any]:
        ids = self.sampler.next_indices()
        batch = {"z": self.z[ids], "kind": "video", "epoch": self.sampler.epoch}
        if self.labels is not None:
            batch["y"] = self.labels[ids]
        return batch

    def describe(self) -> dict[str, Any]:
        return {"vae_sha256": None, "dir": self.name}

    def export_extras(self) -> dict[str, Any]:
        return {"latent_stats": self.stats.to_dict()}

    def state_dict(self) -> dict[str, Any]:
        return {"video": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["video"])


# ----------------------------------------------------------------------------- checks


def check_latents(ds, cfg, what: str) -> None:
    """ValueError unless the cache's latents (and labels) fit the network config `cfg`."""
    c, t, h, w = ds.latent_shape
    t_max, h_cfg, w_cfg = cfg.input_size
    if c != cfg.in_channels or (h, w) != (h_cfg, w_cfg) or not 1 <= t <= t_max:
        raise ValueError(f"{what} latents are (c, t, h, w) = {(c, t, h, w)} but the network takes "
                         f"{cfg.in_channels} channels, up to {t_max} frames of {h_cfg}x{w_cfg}; build it with "
                         f"in_channels={c}, input_size=({max(t, t_max)}, {h}, {w})")
    if cfg.num_classes > 0:
        lo, hi = int(ds.labels.min()), int(ds.labels.max())
        if lo < 0 or hi >= cfg.num_classes:
            raise ValueError(f"{what} labels span [{lo}, {hi}] but the network has num_classes={cfg.num_classes}; "
                             "use a class-conditional cache with labels in range, or num_classes=0")


def check_text(text_embeddings, ds, cfg) -> None:
    """The text features must fit the network (text_dim) and the latent cache (items, VAE)."""
    if text_embeddings is None:
        return
    text_dim = getattr(cfg, "text_dim", 0)
    if text_dim <= 0:
        raise ValueError("text embeddings were given but the network has text_dim=0; build it with "
                         f"text_dim={text_embeddings.dim}")
    if text_embeddings.dim != text_dim:
        raise ValueError(f"the text features are {text_embeddings.dim}-d but the network has text_dim={text_dim}; "
                         f"build it with text_dim={text_embeddings.dim}")
    if len(text_embeddings) != len(ds) or text_embeddings.vae_sha256 != ds.vae_sha256:
        raise ValueError("the text embeddings belong to another latent cache (item count or VAE differ); "
                         "cache them again for this one")


def check_pair_caches(hi, lo, scale: int = 2) -> None:
    """ValueError unless `lo` holds the same clips as `hi` at 1/scale the latent resolution (same VAE)."""
    if len(hi) != len(lo):
        raise ValueError(f"the caches hold {len(hi)} (high-res) and {len(lo)} (low-res) clips; encode the same dataset twice")
    if hi.vae_sha256 != lo.vae_sha256:
        raise ValueError("the two caches were made by different autoencoders; encode both with the same VAE")
    if not torch.equal(hi.indices, lo.indices) or list(hi.captions) != list(lo.captions):
        raise ValueError("the caches hold different clips (source indices or captions differ); "
                         "encode the same dataset, same order, at both resolutions")
    c, t, h, w = hi.latent_shape
    want = (c, t, h // scale, w // scale)
    if tuple(lo.latent_shape) != want or h % scale or w % scale:
        raise ValueError(f"low-res latents are {tuple(lo.latent_shape)} (c, t, h, w) but the high-res {tuple(hi.latent_shape)} "
                         f"need {want} for a {scale}x SR stage; encode the low-res cache at 1/{scale} the resolution")
    # A low-res cache made by downsampling must come from the high-res clips' pixels, or from the same
    # source as they do (box filters compose: 4x from 512 == 2x of the 2x-downsampled 256).
    src = (lo.index.get("dataset") or {}).get("downsampled_from")
    hi_ds = hi.index.get("dataset") or {}
    hi_res = [hi_ds.get("height"), hi_ds.get("width")]
    if src is not None and None not in hi_res and list(src) not in (hi_res, hi_ds.get("downsampled_from")):
        raise ValueError(f"the low-res cache was downsampled from {src[0]}x{src[1]} clips but the high-res cache holds "
                         f"{hi_res[0]}x{hi_res[1]} clips; encode it with --downsample-from {hi_res[0]}x{hi_res[1]}")
