"""Real-clip I3D statistics for FVD, cached by dataset + protocol hash + weights hash.

    from walt.eval.fvd_stats import real_feature_stats
    real = real_feature_stats(dataset, fvd_protocol("smoke"), i3d)   # cached; `mu, sigma = real` works

The statistics of the real clips (W.A.L.T §5.1: the UCF-101 train split for the MAGVIT protocol)
are computed once and cached under a key made of three things: a description of the dataset
(type, size, clip length, resolution, seed, split, frame stride, the file list with sizes and
modification times), the protocol hash and the I3D weights hash. Change any of them and the key
changes; the cache can never serve statistics of another setting.

Clips enter the I3D through `clips_to_i3d_input`: the first `protocol.num_frames` frames, resized
frame by frame to 224x224 with the protocol's resize (TF1 bilinear by default, the reference FVD
code). The real dataset must be read the way the protocol says (`check_real_dataset`: its split
and frame stride); generated clips are scored exactly like real ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from walt.eval.fvd import FVDProtocol, feature_stats, i3d_features, resize_videos
from walt.eval.fvd_record import as_protocol, i3d_weights_hash, protocol_record

STATS_KIND = "walt.eval.fvd_stats/1"
I3D_INPUT_SIZE = 224


# ---------------------------------------------------------------------------------------------
# Clips -> I3D features
# ---------------------------------------------------------------------------------------------


def clips_to_i3d_input(videos: torch.Tensor, protocol: FVDProtocol) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> (B, 3, num_frames, 224, 224): first frames, protocol resize."""
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"expected videos (B, 3, T, H, W), got shape {tuple(videos.shape)}")
    if videos.shape[2] < protocol.num_frames:
        raise ValueError(f"FVD protocol {protocol.name!r} scores the first {protocol.num_frames} frames, "
                         f"but the clips have {videos.shape[2]}; use clips of >= {protocol.num_frames} frames")
    x = videos[:, :, :protocol.num_frames].float()  # (B, 3, F, H, W)
    return resize_videos(x, I3D_INPUT_SIZE, protocol.resize, protocol.center_crop)  # (B, 3, F, 224, 224)


def network_device(net: Any, device=None) -> torch.device:
    """`device` if given, else where `net`'s parameters live (cpu for a plain callable)."""
    if device is not None:
        return torch.device(device)
    p = next(iter(net.parameters()), None) if isinstance(net, nn.Module) else None
    return p.device if p is not None else torch.device("cpu")


def _dataset_batches(dataset, indices: Sequence[int], batch_size: int, protocol: FVDProtocol,
                     bar=None, device=None) -> Iterator[torch.Tensor]:
    """Batches of I3D inputs from `dataset[i]["video"]`, resized on `device` (each clip on its own,
    so clips of different native sizes, e.g. two video folders, can share a batch)."""
    buf: list[torch.Tensor] = []
    for i in indices:
        buf.append(clips_to_i3d_input(dataset[i]["video"][None].to(device), protocol)[0])
        if len(buf) == batch_size:
            yield torch.stack(buf)  # (B, 3, F, 224, 224)
            if bar is not None:
                bar.update(len(buf))
            buf = []
    if buf:
        yield torch.stack(buf)
        if bar is not None:
            bar.update(len(buf))


def progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="clip", disable=not enabled, dynamic_ncols=True)


def features_of_dataset(dataset, indices: Sequence[int], protocol: FVDProtocol, i3d, batch_size: int = 8,
                        device=None, progress: bool = True, desc: str = "I3D real") -> np.ndarray:
    """(N, D) float64 I3D features of `dataset[i]["video"]` for i in `indices`."""
    device = network_device(i3d, device)
    with progress_bar(len(indices), desc, progress) as bar:
        return i3d_features(i3d, _dataset_batches(dataset, indices, batch_size, protocol, bar, device),
                            num_frames=None, resize=protocol.resize, device=device)


# ---------------------------------------------------------------------------------------------
# Real statistics with a cache
# ---------------------------------------------------------------------------------------------


def default_stats_cache() -> Path:
    """`$WALT_CACHE/fvd_stats`, default `~/.cache/walt/fvd_stats`."""
    root = os.environ.get("WALT_CACHE") or Path.home() / ".cache" / "walt"
    return Path(root) / "fvd_stats"


