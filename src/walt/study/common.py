"""Shared settings and bookkeeping of the two studies (the pipeline stages are in `stages.py`).

Both `walt study encoder` (SPEC §6) and `walt study ablation` (paper Table 3) run the same small
pipeline many times under one training budget and compare what comes out. This module holds

  - `StudyConfig` and its presets ("cpu", "gpu", "micro"): data sizes, model sizes, budget, eval;
  - `StageStore`: resumability. Every finished stage writes `stages/<name>.json` atomically and a
    rerun returns the stored result instead of redoing it (the trainers and the latent cache
    also resume *inside* a stage from their own checkpoints / shards);
  - the FVD helpers: the Kinetics-400 I3D, the protocol record, real-clip features cached once.

FVD here is the I3D Frechet distance between a handful of generated (or reconstructed) clips and
a handful of real held-out clips. With 16-64 samples of 400-d features it is strongly biased
upwards and noisy: comparable only between rows of the same study (same protocol hash).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from walt.io import atomic_write
from walt.config import replace_config


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class StudyConfig:
    """What every design / variant of a study shares: data sizes, model sizes, training budget, eval.

    The budget is either fixed step counts (`vae_steps`, `walt_steps`, identical for every row) or,
    with `budget_minutes`, the same wall-clock minutes of training per row (`vae_fraction` of it for
    the autoencoder), turned into steps by timing a few steps of each row's own models.
    """

    # ---- data ----
    resolution: int = 32
    num_frames: int = 17  # 1 + 8k fits every f_t in {1, 2, 4, 8}; >= 16 for the I3D
    train_clips: int = 128  # the autoencoder's training pool = the latent cache
    eval_clips: int = 16  # held-out real clips: reconstruction metrics and the FVD reference set
    fake_clips: int = 16  # generated clips per row for FVD (and the sampling-throughput timing)
    # ---- stage 1: autoencoder (CausalVAE; the design sets f_t, f_s, c, causal) ----
    vae_base_channels: int = 8
    vae_channel_multipliers: tuple[int, ...] = (1, 2, 2)
    vae_num_res_blocks: int = 1
    vae_norm_groups: int = 4
    vae_train_frames: int = 9  # training crops (fully convolutional + causal: shorter clips train faster)
    vae_steps: int = 200
    vae_batch_size: int = 4
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    # ---- stage 2: W.A.L.T (WALT "tiny" preset + these) ----
    walt_hidden_size: int = 96
    walt_depth: int = 4
    walt_num_heads: int = 4
    patch_size: int = 1
    walt_steps: int = 300
    walt_batch_size: int = 8
    walt_lr: float = 1e-3
    walt_ema_decay: float = 0.995
    sample_steps: int = 50  # DDIM steps (paper: 50)
    # ---- budget / eval ----
    budget_minutes: float | None = None  # per row; replaces vae_steps / walt_steps when set
    vae_fraction: float = 0.5
    fvd: bool = True
    fvd_protocol: str = "smoke"  # name of the walt.eval.fvd protocol, with the sample counts above
    seed: int = 0

    def __post_init__(self) -> None:
        for k in ("resolution", "num_frames", "train_clips", "vae_steps", "vae_batch_size", "walt_steps",
                  "walt_batch_size", "sample_steps", "patch_size", "vae_train_frames"):
            if getattr(self, k) < 1:
                raise ValueError(f"StudyConfig.{k} must be >= 1, got {getattr(self, k)}")
        if self.eval_clips < 2 or self.fake_clips < 2:
            raise ValueError("eval_clips and fake_clips must be >= 2 (FVD needs a covariance)")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise ValueError(f"budget_minutes must be > 0, got {self.budget_minutes}")
        if not 0 < self.vae_fraction < 1:
            raise ValueError(f"vae_fraction must be in (0, 1), got {self.vae_fraction}")
        if self.fvd and self.num_frames < 16:
            raise ValueError(f"FVD needs clips of >= 16 frames, got num_frames={self.num_frames}; "
                             "use 17 frames or turn FVD off (--no-fvd)")

    def vae_kwargs(self) -> dict[str, Any]:
        return dict(base_channels=self.vae_base_channels, channel_multipliers=self.vae_channel_multipliers,
                    num_res_blocks=self.vae_num_res_blocks, norm_groups=self.vae_norm_groups)


def _cpu() -> StudyConfig:
    """2-core CPU: 32x32 clips of 17 frames, ~0.3M-parameter autoencoders, ~0.6M-parameter W.A.L.T.

    Measured on a loaded 2-core machine with 1 torch thread: ~0.45 s per autoencoder step (batch 4,
    9-frame crops) and ~0.4 s per W.A.L.T step (batch 8, 80 tokens); on an oversubscribed machine
    one thread is ~10x faster than two (`--threads 1`).
    """
    return StudyConfig()


def _gpu() -> StudyConfig:
    """One GPU: 64x64 clips, bigger models, longer training, the full smoke-protocol sample counts."""
    return StudyConfig(resolution=64, train_clips=2048, eval_clips=64, fake_clips=64, vae_base_channels=64,
                       vae_channel_multipliers=(1, 2, 2, 4), vae_num_res_blocks=2, vae_norm_groups=32,
                       vae_steps=2000, vae_batch_size=16, vae_lr=5e-4, walt_hidden_size=384, walt_depth=8,
                       walt_num_heads=6, walt_steps=4000, walt_batch_size=64, walt_lr=5e-4, walt_ema_decay=0.999)


def _micro() -> StudyConfig:
    """Tests: every stage in about a second (plumbing only; the numbers mean nothing)."""
    return StudyConfig(resolution=16, num_frames=17, train_clips=4, eval_clips=2, fake_clips=2, vae_base_channels=4,
                       vae_channel_multipliers=(1, 2), vae_norm_groups=4, vae_steps=2, vae_batch_size=2,
                       walt_hidden_size=16, walt_depth=2, walt_num_heads=2, walt_steps=2, walt_batch_size=2,
                       sample_steps=2)


STUDY_PRESETS: dict[str, Callable[[], StudyConfig]] = {"cpu": _cpu, "gpu": _gpu, "micro": _micro}


def study_config(name: str, **overrides: Any) -> StudyConfig:
    if name not in STUDY_PRESETS:
        raise ValueError(f"unknown study preset {name!r}; choose one of {sorted(STUDY_PRESETS)}")
    return replace_config(STUDY_PRESETS[name](), **overrides)


# ----------------------------------------------------------------------------- bookkeeping


def say(msg: str) -> None:
    print(f"[walt study] {msg}", flush=True)


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, default=float)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


class StageStore:
    """Finished stages of one row as `folder/stages/<name>.json`, each written atomically."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder) / "stages"

    def get(self, name: str) -> dict[str, Any] | None:
        p = self.folder / f"{name}.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored result of stage `name`, or run `fn()` now and store what it returns."""
        done = self.get(name)
        if done is not None:
            return done
        t0 = time.perf_counter()
        info = fn()
        info.setdefault("stage_seconds", time.perf_counter() - t0)
        write_json(self.folder / f"{name}.json", info)
        return info


