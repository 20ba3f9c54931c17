"""The pipeline stages a study row runs (each returns a JSON-ready dict for `StageStore`).

    vae       train the autoencoder                  (walt.train.train_vae; SPEC §1)
    recon     reconstruct held-out clips             (PSNR / SSIM / rFVD, encode / decode clips/s)
    cache     encode the training pool               (walt.data.latent_cache.encode_dataset)
    walt      train a small W.A.L.T on the cache     (walt.train.denoiser.train_denoiser; SPEC §2-3)
    generate  DDIM-sample, decode, time, FVD         (walt.pipeline.generate; walt.eval.fvd)

`plan_vae_steps` / `plan_walt_steps` turn a wall-clock budget into a step count by timing a few
steps of the row's own models (or return the fixed step count). Throughputs are wall-clock
times of the real work (the FVD clips), after one warm-up call. The builders, training settings
and the cache are `walt.experiment.recipes`' (the demo's too).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from walt.config import replace_config
from walt.experiment import recipes
from walt.experiment.budget import read_log, seconds_per_step, steps_in
from walt.study.config import StudyConfig
from walt.study.fvd import features


# ----------------------------------------------------------------------------- stage: autoencoder


def build_vae(cfg: StudyConfig, seed: int, **design: Any):
    return recipes.small_vae(seed, **cfg.vae_kwargs(), **design)  # every row starts from the same seed


def _vae_train_config(cfg: StudyConfig, steps: int, device: torch.device):
    from walt.autoencoder.losses import VAELossConfig

    return recipes.small_vae_config(steps, cfg.vae_batch_size, cfg.vae_lr, min(10, steps), cfg.seed, device,
                                    VAELossConfig(kl_weight=cfg.vae_kl_weight), log_every=max(1, min(10, steps // 10)),
                                    ckpt_every=max(10, steps // 4))


def _batches(data, cfg: StudyConfig):
    return recipes.clip_batches(data, cfg.vae_batch_size, cfg.seed, cfg.vae_train_frames)


def plan_vae_steps(cfg: StudyConfig, design: dict[str, Any], data, device: torch.device) -> dict[str, Any]:
    """Fixed `vae_steps`, or the steps that fit `vae_fraction * budget_minutes` at this design's measured pace."""
    if cfg.budget_minutes is None:
        return {"steps": cfg.vae_steps, "sec_per_step": None}
    from walt.train.vae import train_vae

    with tempfile.TemporaryDirectory() as tmp:
        calib = replace_config(_vae_train_config(cfg, 4, device), log_every=1)
        train_vae(calib, build_vae(cfg, cfg.seed, **design).to(device), _batches(data, cfg), tmp, progress=False)
        sec = seconds_per_step(read_log(Path(tmp) / "log.csv"), cfg.vae_batch_size, "clips_per_s")
    return {"steps": steps_in(cfg.vae_fraction * cfg.budget_minutes * 60, sec, minimum=2), "sec_per_step": sec}


def train_vae_stage(cfg: StudyConfig, design: dict[str, Any], data, folder: Path, steps: int,
                    device: torch.device, progress: bool) -> dict[str, Any]:
    from walt.train.vae import train_vae

    vae = build_vae(cfg, cfg.seed, **design).to(device)
    t0 = time.perf_counter()
    res = train_vae(_vae_train_config(cfg, steps, device), vae, _batches(data, cfg), folder, progress=progress)
    return {"steps": res.step, "seconds": time.perf_counter() - t0, "params": sum(p.numel() for p in vae.parameters()),
            "train_psnr": res.metrics.get("psnr"), "train_clips_per_s": res.metrics.get("clips_per_s")}


def load_vae(folder: Path, device: torch.device):
    return recipes.load_small_vae(folder, device)


# ----------------------------------------------------------------------------- stage: reconstruction


def _timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