_DESCRIBED_ATTRS = ("num_frames", "height", "width", "resolution", "seed", "sampling", "frame_stride", "fps",
                    "pad_mode", "epoch", "as_images", "class_names", "split", "skip_short")


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, Path):
        return str(v)
    return repr(v)


def describe_dataset_for_cache(dataset) -> dict[str, Any]:
    """What the real clips depend on, as JSON: type, length, clip settings, and for file datasets
    a digest of every (path, size, mtime, label). Two datasets with the same description give the
    same clips (procedural clips depend only on (seed, index); files on their bytes)."""
    if isinstance(dataset, Subset):
        idx = [int(i) for i in dataset.indices]
        digest = hashlib.sha256(json.dumps(idx).encode()).hexdigest()[:16]
        return {"subset_of": describe_dataset_for_cache(dataset.dataset), "len": len(idx), "indices_sha256": digest}
    d: dict[str, Any] = {"type": f"{type(dataset).__module__}.{type(dataset).__qualname__}", "len": len(dataset)}
    for attr in _DESCRIBED_ATTRS:
        if hasattr(dataset, attr) and not callable(getattr(dataset, attr)):
            d[attr] = _jsonable(getattr(dataset, attr))
    if getattr(dataset, "source", None) is not None:
        d["source"] = str(Path(dataset.source).expanduser().resolve())
    items = getattr(dataset, "items", None)
    if items:
        h = hashlib.sha256()
        for it in items:
            p = Path(getattr(it, "path", it))
            try:
                st = p.stat()
                h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{getattr(it, 'label', '')}\n".encode())
            except OSError:
                h.update(f"{p}|missing\n".encode())
        d["files_sha256"] = h.hexdigest()
    return d


def check_real_dataset(dataset, protocol: FVDProtocol) -> None:
    """ValueError unless `dataset` reads real clips as `protocol` pins them: the split
    (`real_split`; a dataset without official splits counts as "train" = the clips given) and the
    frame stride in source frames (`frame_stride`; clips resampled to an fps have none)."""
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    name = type(base).__name__
    split = getattr(base, "split", None)
    if split is None and protocol.real_split != "train":
        raise ValueError(f"FVD protocol {protocol.name!r} takes real clips from the {protocol.real_split!r} split, "
                         f"but the {name} dataset has no splits; use a dataset with official splits (a UCF-101 "
                         "root) or real_split='train'")
    if split is not None and split != protocol.real_split:
        raise ValueError(f"FVD protocol {protocol.name!r} takes real clips from the {protocol.real_split!r} split, "
                         f"but the {name} dataset reads the {split!r} split; build it with split="
                         f"{protocol.real_split!r}")
    if getattr(base, "fps", None):
        raise ValueError(f"the {name} dataset resamples clips to {base.fps} fps, but FVD protocol {protocol.name!r} "
                         f"pins a stride of {protocol.frame_stride} source frame(s); build it with frame_stride="
                         f"{protocol.frame_stride} and no fps")
    stride = int(getattr(base, "frame_stride", None) or 1)  # None: consecutive frames
    if stride != protocol.frame_stride:
        raise ValueError(f"FVD protocol {protocol.name!r} reads real clips with a stride of {protocol.frame_stride} "
                         f"source frame(s), but the {name} dataset uses {stride}; build it with "
                         f"frame_stride={protocol.frame_stride}")


def _uses_random_clips(dataset) -> bool:
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    return getattr(base, "sampling", None) == "random"


@dataclass(frozen=True, eq=False)
class RealStats:
    """Gaussian statistics of real I3D features. Unpacks like a tuple: `mu, sigma = stats`."""

    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    num_clips: int
    key: str = ""
    cache_path: str | None = None
    cache_hit: bool = False
    description: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.mu, self.sigma))


