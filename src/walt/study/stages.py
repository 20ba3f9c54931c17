"""The training stages of a study row (each returns a JSON-ready record for its `StageLog`).

    vae    train the autoencoder                (walt.train.train_vae; SPEC §1)
    cache  encode the training pool             (walt.data.latent_cache; tokens per clip follow the design)
    walt   train the W.A.L.T on the cache       (walt.train.denoiser_loop; SPEC §2-3), keeping EMA snapshots

With a budget each training stage runs to a wall-clock deadline (`walt.experiment.recipes`: it
measures its pace on its first steps and re-plans as it goes), so every row gets the same
minutes; without one, fixed step counts. The denoiser's EMA weights are also saved at every
multiple of `snapshot_every` steps (snapshots/step_*.safetensors): the study compares the rows
at the largest such step that every row reached (equal steps) as well as at their final weights
(equal wall-clock). The recipe (losses, optimiser, EMA) is the demo's (`walt.experiment.recipes`).
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from walt.experiment import recipes
from walt.experiment.budget import read_log
from walt.study.study_config import StudyConfig

__all__ = ["WaltRecipe", "build_vae", "train_vae_stage", "load_vae", "cache_stage", "latent_dataset", "build_walt",
           "walt_train_config", "train_walt_stage", "sampling_precision", "snapshot_path", "remove_training_state"]


def _nothing(step: int | None = None) -> None:
    return None


# ----------------------------------------------------------------------------- stage: autoencoder


def build_vae(cfg: StudyConfig, design: dict[str, Any]):
    return recipes.small_vae(cfg.seed, **cfg.vae_kwargs(), **design)  # every row starts from the same seed


def train_vae_stage(cfg: StudyConfig, design: dict[str, Any], data, folder: Path, device: torch.device,
                    progress: bool, seconds: float | None = None, resume: bool = False,
                    check: Callable = _nothing, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the design's autoencoder for `seconds` (or `cfg.vae_steps` steps) into `folder`."""
    from walt.autoencoder.losses import VAELossConfig
    from walt.train.vae import train_vae

    vae = build_vae(cfg, design).to(device)
    batches = recipes.clip_batches(data, cfg.vae_batch_size, cfg.seed, cfg.vae_train_frames)
    loss = VAELossConfig(recon_type=cfg.vae_recon_type, kl_weight=cfg.vae_kl_weight)

    def tcfg(steps: int, ckpt_every: int):
        return recipes.small_vae_config(steps, cfg.vae_batch_size, cfg.vae_lr, cfg.vae_warmup_steps, cfg.seed, device,
                                        loss, log_every=1, ckpt_every=ckpt_every, decoder_noise=cfg.vae_decoder_noise)

    t0 = time.perf_counter()
    if seconds is None:
        if not resume:
            shutil.rmtree(folder, ignore_errors=True)
        steps = train_vae(tcfg(cfg.vae_steps, max(1, cfg.vae_steps // 4)), vae, batches, folder, progress=progress).step
        check(steps)
    else:
        steps = recipes.train_vae_to_deadline(vae, batches, folder, tcfg, time.time() + seconds, cfg.vae_warmup_steps,
                                              cfg.calibration_steps, cfg.vae_min_steps, progress, say, resume=resume,
                                              check=check)
    rows = read_log(folder / "log.csv")
    return {"steps": steps, "seconds": time.perf_counter() - t0, "params": sum(p.numel() for p in vae.parameters()),
            "train_psnr": statistics.mean(r["psnr"] for r in rows[-5:]) if rows and "psnr" in rows[-1] else None}


def load_vae(folder: Path, device: torch.device):
    return recipes.load_small_vae(folder, device)


def cache_stage(vae, data, folder: Path, device: torch.device, progress: bool) -> dict[str, Any]:
    return recipes.cache_stage(vae, data, folder, device, progress, shard_size=256, batch_size=16)


def latent_dataset(cache: Path, normalize: bool = True):
    """The cache as a `LatentDataset`; `normalize=False` swaps its stats for the identity.

    `train_denoiser` always applies `dataset.stats`, so the ablation replaces the stats themselves
    (the trained checkpoint then records identity stats too, and sampling uses them).
    """
    from walt.data.latent_dataset import LatentDataset

    ds = LatentDataset(cache, normalize=normalize)
    if not normalize:
        from walt.autoencoder import LatentStats

        c = ds.latent_shape[0]
        ds.stats = LatentStats(mean=torch.zeros(c), std=torch.ones(c))  # (z - 0) / 1: raw latents
    return ds


# ----------------------------------------------------------------------------- stage: W.A.L.T


@dataclass(frozen=True)
class WaltRecipe:
    """What the ablation varies in stage 2 (the encoder study uses the defaults = the paper's)."""

    walt_overrides: tuple[tuple[str, Any], ...] = ()  # WALTConfig fields
    p_self_cond: float = 0.9
    diffusion: tuple[tuple[str, Any], ...] = ()  # DiffusionConfig fields
    normalize: bool = True
    st_window_divisor: int = 2  # spatiotemporal window = latent frame / this (per side); see build_walt

    def build_kwargs(self) -> dict[str, Any]:
        """The `build_walt` keyword arguments of this recipe."""
        return {"st_window_divisor": self.st_window_divisor, **dict(self.walt_overrides)}


def build_walt(cfg: StudyConfig, latent_shape, num_classes: int, seed: int, st_window_divisor: int = 2,
               **overrides: Any):
    """The study's W.A.L.T (`cfg.walt_kwargs()`: the demo's size) for latents (c, t, h, w): spatial
    windows = one latent frame of tokens, spatiotemporal windows = all frames x (h/p, w/p) /
    `st_window_divisor` (default 2: half the frame per side, the paper's 1x16x16 / 5x8x8 on 16x16
    tokens; 4 is its smaller 5x4x4, Table 3). A latent the patch does not divide is a ValueError."""
    _, t, h, w = latent_shape
    kw = {**cfg.walt_kwargs(), **overrides}
    p, d = kw["patch_size"], int(st_window_divisor)
    hp, wp = h // p, w // p
    return recipes.small_walt(latent_shape, num_classes, (1, hp, wp), (t, max(1, hp // d), max(1, wp // d)), seed, **kw)


def walt_train_config(cfg: StudyConfig, recipe: WaltRecipe, batch: int):
    """`tcfg(steps, log_every)`: the row's `DenoiserTrainConfig` (the demo's recipe, the study's precision)."""
    from walt.diffusion.loss import DiffusionLossConfig
    from walt.diffusion.schedule import DiffusionConfig

    loss = DiffusionLossConfig(p_self_cond=recipe.p_self_cond)
    diffusion = DiffusionConfig(**{"snr_shift": cfg.walt_snr_shift, **dict(recipe.diffusion)})
    return lambda steps, log_every: recipes.walt_config(
        steps, batch, cfg.walt_lr, cfg.walt_warmup_steps, cfg.walt_ema_decay, cfg.seed, loss, diffusion,
        log_every=log_every, ckpt_every=10**9, precision=cfg.walt_precision)


def sampling_precision(cfg: StudyConfig, device: torch.device):
    """(autocast context, its name) the denoiser samples under: the precision it trained in ("fast":
    bf16 where the CPU runs it natively, ~2x the fp32 sampling speed on this project's CPU)."""
    from walt.train.precision import autocast_for, resolve_precision

    precision = resolve_precision(cfg.walt_precision, device)
    return autocast_for(precision, device), precision


def snapshot_path(folder: Path, step: int) -> Path:
    return Path(folder) / "snapshots" / f"step_{int(step):07d}.safetensors"


def _snapshotter(folder: Path) -> Callable[[int], None]:
    """Keep the EMA weights of the checkpoint just written at `step` (a `Stage.load`-able file)."""
    from walt.checkpoint import load_checkpoint, save_checkpoint
    from walt.train.common import latest_checkpoint

    def save(step: int) -> None:
        state = load_checkpoint(latest_checkpoint(folder / "checkpoints"))
        if int(state["step"]) != step:
            raise RuntimeError(f"snapshot at step {step}: the newest checkpoint is of step {state['step']}")
        save_checkpoint(snapshot_path(folder, step), {k: v for k, v in state.items()
                                                      if k not in ("model", "optimizer", "rng")})

    return save


def train_walt_stage(cfg: StudyConfig, recipe: WaltRecipe, cache: Path, folder: Path, device: torch.device,
                     progress: bool, seconds: float | None = None, resume: bool = False,
                     check: Callable = _nothing, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the row's W.A.L.T on `cache` for `seconds` (or `cfg.walt_steps` steps) into `folder`."""
    from walt.train.precision import resolve_precision

    ds = latent_dataset(cache, recipe.normalize)
    batch = min(cfg.walt_batch_size, len(ds))
    net = build_walt(cfg, ds.latent_shape, ds.num_classes, cfg.seed, **recipe.build_kwargs()).to(device)
    tcfg, snap = walt_train_config(cfg, recipe, batch), _snapshotter(folder)
    t0 = time.perf_counter()
    if seconds is None:
        _, train_until = recipes.walt_trainer(net, ds, folder, tcfg, progress, resume=resume,
                                              snapshot_every=cfg.snapshot_every, on_snapshot=snap)
        steps = train_until(cfg.walt_steps, None)
        check(steps)
    else:
        steps = recipes.train_walt_to_deadline(net, ds, folder, tcfg, time.time() + seconds, cfg.calibration_steps,
                                               cfg.walt_min_steps, progress, "denoiser", say, resume=resume,
                                               check=check, snapshot_every=cfg.snapshot_every, on_snapshot=snap)
    rows = read_log(folder / "log.csv")
    c, t, h, w = ds.latent_shape
    p = net.config.patch_size
    return {"steps": steps, "seconds": time.perf_counter() - t0, "params": sum(x.numel() for x in net.parameters()),
            "final_loss": statistics.mean(r["loss"] for r in rows[-3:]), "batch_size": batch,
            "precision": resolve_precision(cfg.walt_precision, device), "attention": net.config.attention,
            "st_window": "x".join(str(v) for v in net.config.spatiotemporal_window),
            "latent_shape": [c, t, h, w], "tokens_per_clip": t * (h // p) * (w // p),
            "snapshots": sorted(int(f.stem.split("_")[1]) for f in (folder / "snapshots").glob("step_*.safetensors"))}


def remove_training_state(folder: Path) -> None:
    """Drop a finished stage's resumable checkpoints (the exported weights and snapshots stay)."""
    shutil.rmtree(Path(folder) / "checkpoints", ignore_errors=True)
