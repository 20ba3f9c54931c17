"""Latent cache: run the autoencoder once over a dataset, train the transformer on the stored latents.

W.A.L.T trains its transformer on autoencoder latents (paper §3; SPEC §1-2). Encoding every clip
at every step would cost more than the transformer itself, so the latents are computed once:

    info = encode_dataset(vae, SyntheticVideos(1024), "cache/videos", shard_size=256, batch_size=8)
    ds = LatentDataset("cache/videos")           # {"latent": (c, t, h, w) normalised, "label", "caption", "index"}

Layout of a cache folder:
    plan.json                   written first: VAE config + weight hash, dataset size, shard size, dtype
    shard_00000.safetensors     latents (N, c, t, h, w) float16|float32, labels (N,), indices (N,);
                                metadata: captions (JSON list), shard number, VAE hash
    index.json                  written last (its presence means "complete"): shard list, counts,
                                latent shape, VAE config + hash, dataset description, latent stats

Every file is written atomically (temp file + rename), so an interrupted encode leaves only
complete shards; re-running `encode_dataset` with the same VAE and dataset skips every valid
shard and encodes the rest. A cache made by a different VAE (weights hash) is refused: latents of
two autoencoders live in different spaces, and mixing them silently would ruin training.

Images are 1-frame videos: a cache of images holds (N, c, 1, h, w) latents and works the same
(joint image-video training uses two caches, SPEC §2).

The latent statistics (per-channel mean / std, SPEC §1 "latents are normalised") are measured on
the *stored* latents (after the float16 cast, if any), so normalisation matches what is read back.

Reading (`LatentDataset`, `load_cache_index`, `vae_fingerprint`) is `walt.data.latent_dataset`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from walt.autoencoder.latent_stats import LatentStats, LatentStatsAccumulator
from walt.config import config_to_dict
from walt.data.latent_dataset import (
    CACHE_FORMAT,
    INDEX_NAME,
    PLAN_NAME,
    _stats_from_index,
    load_cache_index,
    vae_fingerprint,
)
from walt.io import atomic_write, write_json

__all__ = ["LatentCacheInfo", "encode_dataset"]

_DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"



def _describe(dataset: Dataset) -> dict[str, Any]:
    """A JSON description of the source dataset (class name, length, a few identifying attributes)."""
    d: dict[str, Any] = {"class": type(dataset).__name__, "length": len(dataset)}
    for key in ("seed", "num_frames", "height", "width", "as_images", "root", "class_names", "num_classes",
                "frame_stride", "fps"):  # frame_stride / fps: clip sampling of real videos (None: not recorded)
        v = getattr(dataset, key, None)
        if isinstance(v, (int, float, str, bool)) or (isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v)):
            d[key] = list(v) if isinstance(v, tuple) else v
        elif isinstance(v, Path):
            d[key] = str(v)
    return d


def _collate(items: list[dict]) -> dict[str, Any]:
    videos = [it["video"] for it in items]
    shapes = {tuple(v.shape) for v in videos}
    if len(shapes) != 1:
        raise ValueError(f"dataset items have different video shapes {sorted(shapes)}; resize/crop to one shape before caching")
    return {
        "video": torch.stack(videos),  # (B, 3, T, H, W)
        "label": torch.tensor([int(it.get("label", -1)) for it in items], dtype=torch.long),
        "caption": [str(it.get("caption", "")) for it in items],
        "index": [it.get("index") for it in items],
    }


def _valid_shard(path: Path, shard: int, count: int, vae_hash: str) -> bool:
    """True if `path` is a complete shard `shard` of this cache (readable, right VAE, right size)."""
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            n = f.get_slice("latents").get_shape()[0]
            nl = f.get_slice("labels").get_shape()[0]
            ni = f.get_slice("indices").get_shape()[0]
        captions = json.loads(meta.get("captions", "null"))
    except (SafetensorError, OSError, ValueError, KeyError):
        return False
    return (meta.get("format") == CACHE_FORMAT and meta.get("vae_sha256") == vae_hash
            and int(meta.get("shard", -1)) == shard and n == nl == ni == count
            and isinstance(captions, list) and len(captions) == count)



@dataclass
class LatentCacheInfo:
    """What `encode_dataset` wrote (the parsed index.json) and how much of it this call encoded."""

    cache_dir: Path
    index: dict[str, Any]
    encoded_shards: list[int]  # shards encoded by this call (the others were already complete)
    skipped_shards: list[int]

    @property
    def stats(self) -> LatentStats:
        return _stats_from_index(self.index)


@torch.no_grad()
def encode_dataset(
    vae: torch.nn.Module,
    dataset: Dataset,
    out_dir: str | Path,
    shard_size: int = 256,
    batch_size: int = 8,
    chunk_frames: int | Sequence[int] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    latent_dtype: str = "float16",
    num_workers: int = 0,
    description: dict[str, Any] | None = None,
) -> LatentCacheInfo:
    """Encode every item of `dataset` with `vae` (posterior means) into a sharded latent cache.

    Args:
        vae: a `CausalVAE` (anything with `encode(x, chunk_frames)` and `config`); used in eval mode.
        dataset: items are dicts {"video": (3, T, H, W) in [-1, 1], "label": int, "caption": str,
            "index": int}; all videos must have the same shape (images: T = 1).
        out_dir: the cache folder (created; an existing partial cache of the same VAE is resumed).
        shard_size: items per shard file; the unit of resumption.
        batch_size: clips per `vae.encode` call.
        chunk_frames: stream long clips through the causal cache (see `CausalVAE.encode`).
        device: where to encode (default: the VAE's device). The VAE is moved there.
        latent_dtype: "float16" (default; halves the cache) or "float32" (or "bfloat16").
        num_workers: DataLoader workers that load / decode the source videos.
        description: extra JSON stored as the index's "dataset" entry (default: a description
            built from the dataset's class and attributes).
    Returns:
        `LatentCacheInfo` with the index and which shards this call encoded.
    Raises:
        ValueError: `out_dir` holds a cache from a different VAE / dataset size / shard size.
    """
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}")
    if latent_dtype not in _DTYPES:
        raise ValueError(f"latent_dtype must be one of {sorted(_DTYPES)}, got {latent_dtype!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(dataset)
    if n < 1:
        raise ValueError("the dataset is empty; nothing to cache")
    if device is not None:
        vae = vae.to(device)
    vae_hash = vae_fingerprint(vae)
    vae_cfg = config_to_dict(vae.config) if hasattr(vae, "config") else None
    plan = {
        "format": CACHE_FORMAT,
        "num_samples": n,
        "shard_size": shard_size,
        "latent_dtype": latent_dtype,
        "vae_sha256": vae_hash,
        "vae_config": vae_cfg,
        "chunk_frames": list(chunk_frames) if isinstance(chunk_frames, (list, tuple)) else chunk_frames,
        "dataset": description if description is not None else _describe(dataset),
    }
    _check_existing_plan(out_dir, plan)
    rank, world = _rank_world()
    index_path = out_dir / INDEX_NAME
    num_shards = math.ceil(n / shard_size)
    if index_path.is_file():  # complete already: verify, do nothing
        index = load_cache_index(out_dir)
        if all(_valid_shard(out_dir / s["file"], i, s["count"], vae_hash) for i, s in enumerate(index["shards"])):
            return LatentCacheInfo(out_dir, index, encoded_shards=[], skipped_shards=list(range(num_shards)))
        index_path.unlink(missing_ok=True)  # a shard went missing / corrupt: rebuild what is needed below
    write_json(out_dir / PLAN_NAME, plan)

    # ---- encode the shards that are not complete yet (under torchrun: shard s on rank s % world) ----
    encoded, skipped = [], []
    was_training = vae.training
    vae.eval()
    bar = tqdm(total=n, disable=not progress or rank != 0, desc="encode", unit="clip", dynamic_ncols=True)
    try:
        for s in range(num_shards):
            lo, hi = s * shard_size, min(n, (s + 1) * shard_size)
            if s % world != rank:
                continue
            if _valid_shard(out_dir / _shard_name(s), s, hi - lo, vae_hash):
                skipped.append(s)
                bar.update(hi - lo)
                continue
            loader = DataLoader(Subset(dataset, range(lo, hi)), batch_size=batch_size, shuffle=False,
                                num_workers=num_workers, collate_fn=_collate)
            _encode_shard(vae, loader, out_dir / _shard_name(s), s, lo, vae_hash, chunk_frames, latent_dtype, bar)
            encoded.append(s)
    finally:
        bar.close()
        vae.train(was_training)
    if world > 1:
        torch.distributed.barrier()  # every shard is on disk before the statistics pass
    index = _index(out_dir, plan, n, shard_size, num_shards)
    if rank == 0:
        write_json(index_path, index)
    if world > 1:
        torch.distributed.barrier()
    return LatentCacheInfo(out_dir, index, encoded_shards=encoded, skipped_shards=skipped)


def _encode_shard(vae, loader, path: Path, shard: int, lo: int, vae_hash: str, chunk_frames, latent_dtype: str,
                  bar) -> None:
    """Encode one shard's clips (posterior means) and write them atomically with their labels and captions."""
    param = next(vae.parameters())
    latents, labels, captions, indices = [], [], [], []
    for batch in loader:
        x = batch["video"].to(param.device, param.dtype)  # (B, 3, T, H, W)
        z = vae.encode(x, chunk_frames=chunk_frames)  # (B, c, t, h, w)
        latents.append(z.to("cpu", _DTYPES[latent_dtype]))
        labels.append(batch["label"])
        captions += batch["caption"]
        indices += [lo + len(indices) + j if ix is None else int(ix) for j, ix in enumerate(batch["index"])]
        bar.update(x.shape[0])
    tensors = {"latents": torch.cat(latents).contiguous(), "labels": torch.cat(labels),
               "indices": torch.tensor(indices, dtype=torch.long)}
    meta = {"format": CACHE_FORMAT, "shard": str(shard), "vae_sha256": vae_hash, "captions": json.dumps(captions)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _index(out_dir: Path, plan: dict[str, Any], n: int, shard_size: int, num_shards: int) -> dict[str, Any]:
    """The index: the plan, the shards, and the statistics measured on the STORED latents (SPEC §1)."""
    acc = LatentStatsAccumulator()
    shards, latent_shape, labels_seen = [], None, set()
    for s in range(num_shards):
        lo, hi = s * shard_size, min(n, (s + 1) * shard_size)
        with safe_open(str(out_dir / _shard_name(s)), framework="pt") as f:
            z = f.get_tensor("latents")
            labels = f.get_tensor("labels")
        if latent_shape is None:
            latent_shape = list(z.shape[1:])
        elif list(z.shape[1:]) != latent_shape:
            raise ValueError(f"shard {s} has latents {list(z.shape[1:])} but shard 0 has {latent_shape}; "
                             "all clips of a cache must have the same size")
        acc.update(z.float())
        labels_seen.update(labels.tolist())
        shards.append({"file": _shard_name(s), "count": hi - lo, "start": lo})
    stats = acc.finalize()
    valid_labels = sorted(l for l in labels_seen if l >= 0)
    return {
        **plan,
        "num_shards": num_shards,
        "shards": shards,
        "latent_shape": latent_shape,  # (c, t, h, w)
        # The source's class count when it states one (a small cache may not show every class).
        "num_classes": max(int(plan["dataset"].get("num_classes") or 0),
                           (max(valid_labels) + 1) if valid_labels else 0),
        "latent_stats": {"mean": stats.mean.tolist(), "std": stats.std.tolist(), "count": stats.count},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _rank_world() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_existing_plan(out_dir: Path, plan: dict[str, Any]) -> None:
    """Refuse to resume a cache written with a different VAE, dataset size, shard size or dtype."""
    path = out_dir / PLAN_NAME
    if not path.is_file():
        if any(out_dir.glob("shard_*.safetensors")):
            raise ValueError(f"{out_dir} holds shards but no {PLAN_NAME}; it is not a walt cache, use an empty folder")
        return
    old = json.loads(path.read_text())
    if old.get("vae_sha256") != plan["vae_sha256"]:
        raise ValueError(f"{out_dir} holds a latent cache from a different VAE (weights hash "
                         f"{str(old.get('vae_sha256'))[:12]} != {plan['vae_sha256'][:12]}); use another out_dir")
    for key in ("num_samples", "shard_size", "latent_dtype", "chunk_frames"):
        if old.get(key) != plan[key]:
            raise ValueError(f"{out_dir} was started with {key}={old.get(key)!r}, now {key}={plan[key]!r}; "
                             "use the same settings to resume, or another out_dir")
    for key in ("frame_stride", "fps"):  # the same files sampled differently are other latents
        was, now = (old.get("dataset") or {}).get(key), (plan.get("dataset") or {}).get(key)
        if was != now:
            raise ValueError(f"{out_dir} was started with dataset {key}={was!r}, now {key}={now!r}; "
                             "use the same clip sampling to resume, or another out_dir")