def stats_cache_key(description: dict[str, Any], protocol: FVDProtocol, i3d_hash: str, num_clips: int) -> str:
    from walt import __version__

    blob = json.dumps({"dataset": description, "protocol_hash": protocol.protocol_hash(), "i3d": i3d_hash,
                       "num_clips": num_clips, "walt": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _read_cached(path: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    from walt.checkpoint import CheckpointError, load_checkpoint

    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path)
        if state.get("kind") != STATS_KIND or state.get("key") != key:
            raise CheckpointError(f"not the statistics for key {key}")
        return state["mu"].double().numpy(), state["sigma"].double().numpy()
    except (CheckpointError, KeyError, OSError, ValueError) as e:
        warnings.warn(f"ignoring unreadable FVD statistics cache {path} ({e}); recomputing", RuntimeWarning,
                      stacklevel=3)
        return None


def real_feature_stats(dataset, protocol: FVDProtocol | str, i3d, cache_dir: str | Path | None = None, *,
                       use_cache: bool = True, description: dict[str, Any] | None = None, batch_size: int = 8,
                       device=None, progress: bool = True) -> RealStats:
    """(mu, sigma) of the I3D features of the first `protocol.num_real` clips of `dataset`.

    Args:
        dataset: returns {"video": (3, T, H, W) in [-1, 1], ...}; T >= protocol.num_frames.
            num_real=None (MAGVIT "whole split") uses every clip.
        protocol: FVDProtocol or preset name. i3d: `load_fvd_i3d()` (or any (B,3,T,224,224)->(B,D) module).
        cache_dir: where statistics are cached (default `default_stats_cache()`); `use_cache=False`
            neither reads nor writes it. A failed cache write only warns.
        description: extra JSON identifying the data, merged into the automatic description
            (`describe_dataset_for_cache`) that keys the cache.
    Returns:
        RealStats (unpacks to mu (D,), sigma (D, D)), with num_clips, key, cache_path, cache_hit.
    Raises:
        ValueError if the dataset has fewer clips than the protocol needs, is not read with the
        protocol's split and frame stride (`check_real_dataset`), or draws random clips
        (statistics of random clips must not be cached: build it with sampling="deterministic").
    """
    from walt.checkpoint import save_checkpoint

    protocol = as_protocol(protocol)
    check_real_dataset(dataset, protocol)
    n = protocol.num_real if protocol.num_real is not None else len(dataset)
    if len(dataset) < max(n, 2):
        raise ValueError(f"FVD protocol {protocol.name!r} needs {max(n, 2)} real clips but the dataset has "
                         f"{len(dataset)}; add clips or lower num_real")
    if use_cache and _uses_random_clips(dataset):
        raise ValueError("the real dataset draws random clip starts (sampling='random'); cached FVD statistics "
                         "need sampling='deterministic' or 'center'")
    desc = describe_dataset_for_cache(dataset)
    if description:
        desc = {**desc, "user": _jsonable(description)}
    i3d_hash = i3d_weights_hash(i3d)
    key = stats_cache_key(desc, protocol, i3d_hash, n)
    path = Path(cache_dir if cache_dir is not None else default_stats_cache()).expanduser() / f"{key}.safetensors"
    if use_cache:
        hit = _read_cached(path, key)
        if hit is not None:
            return RealStats(hit[0], hit[1], n, key, str(path), True, desc)
    feats = features_of_dataset(dataset, range(n), protocol, i3d, batch_size, device, progress, "I3D real clips")
    mu, sigma = feature_stats(feats)
    if not use_cache:
        return RealStats(mu, sigma, n, key, None, False, desc)
    state = {"kind": STATS_KIND, "key": key, "mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma),
             "num_clips": n, "dataset": desc, "protocol": protocol_record(protocol, i3d_hash)}
    try:
        save_checkpoint(path, state)  # atomic: a crash never leaves half a statistics file
    except OSError as e:
        warnings.warn(f"could not write the FVD statistics cache {path} ({e}); results are unaffected",
                      RuntimeWarning, stacklevel=2)
        return RealStats(mu, sigma, n, key, None, False, desc)
    return RealStats(mu, sigma, n, key, str(path), False, desc)


__all__ = [
    "I3D_INPUT_SIZE", "RealStats", "STATS_KIND", "check_real_dataset", "clips_to_i3d_input", "default_stats_cache",
    "describe_dataset_for_cache", "features_of_dataset", "network_device", "real_feature_stats", "stats_cache_key",
]