@torch.no_grad()
def recon_stage(vae, real: torch.Tensor, cfg: StudyConfig, device: torch.device, i3d=None,
                real_feats: np.ndarray | None = None, batch: int = 4) -> dict[str, Any]:
    """PSNR / SSIM / rFVD of held-out clips `real` (N, 3, T, H, W), and encode / decode clips per second."""
    from walt.eval.fvd import fvd
    from walt.eval.metrics import psnr, ssim

    vae.decode(vae.encode(real[:1].to(device)))  # warm-up: first-call allocations are not throughput
    recons, t_enc, t_dec = [], 0.0, 0.0
    for i in range(0, real.shape[0], batch):
        x = real[i:i + batch].to(device)
        z, te = _timed(lambda: vae.encode(x), device)
        r, td = _timed(lambda: vae.decode(z), device)
        recons.append(r.float().clamp(-1, 1).cpu())
        t_enc, t_dec = t_enc + te, t_dec + td
    recon = torch.cat(recons)  # (N, 3, T, H, W)
    c, t, h, w = vae.latent_shape(*real.shape[2:])
    info = {"psnr": float(psnr(recon, real)), "ssim": float(ssim(recon, real)),
            "encode_clips_per_s": real.shape[0] / t_enc, "decode_clips_per_s": real.shape[0] / t_dec,
            "latent_shape": [c, t, h, w], "rfvd": None}
    if i3d is not None:
        info["rfvd"] = fvd(real_feats, features(i3d, recon, cfg))
    return info


# ----------------------------------------------------------------------------- stage: latent cache


def cache_stage(vae, data, folder: Path, device: torch.device, progress: bool) -> dict[str, Any]:
    return recipes.cache_stage(vae, data, folder, device, progress, shard_size=64, batch_size=8)


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


