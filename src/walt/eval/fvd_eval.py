"""FVD evaluation runners: FVD of a generator, FVD of two video folders (`walt eval fvd`).

    from walt.eval.fvd import fvd_protocol
    from walt.eval.fvd_eval import real_feature_stats, fvd_of_generator, fvd_from_folders, load_fvd_i3d
    i3d = load_fvd_i3d()
    proto = fvd_protocol("smoke")
    real = real_feature_stats(dataset, proto, i3d)               # cached; `mu, sigma = real` works
    res = fvd_of_generator(lambda seeds, labels: videos, real, proto, i3d, label_pool=labels)
    res = fvd_from_folders("real_videos/", "samples/", proto, i3d)

FVD (Unterthiner et al. 2018) compares Gaussians fitted to Kinetics-400 I3D logits of real and
generated clips; W.A.L.T reports it on UCF-101 with the MAGVIT protocol (10K samples against the
train split, 4 runs, mean +- std; paper §5.1, Tables 1-2). This module scores the generated side
and repeats; the pieces it builds on live in

  - `walt.eval.fvd_stats`: clips -> I3D inputs and features, the cached real statistics, and the
    check that the real dataset follows the protocol's split and frame stride;
  - `walt.eval.fvd_record`: the network's identity, the protocol record every result carries,
    and the JSON / Markdown reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from walt.eval.fvd import FVDProtocol, feature_stats, frechet_distance, i3d_features
from walt.eval.fvd_record import as_protocol, i3d_weights_hash, protocol_record
from walt.eval.fvd_stats import (
    RealStats,
    clips_to_i3d_input,
    features_of_dataset,
    network_device,
    progress_bar,
    real_feature_stats,
)

# generate_fn(seeds, labels) -> (B, 3, T, H, W) videos in [-1, 1]; labels is None when unconditional.
GenerateFn = Callable[[list[int], "list[int] | None"], torch.Tensor]


def load_fvd_i3d(path: str | Path | None = None, device: str | torch.device = "cpu",
                 allow_unverified: bool = False) -> nn.Module:
    """The Kinetics-400 I3D used by every FVD here (`walt.eval.i3d.load_i3d`).

    One indirection so the CLI and tests can swap the network (tests inject stand-ins).
    Raises `walt.eval.i3d_weights.I3DWeightsError` when the weights cannot be had or are not the
    pinned reference file (unless `allow_unverified`).
    """
    from walt.eval.i3d import load_i3d

    return load_i3d(path, device=device, allow_unverified=allow_unverified)


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
        with progress_bar(nf, desc, progress) as bar:
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
    no crop or resize happens here; `clips_to_i3d_input` applies the protocol's resize.
    `frame_stride` takes every k-th frame (the protocol's stride, for real videos). Files that
    cannot be opened or have too few frames are listed in `.skipped`.
    """

    def __init__(self, root: str | Path, num_frames: int = 16, frame_stride: int = 1):
        from walt.data import VIDEO_EXTENSIONS, VideoReadError, video_info

        root = Path(root).expanduser()
        if not root.is_dir():
            raise ValueError(f"{root} is not a folder of videos")
        if int(frame_stride) != frame_stride or frame_stride < 1:
            raise ValueError(f"frame_stride must be a positive integer, got {frame_stride!r}")
        self.source, self.num_frames, self.frame_stride = root, int(num_frames), int(frame_stride)
        need = (self.num_frames - 1) * self.frame_stride + 1  # source frames one clip spans
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
            if n < need:
                self.skipped.append((str(p), f"{n} frames < {need}"))
            else:
                self.items.append(p)
        if not self.items:
            why = f"; e.g. {self.skipped[0][0]}: {self.skipped[0][1]}" if self.skipped else ""
            raise ValueError(f"{root}: no readable video with >= {need} frames{why}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        from walt.data import read_video

        p = self.items[i]
        frames = list(range(0, (self.num_frames - 1) * self.frame_stride + 1, self.frame_stride))
        video = read_video(p, frames, output="float")  # (3, F, H, W)
        return {"video": video, "label": -1, "index": i, "path": str(p)}


def fvd_from_folders(real_dir: str | Path | FolderClips, fake_dir: str | Path | FolderClips,
                     protocol: FVDProtocol | str, i3d,
                     cache_dir: str | Path | None = None, *, use_cache: bool = True, batch_size: int = 8,
                     device=None, progress: bool = True) -> dict[str, Any]:
    """FVD between two folders of videos (e.g. real clips and `walt sample` outputs).

    Real: the first `protocol.num_real` files (sorted; all when None), read with the protocol's
    frame stride, statistics cached as in `real_feature_stats` (a folder has no splits: the
    protocol's real_split must be "train"). Fake: repeat r uses files [r * num_fake, (r + 1) *
    num_fake) read frame by frame, so the folder must hold num_fake * num_repeats videos.
    Videos are read from their first frame.
    A folder may also be given as an already probed `FolderClips`.
    Raises ValueError (with the counts needed) when a folder has too few usable videos.
    """
    protocol = as_protocol(protocol)

    def clips(d, stride: int):
        if isinstance(d, FolderClips):
            if d.num_frames < protocol.num_frames:
                raise ValueError(f"{d.source}: clips of {d.num_frames} frames, the protocol scores "
                                 f"{protocol.num_frames}")
            if d.frame_stride != stride:
                raise ValueError(f"{d.source}: read with frame_stride={d.frame_stride}, expected {stride} "
                                 "(real videos: the protocol's frame_stride; generated videos: 1)")
            return d
        return FolderClips(d, protocol.num_frames, stride)

    # The protocol's stride applies to the real videos; generated ones are scored as generated.
    real_ds, fake_ds = clips(real_dir, protocol.frame_stride), clips(fake_dir, 1)
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


__all__ = [
    "FolderClips", "RealStats", "clips_to_i3d_input", "network_device", "dataset_labels", "features_of_dataset", "fvd_from_folders", "fvd_of_generator", "i3d_weights_hash", "load_fvd_i3d", "protocol_record", "real_feature_stats",
]
