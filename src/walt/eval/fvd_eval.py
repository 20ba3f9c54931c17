"""FVD evaluation runners: cached real statistics, FVD of a generator, FVD of two video folders.

    from walt.eval.fvd import fvd_protocol
    from walt.eval.fvd_eval import real_feature_stats, fvd_of_generator, fvd_from_folders, load_fvd_i3d
    i3d = load_fvd_i3d()
    proto = fvd_protocol("smoke")
    real = real_feature_stats(dataset, proto, i3d)               # cached; `mu, sigma = real` works
    res = fvd_of_generator(lambda seeds, labels: videos, real, proto, i3d, label_pool=labels)
    res = fvd_from_folders("real_videos/", "samples/", proto, i3d)

FVD (Unterthiner et al. 2018) compares Gaussians fitted to Kinetics-400 I3D logits of real and
generated clips; W.A.L.T reports it on UCF-101 with the MAGVIT protocol (10K samples against the
train split, 4 runs, mean +- std; paper §5.1, Tables 1-2). The numbers depend on the protocol
(sample counts, clip length, resize) and on the exact network, so every result here records the
protocol name, its hash (`FVDProtocol.protocol_hash()`), the I3D weights hash, the sample counts
and the seeds, and the statistics of the real clips are cached under a key made of all three:
a description of the dataset (type, size, clip length, resolution, seed, the file list with sizes
and modification times), the protocol hash and the weights hash. Change any of them and the key
changes; the cache can never serve statistics of another setting.

Clips enter the I3D through `clips_to_i3d_input`: the first `protocol.num_frames` frames, resized
frame by frame to 224x224 with the protocol's resize (TF1 bilinear by default, the reference FVD
code). Generated clips are scored exactly like real ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from walt.config import config_to_dict
from walt.eval.fvd import FVDProtocol, feature_stats, frechet_distance, fvd_protocol, i3d_features, resize_videos

STATS_KIND = "walt.eval.fvd_stats/1"
I3D_INPUT_SIZE = 224

# generate_fn(seeds, labels) -> (B, 3, T, H, W) videos in [-1, 1]; labels is None when unconditional.
GenerateFn = Callable[[list[int], "list[int] | None"], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# The network and the protocol, as recorded with every number
# ---------------------------------------------------------------------------------------------


def load_fvd_i3d(path: str | Path | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The Kinetics-400 I3D used by every FVD here (`walt.eval.i3d.load_i3d`).

    One indirection so the CLI and tests can swap the network (tests inject random weights).
    Raises `walt.eval.i3d_weights.I3DWeightsError` when the weights cannot be had.
    """
    from walt.eval.i3d import load_i3d

    return load_i3d(path, device=device)


def i3d_weights_hash(i3d: Any) -> str:
    """Identity of the feature network: `weights_sha256` of `load_i3d()` (sha256 of the converted
    official weights), else "state-sha256:<hex>" over the module's state dict (names, dtypes,
    shapes, bytes), which marks a network that is *not* the verified FVD I3D."""
    sha = getattr(i3d, "weights_sha256", None)
    if sha:
        return str(sha)
    if not isinstance(i3d, nn.Module):
        raise ValueError("cannot identify the FVD feature network: give it a `weights_sha256` attribute "
                         "(load it with walt.eval.i3d.load_i3d)")
    h = hashlib.sha256()
    for name, t in sorted(i3d.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "state-sha256:" + h.hexdigest()


def as_protocol(protocol: FVDProtocol | str) -> FVDProtocol:
    """A preset name or an FVDProtocol -> FVDProtocol (ValueError naming the presets otherwise)."""
    if isinstance(protocol, FVDProtocol):
        return protocol
    if isinstance(protocol, str):
        return fvd_protocol(protocol)
    raise ValueError(f"protocol must be an FVDProtocol or a preset name, got {type(protocol).__name__}")


def protocol_record(protocol: FVDProtocol, i3d_hash: str) -> dict[str, Any]:
    """What a result stores about how it was measured (name, hash, every field, network)."""
    from walt.eval.fvd import FVD_PROTOCOLS

    preset = FVD_PROTOCOLS[protocol.name]() if protocol.name in FVD_PROTOCOLS else None
    overrides = {} if preset is None else {
        k: v for k, v in config_to_dict(protocol).items() if config_to_dict(preset).get(k) != v}
    return {
        "name": protocol.name,
        "hash": protocol.protocol_hash(),
        "overrides": overrides,  # fields that differ from the named preset (also in the hash)
        "config": config_to_dict(protocol),
        "i3d_weights_sha256": i3d_hash,
        "i3d_is_reference": not i3d_hash.startswith("state-sha256:"),
    }


def short_hash(h: str, n: int = 16) -> str:
    """'abcdef…' / 'state-sha256:abcdef…': the first n hex digits, keeping a prefix that marks a
    network which is not the reference I3D."""
    prefix, _, hexpart = h.rpartition(":")
    return f"{prefix + ':' if prefix else ''}{hexpart[:n]}…"


def protocol_label(record: dict[str, Any]) -> str:
    """'smoke [hash]' or 'smoke* (num_fake=4, ...) [hash]' for reports."""
    o = record.get("overrides") or {}
    name = record["name"] + ("*" if o else "")
    extra = f" ({', '.join(f'{k}={v}' for k, v in o.items())})" if o else ""
    return f"{name}{extra} [{record['hash']}]"


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


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="clip", disable=not enabled, dynamic_ncols=True)