def build_walt(cfg: StudyConfig, latent_shape, num_classes: int, seed: int, st_window_divisor: int = 2,
               **overrides: Any):
    """A small W.A.L.T for latents (c, t, h, w): spatial windows = one latent frame, spatiotemporal
    windows = all frames x (h/p, w/p) / `st_window_divisor` (default 2: half the frame's height and
    width, the paper's 1x16x16 / 5x8x8 on 16x16 latents; 4 is its smaller 5x4x4, Table 3)."""
    _, t, h, w = latent_shape
    hp, wp, d = h // cfg.patch_size, w // cfg.patch_size, int(st_window_divisor)
    return recipes.small_walt(latent_shape, num_classes, (1, hp, wp), (t, max(1, hp // d), max(1, wp // d)), seed,
                              **{"patch_size": cfg.patch_size, "hidden_size": cfg.walt_hidden_size,
                                 "depth": cfg.walt_depth, "num_heads": cfg.walt_num_heads, **overrides})


def _walt_train_config(cfg: StudyConfig, steps: int, batch: int, p_self_cond: float, diffusion: dict[str, Any]):
    from walt.diffusion.loss import DiffusionLossConfig
    from walt.diffusion.schedule import DiffusionConfig

    return recipes.walt_config(steps, batch, cfg.walt_lr, min(50, steps // 10), cfg.walt_ema_decay, cfg.seed,
                               DiffusionLossConfig(p_self_cond=p_self_cond), DiffusionConfig(**diffusion),
                               log_every=max(1, min(10, steps // 10)), ckpt_every=max(10, steps // 4))


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


def plan_walt_steps(cfg: StudyConfig, recipe: WaltRecipe, cache: Path, device: torch.device) -> dict[str, Any]:
    if cfg.budget_minutes is None:
        return {"steps": cfg.walt_steps, "sec_per_step": None}
    from walt.train.denoiser import train_denoiser

    ds = latent_dataset(cache, recipe.normalize)
    batch = min(cfg.walt_batch_size, len(ds))
    net = build_walt(cfg, ds.latent_shape, ds.num_classes, cfg.seed, **recipe.build_kwargs()).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        tcfg = replace_config(_walt_train_config(cfg, 4, batch, recipe.p_self_cond, dict(recipe.diffusion)),
                              log_every=1)
        train_denoiser(tcfg, net, ds, tmp, progress=False)
        sec = seconds_per_step(read_log(Path(tmp) / "log.csv"), batch, "sec_per_step")
    seconds = (1 - cfg.vae_fraction) * cfg.budget_minutes * 60
    return {"steps": steps_in(seconds, sec, minimum=2), "sec_per_step": sec}


def train_walt_stage(cfg: StudyConfig, recipe: WaltRecipe, cache: Path, folder: Path, steps: int,
                     device: torch.device, progress: bool) -> dict[str, Any]:
    from walt.train.denoiser import train_denoiser

    ds = latent_dataset(cache, recipe.normalize)
    batch = min(cfg.walt_batch_size, len(ds))
    net = build_walt(cfg, ds.latent_shape, ds.num_classes, cfg.seed, **recipe.build_kwargs()).to(device)
    tcfg = _walt_train_config(cfg, steps, batch, recipe.p_self_cond, dict(recipe.diffusion))
    t0 = time.perf_counter()
    res = train_denoiser(tcfg, net, ds, folder, progress=progress)
    rows = read_log(folder / "log.csv")
    tail = rows[len(rows) // 2:] or rows  # second half: past warm-up and one-time costs
    return {"steps": res.step, "seconds": time.perf_counter() - t0, "params": sum(p.numel() for p in net.parameters()),
            "final_loss": statistics.mean(r["loss"] for r in rows[-3:]),
            "train_steps_per_s": 1.0 / statistics.median(r["sec_per_step"] for r in tail),
            "train_tokens_per_s": statistics.median(r["tokens_per_s"] for r in tail),
            "attention": net.config.attention,
            "st_window": "x".join(str(v) for v in net.config.spatiotemporal_window),
            "tokens_per_clip": ds.latent_shape[1] * (ds.latent_shape[2] // cfg.patch_size)
            * (ds.latent_shape[3] // cfg.patch_size)}


# ----------------------------------------------------------------------------- stage: generation


@torch.no_grad()
def generate_stage(cfg: StudyConfig, walt_folder: Path, vae, device: torch.device, i3d=None,
                   real_feats: np.ndarray | None = None, batch: int = 8) -> dict[str, Any]:
    """DDIM-sample `fake_clips` class-conditional clips (fixed seeds/labels), decode, time, FVD."""
    from walt.cascade.stage import Stage
    from walt.eval.fvd import fvd
    from walt.io import write_frame_grid_png
    from walt.pipeline import generate

    stage = Stage.load(walt_folder / "walt_ema.safetensors").to(device)
    net, schedule, stats = stage.net, stage.schedule, stage.latent_stats
    n, nc = cfg.fake_clips, net.config.num_classes
    shape = (net.config.in_channels, *net.config.input_size)
    generate(net, schedule, (1, *shape), steps=2, seeds=[0])  # warm-up
    videos, t_sample, t_decode = [], 0.0, 0.0
    for i in range(0, n, batch):
        ids = list(range(i, min(n, i + batch)))
        y = torch.tensor(ids, device=device) % nc if nc > 0 else None
        z, ts = _timed(lambda: generate(net, schedule, (len(ids), *shape), sampler="ddim", steps=cfg.sample_steps,
                                        y=y, seeds=ids, latent_stats=stats), device)
        x, td = _timed(lambda: vae.decode(z.to(device)), device)
        videos.append(x.float().clamp(-1, 1).cpu())
        t_sample, t_decode = t_sample + ts, t_decode + td
    fake = torch.cat(videos)  # (n, 3, T, H, W)
    info = {"sample_clips_per_s": n / t_sample, "gen_clips_per_s": n / (t_sample + t_decode),
            "sample_steps": cfg.sample_steps, "fvd": None}
    if i3d is not None:
        info["fvd"] = fvd(real_feats, features(i3d, fake, cfg))
    write_frame_grid_png(walt_folder / "samples.png", fake[:8])
    return info


def remove_training_state(folder: Path) -> None:
    """Drop a finished stage's resumable checkpoints (the exported weights stay)."""
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