class StudySettingsError(ValueError):
    """The output folder holds a study with other settings (raised before any work)."""


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to mix rows of different settings in one folder (their numbers would not compare)."""
    path = out / "study.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(settings, default=float)):
            keys = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise StudySettingsError(f"{out} holds a study with other settings ({', '.join(keys) or 'values'}); "
                             "use another --out, or delete it to start over")
    write_json(path, settings)


def load_1min() -> float | None:
    """The machine's 1-minute load average (None where the OS has none): throughput context per row."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info: dict[str, Any] = {"platform": platform.platform(), "torch": torch.__version__, "cpu": cpu,
                            "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


# ----------------------------------------------------------------------------- data


def stack_videos(dataset, ids) -> torch.Tensor:
    return torch.stack([dataset[int(i)]["video"] for i in ids])  # (B, 3, T, H, W)


def vae_batch_fn(dataset, cfg: StudyConfig) -> Callable[[int], torch.Tensor]:
    """`step -> (B, 3, vae_train_frames, H, W)`: clips drawn by a (seed, step) generator (train_vae's contract)."""

    def batch_fn(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        ids = torch.randint(len(dataset), (cfg.vae_batch_size,), generator=g)
        return stack_videos(dataset, ids)[:, :, :cfg.vae_train_frames]

    return batch_fn


def _seconds_per_step(log_csv: Path, key: str, batch: int) -> float:
    import csv

    with log_csv.open(newline="") as f:
        rows = [r for r in csv.DictReader(f)]
    rows = rows[1:] if len(rows) > 1 else rows  # the first step pays one-time costs
    per = [batch / float(r[key]) if key == "clips_per_s" else float(r[key]) for r in rows if r.get(key)]
    return statistics.median(per)


def steps_for_budget(seconds: float, sec_per_step: float) -> int:
    return max(2, int(seconds / max(sec_per_step, 1e-9)))


# ----------------------------------------------------------------------------- FVD


def load_fvd_network(device: torch.device):
    """The Kinetics-400 I3D, or a ValueError saying how to get it / how to run without it."""
    from walt.eval.i3d import load_i3d
    from walt.eval.i3d_weights import I3DWeightsError

    try:
        return load_i3d(device=device)
    except I3DWeightsError as e:
        raise ValueError(f"the I3D weights for FVD are not available ({' '.join(str(e).split())}); "
                         "set WALT_I3D_WEIGHTS to i3d-kinetics-400.ckpt, or pass --no-fvd") from None


def prepare_fvd(cfg: StudyConfig, i3d, device: torch.device):
    """(network or None, protocol record or None): the I3D (loaded unless injected) and what results record
    about it (protocol name / hash / overrides, I3D weights hash, whether it is the reference network)."""
    if not cfg.fvd:
        return None, None
    from walt.eval.fvd_record import i3d_weights_hash, protocol_record

    i3d = i3d if i3d is not None else load_fvd_network(device)
    return i3d, protocol_record(fvd_protocol_for(cfg), i3d_weights_hash(i3d))


def fvd_identity(fvd_record: dict[str, Any] | None) -> dict[str, Any]:
    """Columns every result row carries: the FVD protocol (name, hash) and the I3D weights that
    measured it, and whether those are the reference network (all None without FVD)."""
    rec = fvd_record or {}
    return {"fvd_protocol": rec.get("name"), "fvd_protocol_hash": rec.get("hash"),
            "i3d_weights_sha256": rec.get("i3d_weights_sha256"), "i3d_is_reference": rec.get("i3d_is_reference")}


def fvd_protocol_for(cfg: StudyConfig):
    from walt.eval.fvd import fvd_protocol

    return fvd_protocol(cfg.fvd_protocol, num_fake=cfg.fake_clips, num_real=cfg.eval_clips)


def features(i3d, videos: torch.Tensor, cfg: StudyConfig) -> np.ndarray:
    from walt.eval.fvd import i3d_features

    p = fvd_protocol_for(cfg)
    return i3d_features(i3d, videos, batch_size=4, num_frames=p.num_frames, resize=p.resize, center_crop=p.center_crop)


def real_features(i3d, real: torch.Tensor, cfg: StudyConfig, path: Path) -> np.ndarray:
    """I3D features of the real held-out clips, computed once per study and cached in `path` (.npy)."""
    if path.is_file():
        feats = np.load(path)
        if feats.shape[0] == real.shape[0]:
            return feats
    feats = features(i3d, real, cfg)
    atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), feats))
    return feats


def real_vs_real_fvd(i3d, train_data, real_feats: np.ndarray, cfg: StudyConfig, path: Path) -> float:
    """FVD between the held-out real clips and as many *other* real clips (the training pool's first ones).

    Two samples of the same distribution: the protocol's floor at these sample counts (bias + noise).
    A row's FVD means something only as its distance above this floor.
    """
    from walt.eval.fvd import fvd

    n = min(len(train_data), real_feats.shape[0])
    other = real_features(i3d, stack_videos(train_data, range(n)), cfg, path)
    return fvd(real_feats, other)