def features_of_dataset(dataset, indices: Sequence[int], protocol: FVDProtocol, i3d, batch_size: int = 8,
                        device=None, progress: bool = True, desc: str = "I3D real") -> np.ndarray:
    """(N, D) float64 I3D features of `dataset[i]["video"]` for i in `indices`."""
    device = network_device(i3d, device)
    with _progress(len(indices), desc, progress) as bar:
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
        ValueError if the dataset has fewer clips than the protocol needs, or draws random clips
        (statistics of random clips must not be cached: build it with sampling="deterministic").
    """
    from walt.checkpoint import save_checkpoint

    protocol = as_protocol(protocol)
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


# ---------------------------------------------------------------------------------------------
# FVD of a generator / of a folder, with repeats
# ---------------------------------------------------------------------------------------------


def dataset_labels(dataset, n: int | None = None) -> list[int]:
    """Labels of the first n clips without decoding video where the dataset allows it
    (procedural: index % classes; files: the item list); -1 = unlabelled."""
    n = len(dataset) if n is None else min(n, len(dataset))
    if isinstance(dataset, Subset):
        base_labels = dataset_labels(dataset.dataset)
        return [base_labels[int(i)] for i in list(dataset.indices)[:n]]
    if hasattr(dataset, "params") and hasattr(dataset, "num_classes"):  # SyntheticVideos
        return [i % int(dataset.num_classes) for i in range(n)]
    items = getattr(dataset, "items", None)
    if items is not None and all(hasattr(it, "label") for it in items[:n]):
        return [int(it.label) for it in items[:n]]
    return [int(dataset[i]["label"]) for i in range(n)]


def _summary(values: list[float]) -> tuple[float, float]:
    """(mean, std) over repeats; std is the sample std (ddof=1), 0 for a single run."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _result(kind: str, values: list[float], protocol: FVDProtocol, i3d_hash: str, real: RealStats,
            num_fake: int, **extra) -> dict[str, Any]:
    mean, std = _summary(values)
    return {
        "kind": kind,
        "fvd": mean,
        "fvd_std": std,  # sample std over repeats (ddof=1); 0 for one repeat
        "fvd_per_repeat": list(values),
        "repeats": len(values),
        "num_real": real.num_clips,
        "num_fake": num_fake,  # per repeat
        "protocol": protocol_record(protocol, i3d_hash),
        "real_stats": {"key": real.key, "cache_path": real.cache_path, "cache_hit": real.cache_hit,
                       "dataset": real.description},
        **extra,
    }


def _as_real_stats(real_stats) -> RealStats:
    if isinstance(real_stats, RealStats):
        return real_stats
    mu, sigma = real_stats
    return RealStats(np.asarray(mu, np.float64), np.asarray(sigma, np.float64), -1)


