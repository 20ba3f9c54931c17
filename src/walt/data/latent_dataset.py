"""Reading a latent cache: its on-disk format, the VAE fingerprint that ties it to an autoencoder, `LatentDataset`.

The transformer trains on autoencoder latents only (paper §3; SPEC §1-2): `LatentDataset` reads a
folder written by `walt.data.latent_cache.encode_dataset` (see there for the layout) and needs no
autoencoder. `vae_fingerprint` hashes an autoencoder's config and weights: a cache, a trained
transformer and `walt sample` all check it, because latents of two autoencoders live in different
spaces. The stored per-channel statistics normalise the latents (SPEC §1).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from torch.utils.data import Dataset

from walt.autoencoder.latent_stats import LatentStats
from walt.config import config_to_dict

__all__ = ["CACHE_FORMAT", "INDEX_NAME", "PLAN_NAME", "LatentDataset", "load_cache_index", "vae_fingerprint"]

CACHE_FORMAT = "walt-latent-cache/1"
INDEX_NAME = "index.json"
PLAN_NAME = "plan.json"


def vae_fingerprint(vae: torch.nn.Module) -> str:
    """sha256 (hex) of the autoencoder's config and every weight (names, dtypes, shapes, bytes).

    Two autoencoders with the same fingerprint produce the same latents; any retraining changes it.
    """
    h = hashlib.sha256()
    cfg = getattr(vae, "config", None)
    if cfg is not None:
        h.update(json.dumps(config_to_dict(cfg), sort_keys=True).encode())
    for name, t in sorted(vae.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _stats_from_index(index: dict[str, Any]) -> LatentStats:
    s = index["latent_stats"]
    return LatentStats(mean=torch.tensor(s["mean"], dtype=torch.float64),
                       std=torch.tensor(s["std"], dtype=torch.float64), count=int(s["count"]))


def load_cache_index(cache_dir: str | Path) -> dict[str, Any]:
    """The parsed index.json of a complete cache (ValueError naming the problem otherwise)."""
    cache_dir = Path(cache_dir)
    path = cache_dir / INDEX_NAME
    if not path.is_file():
        hint = " (encoding was interrupted: run encode_dataset / `walt encode` again, it resumes)" \
            if (cache_dir / PLAN_NAME).is_file() else ""
        raise ValueError(f"no complete latent cache in {cache_dir}: {INDEX_NAME} is missing{hint}")
    index = json.loads(path.read_text())
    if index.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path} is not a walt latent cache (format={index.get('format')!r})")
    return index


class LatentDataset(Dataset):
    """A torch Dataset over a latent cache; reads only the cache (no autoencoder needed).

    `ds[i]` -> {"latent": (c, t, h, w) float32 (normalised with the cache's stats when
    `normalize`), "label": int (-1 when the source had none), "caption": str, "index": int}.

    Args:
        cache_dir: a folder written by `encode_dataset`.
        normalize: apply (z - mean) / std with the stored per-channel statistics (SPEC §1).
        vae: optional autoencoder (or its fingerprint string) the cache must come from; a cache
            from another VAE is refused with a ValueError.
        in_memory: load every shard at construction (default; a UCF-101 cache is ~200 MB in
            float16). False memory-maps the shards and reads items on demand.
    """

    def __init__(self, cache_dir: str | Path, normalize: bool = True, vae: torch.nn.Module | str | None = None,
                 in_memory: bool = True):
        self.cache_dir = Path(cache_dir)
        self.index = load_cache_index(self.cache_dir)
        if vae is not None:
            want = vae if isinstance(vae, str) else vae_fingerprint(vae)
            if want != self.index["vae_sha256"]:
                raise ValueError(f"the latent cache in {self.cache_dir} was made by a different VAE (hash "
                                 f"{self.index['vae_sha256'][:12]} != {want[:12]}); re-encode with this VAE")
        self.normalize = normalize
        self.stats = _stats_from_index(self.index)
        self.latent_shape = tuple(self.index["latent_shape"])  # (c, t, h, w)
        self.in_memory = in_memory
        shards = self.index["shards"]
        self._starts = [s["start"] for s in shards]
        self._paths = [self.cache_dir / s["file"] for s in shards]
        self.labels = torch.empty(len(self), dtype=torch.long)
        self.indices = torch.empty(len(self), dtype=torch.long)
        self.captions: list[str] = []
        latents = []
        for path, shard in zip(self._paths, shards):
            try:
                with safe_open(str(path), framework="pt") as f:
                    meta = f.metadata() or {}
                    lo = shard["start"]
                    self.labels[lo:lo + shard["count"]] = f.get_tensor("labels")
                    self.indices[lo:lo + shard["count"]] = f.get_tensor("indices")
                    if in_memory:
                        latents.append(f.get_tensor("latents"))
            except (SafetensorError, OSError) as e:
                raise ValueError(f"latent cache shard {path} is missing or corrupt ({e}); re-run encode_dataset") from None
            if meta.get("vae_sha256") != self.index["vae_sha256"]:
                raise ValueError(f"{path} was written by a different VAE than {INDEX_NAME} says; re-encode the cache")
            self.captions += json.loads(meta["captions"])
        self._latents = torch.cat(latents) if in_memory else None  # (N, c, t, h, w) stored dtype
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return int(self.index["num_samples"])

    @property
    def num_classes(self) -> int:
        return int(self.index.get("num_classes", 0))

    @property
    def vae_sha256(self) -> str:
        return self.index["vae_sha256"]

    @property
    def vae_config(self) -> dict[str, Any] | None:
        return self.index.get("vae_config")

    @property
    def is_image_cache(self) -> bool:
        return self.latent_shape[1] == 1

    def raw_latent(self, i: int) -> torch.Tensor:
        """(c, t, h, w) float32 latent exactly as stored (not normalised)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a cache of {len(self)} latents")
        i %= len(self)
        if self._latents is not None:
            return self._latents[i].float()
        s = next(k for k in reversed(range(len(self._starts))) if self._starts[k] <= i)
        if s not in self._handles:
            self._handles[s] = safe_open(str(self._paths[s]), framework="pt")
        return self._handles[s].get_slice("latents")[i - self._starts[s]].float()

    def latents(self, ids: Sequence[int] | torch.Tensor, raw: bool = False) -> torch.Tensor:
        """(B, c, t, h, w) float32 batch: normalised when `self.normalize` unless `raw`. Faster than stacking items."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        if self._latents is not None:
            z = self._latents[ids].float()
        else:
            z = torch.stack([self.raw_latent(int(i)) for i in ids])
        return self.stats.normalize(z) if (self.normalize and not raw) else z

    def __getitem__(self, i: int) -> dict[str, Any]:
        z = self.raw_latent(int(i))
        if self.normalize:
            z = self.stats.normalize(z[None])[0]
        i = int(i) % len(self)
        return {"latent": z, "label": int(self.labels[i]), "caption": self.captions[i], "index": int(self.indices[i])}

    def __getstate__(self):  # safetensors handles cannot be pickled (DataLoader workers reopen them)
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state