def fvd_of_generator(generate_fn: GenerateFn, real_stats, protocol: FVDProtocol | str, i3d, *,
                     label_pool: Sequence[int] | None = None, seed: int = 0, batch_size: int = 8, device=None,
                     progress: bool = True) -> dict[str, Any]:
    """FVD of `generate_fn`'s samples against real statistics, `protocol.num_repeats` times.

    Repeat r generates `protocol.num_fake` clips with seeds `seed + r * num_fake + i` (disjoint
    across repeats, so the repeats are independent samples) and, for a class-conditional model,
    labels drawn i.i.d. from `label_pool` (the real clips' labels, so the class mix matches the
    real set's) with `np.random.default_rng([seed, r])`.

    Args:
        generate_fn: (seeds list[int], labels list[int] | None) -> (B, 3, T, H, W) in [-1, 1], T >= 16.
        real_stats: `real_feature_stats(...)` or a (mu, sigma) pair.
        label_pool: labels to draw from (None: unconditional).
    Returns:
        JSON-ready dict: fvd (mean), fvd_std, fvd_per_repeat, protocol record (name, hash, I3D
        weights hash), num_real / num_fake, seeds per repeat, the label draw.
    """
    protocol = as_protocol(protocol)
    real = _as_real_stats(real_stats)
    i3d_hash = i3d_weights_hash(i3d)
    if label_pool is not None and len(label_pool) == 0:
        raise ValueError("label_pool is empty; pass the real clips' labels or None for unconditional")
    nf, values, seeds_rec, label_counts = protocol.num_fake, [], [], []
    device = network_device(i3d, device)
    for r in range(protocol.num_repeats):
        seeds = [seed + r * nf + i for i in range(nf)]
        labels = None
        if label_pool is not None:
            labels = [int(v) for v in np.random.default_rng([seed, r]).choice(np.asarray(label_pool), size=nf)]
            label_counts.append({str(k): int(c) for k, c in zip(*np.unique(labels, return_counts=True))})
        desc = f"FVD repeat {r + 1}/{protocol.num_repeats}"
        with _progress(nf, desc, progress) as bar:
            def batches():
                for lo in range(0, nf, batch_size):
                    ys = None if labels is None else labels[lo:lo + batch_size]
                    video = generate_fn(seeds[lo:lo + batch_size], ys)  # (b, 3, T, H, W)
                    want = min(batch_size, nf - lo)
                    if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[0] != want:
                        raise ValueError(f"generate_fn must return ({want}, 3, T, H, W) videos, got "
                                         f"{getattr(video, 'shape', type(video).__name__)}")
                    # Resize where the I3D runs (a GPU sampler's output never visits the CPU).
                    yield clips_to_i3d_input(video.detach().to(device).float().clamp(-1, 1), protocol)
                    bar.update(want)

            feats = i3d_features(i3d, batches(), num_frames=None, resize=protocol.resize, device=device)
        values.append(frechet_distance(real.mu, real.sigma, *feature_stats(feats)))
        seeds_rec.append([seeds[0], seeds[-1] + 1])
    return _result("walt.eval.fvd_of_generator/1", values, protocol, i3d_hash, real, nf,
                   seeds={"base": seed, "per_repeat_range": seeds_rec, "rule": "seed + repeat * num_fake + i"},
                   labels=None if label_pool is None else {
                       "drawn_from": "real clip labels", "pool_size": len(label_pool),
                       "rng": "numpy default_rng([seed, repeat])", "counts_per_repeat": label_counts})


class FolderClips(Dataset):
    """Every video file under a folder (recursive, sorted), read from its first frame at its own
    resolution: {"video": (3, num_frames, H, W) in [-1, 1], "label": -1, "index": i, "path": str}.

    The reference FVD code scores given clips as they are (first 16 frames, resized to 224), so
    no crop or resize happens here; `clips_to_i3d_input` applies the protocol's resize. Files that
    cannot be opened or have fewer than `num_frames` frames are listed in `.skipped`.
    """

    def __init__(self, root: str | Path, num_frames: int = 16):
        from walt.data import VIDEO_EXTENSIONS, VideoReadError, video_info

        root = Path(root).expanduser()
        if not root.is_dir():
            raise ValueError(f"{root} is not a folder of videos")
        self.source, self.num_frames = root, int(num_frames)
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
                       and not p.name.startswith("."))
        if not files:
            raise ValueError(f"{root} holds no video files ({', '.join(VIDEO_EXTENSIONS)})")
        self.items, self.skipped = [], []
        for p in files:
            try:
                n = video_info(p).num_frames
            except (VideoReadError, OSError, ValueError) as e:
                self.skipped.append((str(p), " ".join(str(e).split()) or type(e).__name__))
                continue
            if n < self.num_frames:
                self.skipped.append((str(p), f"{n} frames < {self.num_frames}"))
            else:
                self.items.append(p)
        if not self.items:
            why = f"; e.g. {self.skipped[0][0]}: {self.skipped[0][1]}" if self.skipped else ""
            raise ValueError(f"{root}: no readable video with >= {self.num_frames} frames{why}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        from walt.data import read_video

        p = self.items[i]
        video = read_video(p, list(range(self.num_frames)), output="float")  # (3, F, H, W)
        return {"video": video, "label": -1, "index": i, "path": str(p)}


def fvd_from_folders(real_dir: str | Path | FolderClips, fake_dir: str | Path | FolderClips,
                     protocol: FVDProtocol | str, i3d,
                     cache_dir: str | Path | None = None, *, use_cache: bool = True, batch_size: int = 8,
                     device=None, progress: bool = True) -> dict[str, Any]:
    """FVD between two folders of videos (e.g. real clips and `walt sample` outputs).

    Real: the first `protocol.num_real` files (sorted; all when None), statistics cached as in
    `real_feature_stats`. Fake: repeat r uses files [r * num_fake, (r + 1) * num_fake), so the
    folder must hold num_fake * num_repeats videos. Videos are read from their first frame.
    A folder may also be given as an already probed `FolderClips`.
    Raises ValueError (with the counts needed) when a folder has too few usable videos.
    """
    protocol = as_protocol(protocol)

    def clips(d):
        if isinstance(d, FolderClips):
            if d.num_frames < protocol.num_frames:
                raise ValueError(f"{d.source}: clips of {d.num_frames} frames, the protocol scores "
                                 f"{protocol.num_frames}")
            return d
        return FolderClips(d, protocol.num_frames)

    real_ds, fake_ds = clips(real_dir), clips(fake_dir)
    real_dir, fake_dir = real_ds.source, fake_ds.source
    nf, reps = protocol.num_fake, protocol.num_repeats
    if len(fake_ds) < nf * reps:
        raise ValueError(f"FVD protocol {protocol.name!r} needs {nf * reps} generated videos ({nf} x {reps} "
                         f"repeat(s)) but {fake_dir} has {len(fake_ds)} usable; add videos or lower num_fake")
    real = real_feature_stats(real_ds, protocol, i3d, cache_dir, use_cache=use_cache, batch_size=batch_size,
                              device=device, progress=progress)
    i3d_hash = i3d_weights_hash(i3d)
    values, ranges = [], []
    for r in range(reps):
        idx = range(r * nf, (r + 1) * nf)
        feats = features_of_dataset(fake_ds, idx, protocol, i3d, batch_size, device, progress,
                                    f"I3D fake {r + 1}/{reps}")
        values.append(frechet_distance(real.mu, real.sigma, *feature_stats(feats)))
        ranges.append([idx.start, idx.stop])
    return _result("walt.eval.fvd_from_folders/1", values, protocol, i3d_hash, real, nf,
                   real_dir=str(Path(real_dir).expanduser()), fake_dir=str(Path(fake_dir).expanduser()),
                   fake_files_per_repeat=ranges, skipped={"real": real_ds.skipped, "fake": fake_ds.skipped},
                   seeds=None)


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def json_safe(obj: Any) -> Any:
    """Strict-JSON copy: +-inf -> "inf" / "-inf", NaN -> null (json.dump would write Infinity)."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        return obj if math.isfinite(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return json_safe(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_report(out_dir: str | Path, stem: str, result: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write `stem.json` (strict JSON) and `stem.md` into out_dir, each atomically."""
    from walt.checkpoint import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    j, m = out / f"{stem}.json", out / f"{stem}.md"
    text = json.dumps(json_safe(result), indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write(j, lambda tmp: Path(tmp).write_text(text))
    atomic_write(m, lambda tmp: Path(tmp).write_text(markdown))
    return j, m


def fvd_markdown(result: dict[str, Any], title: str = "FVD") -> str:
    """A short Markdown report: the number next to its protocol, weights hash and sample counts."""
    p = result["protocol"]
    val = f"{result['fvd']:.2f}" + (f" ± {result['fvd_std']:.2f}" if result["repeats"] > 1 else "")
    ref = "" if p["i3d_is_reference"] else " (NOT the reference Kinetics-400 I3D)"
    lines = [f"# {title}", "",
             "| metric | value | protocol [hash] | I3D weights sha256 | real clips | generated clips x repeats |",
             "|---|---|---|---|---|---|",
             f"| FVD | {val} | {protocol_label(p)} | `{short_hash(p['i3d_weights_sha256'])}`{ref} | "
             f"{result['num_real']} | {result['num_fake']} x {result['repeats']} |", ""]
    if result["repeats"] > 1:
        lines += ["Per repeat: " + ", ".join(f"{v:.2f}" for v in result["fvd_per_repeat"]) +
                  " (± = sample std over repeats).", ""]
    if result.get("seeds"):
        s = result["seeds"]
        lines += [f"Seeds: {s['rule']}, base {s['base']}; ranges {s['per_repeat_range']}.", ""]
    if result.get("labels"):
        lab = result["labels"]
        lines += [f"Class labels: drawn i.i.d. from {lab['drawn_from']} ({lab['pool_size']} values), {lab['rng']}.", ""]
    rs = result["real_stats"]
    lines += [f"Real statistics: key `{rs['key']}` ({'cache hit' if rs['cache_hit'] else 'computed'}).", ""]
    if p["config"]["num_fake"] < 2048:
        lines += [f"Note: {p['config']['num_fake']} generated clips is far below the 2048-10000 of published "
                  "protocols; FVD is biased upwards at small sample counts, so compare only numbers with the "
                  "same protocol hash.", ""]
    return "\n".join(lines)


__all__ = [
    "FolderClips", "RealStats", "clips_to_i3d_input", "network_device", "dataset_labels", "default_stats_cache",
    "describe_dataset_for_cache", "features_of_dataset", "fvd_from_folders", "fvd_markdown", "fvd_of_generator",
    "i3d_weights_hash", "json_safe", "load_fvd_i3d", "protocol_label", "protocol_record", "real_feature_stats",
    "short_hash", "stats_cache_key", "write_report",
]
