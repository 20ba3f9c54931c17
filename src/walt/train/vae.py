"""Autoencoder (stage 1) training: reconstruction + KL + perceptual + adversarial, one process to many GPUs.

Each step (SPEC Sec. 1, MAGVIT-v2 recipe; the passes themselves are in `walt.train.vae_step`):
  1. generator step: the autoencoder minimises  5 * L1 + kl_w * KL [+ 0.1 * perceptual]
     [+ 0.1 * non-saturating adversarial]  (D frozen), then its EMA (0.999) is updated;
  2. discriminator step (from `disc_start_step`): non-saturating GAN loss + 10 * R1 + 0.001 * LeCAM
     on the real clips and the (detached) reconstructions.
Both use Adam with betas (0, 0.99) and warmup + cosine learning rates, with gradient clipping,
gradient accumulation over `grad_accum` micro-batches and bf16 autocast on CUDA.

The same loop design as the denoiser's (`walt.train.denoiser_loop`, sharing `walt.train.common`,
`walt.train.distributed` and `walt.train.parallelize`):
  - the data position is explicit (`walt.train.vae_data`): a `batch_fn(step)` or a dataset read
    through the seeded, restorable `ResumableBatchSampler`, split across ranks;
  - the posterior noise of a step is drawn for the whole global batch from a generator seeded by
    (seed, step) and sliced, so it does not depend on how the batch is split over ranks and
    micro-batches; hence a run interrupted at step k and resumed reproduces the uninterrupted
    run exactly (same device, thread count and world size);
  - under torchrun (`parallel="ddp"`) the autoencoder and the discriminator are DDP-wrapped
    (NCCL on GPUs, gloo on CPU), LeCAM's anchors follow the global batch means, the logged
    numbers are means over ranks, and rank 0 alone logs and writes files;
  - checkpoints hold both players, the EMA, both optimisers and schedules, LeCAM's state, the
    data position, RNG states and the configs; they are written atomically by rank 0 every
    `ckpt_every` steps AND when SIGTERM / SIGINT arrives (the handler only sets a flag; the
    current step finishes, a checkpoint is written, the function returns `interrupted=True`);
  - a non-finite loss or gradient raises `NonFiniteLossError` on every rank before the
    optimizer step and before any save, so the newest checkpoint is the last good state.

Activation checkpointing and torch.compile (of the autoencoder) are applied from outside the
model by `walt.train.parallelize.apply_training_wrappers`, before DDP.

Outputs in `out_dir` (rank 0 only):
  log.csv, tb/ (TensorBoard, if installed)   one row every `log_every` steps (window means)
  checkpoints/step_XXXXXXXX.safetensors      full training state, the last `keep_checkpoints` kept
  samples/step_XXXXXXXX.png                  held-out clips vs EMA reconstructions (`sample_every`)
  vae.safetensors, vae_ema.safetensors       final raw and EMA autoencoders (`CausalVAE.load`)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch import Tensor

from walt.autoencoder.discriminator import Discriminator3D
from walt.autoencoder.losses import VAELoss
from walt.config import config_to_dict
from walt.train.precision import autocast_for, resolve_precision
from walt.train.common import (EMA, capture_rng_state, check_finite, check_parallel, checkpoint_path,
                               restore_rng_state, resume_point, run_steps, save_training_state, warmup_cosine_scheduler)
from walt.train.distributed import all_reduce_mean, barrier, get_rank, get_world_size, is_main
from walt.train.metrics_log import MetricsLog
from walt.train.parallelize import apply_training_wrappers, clip_grad_norm, wrap_model
from walt.train.perceptual import build_perceptual_loss
from walt.train.vae_config import LOG_COLUMNS, VAETrainConfig, VAETrainResult, check_resumable
from walt.train.vae_data import VAEBatches
from walt.train.vae_samples import sample_path, write_reconstructions
from walt.train.vae_step import discriminator_pass, generator_pass

BatchFn = Callable[[int], Tensor]

__all__ = ["VAETrainConfig", "VAETrainResult", "train_vae", "LOG_COLUMNS"]


def _step_seed(seed: int, step: int) -> int:
    """Seed of the posterior-noise generator of one step: independent of how the run was split."""
    return (seed * 1_000_003 + step) % (2**63)


def _posterior_noise(vae: nn.Module, clip_shape: tuple[int, ...], cfg: VAETrainConfig, step: int, rank: int,
                     per_rank: int, device: torch.device) -> Tensor | None:
    """This rank's slice (B_rank, c, t, h, w) of the global batch's posterior / decoder-input noise (or None)."""
    if not vae.config.kl and cfg.decoder_noise <= 0:
        return None
    c, t, h, w = vae.latent_shape(*clip_shape[2:])  # also validates frames and size
    gen = torch.Generator(device=device).manual_seed(_step_seed(cfg.seed, step))
    eps = torch.randn((cfg.batch_size, c, t, h, w), generator=gen, device=device)
    return eps[rank * per_rank:(rank + 1) * per_rank]


def _reduce(logs: dict[str, float], flag: bool, device: torch.device) -> tuple[dict[str, float], bool]:
    """Mean of every logged number over ranks (one collective) and whether any rank got a stop signal."""
    keys = sorted(logs)
    vec = torch.tensor([logs[k] for k in keys] + [float(flag)], dtype=torch.float64, device=device)
    values = all_reduce_mean(vec).tolist()
    return dict(zip(keys, values[:-1])), values[-1] > 0


def _check_holdout(holdout: Tensor | None, cfg: VAETrainConfig, vae: nn.Module) -> Tensor | None:
    if cfg.sample_every == 0:
        return None
    if not isinstance(holdout, Tensor) or holdout.ndim != 5 or holdout.shape[0] < 1:
        raise ValueError("sample_every > 0 needs held-out clips: pass holdout=(N, 3, T, H, W) in [-1, 1] "
                         "(clips not trained on), or set sample_every=0")
    vae.latent_shape(*holdout.shape[2:])  # ValueError naming valid sizes
    return holdout[:cfg.sample_clips].detach().float().cpu()


def train_vae(
    cfg: VAETrainConfig,
    vae: nn.Module,
    data: BatchFn | Any,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    discriminator: nn.Module | None = None,
    perceptual_net: nn.Module | None = None,
    holdout: Tensor | None = None,
    stop_at: int | None = None,
) -> VAETrainResult:
    """Train `vae` (a `CausalVAE`, on its current device) for `cfg.steps` steps.

    Args:
        cfg: training hyper-parameters.
        vae: the autoencoder, plain (not wrapped); trained in place (raw weights), its EMA is
            exported at the end. Under torchrun call `init_distributed()` first and pass the same
            freshly built autoencoder on every rank.
        data: `batch_fn(step) -> (batch_size, 3, T, H, W)` in [-1, 1], deterministic in `step`, or a
            map-style dataset of clips (see `walt.train.vae_data`).
        out_dir: log, checkpoints, samples and final weights go here (rank 0 writes).
        resume: continue from the newest checkpoint in `out_dir/checkpoints` if there is one;
            with resume=False an out_dir that already holds checkpoints is refused.
        progress: show a tqdm bar on rank 0 (loss, PSNR, clips/s).
        discriminator: a ready discriminator; default `Discriminator3D(cfg.discriminator)`.
        perceptual_net: a `PerceptualLoss` or a frozen pretrained feature network; default from
            `cfg.perceptual` ("none": no perceptual term).
        holdout: (N, 3, T, H, W) clips never trained on, reconstructed every `cfg.sample_every` steps.
        stop_at: end this call (with a checkpoint) once this many steps are done, keeping the
            schedule of `cfg.steps` (time-limited jobs; the next call resumes).
    Returns:
        `VAETrainResult` with the last logged metrics and the paths written.
    Raises:
        NonFiniteLossError: a loss or gradient norm became NaN/inf (on every rank; nothing saved).
    """
    run = _VAERun(cfg, vae, data, Path(out_dir), resume, discriminator, perceptual_net, holdout)
    logger = MetricsLog(run.out_dir, LOG_COLUMNS, run.start if run.last_ckpt is not None else None,
                        cfg.tensorboard) if is_main() else None
    completed, row, last_ckpt = run_steps(run, cfg, stop_at, logger, progress, "train-vae", lambda r: dict(
        loss=f"{r['g_total']:.4f}", psnr=f"{r['psnr']:.2f}", clips_s=f"{r['clips_per_s']:.2f}"))
    if completed < cfg.steps:
        return VAETrainResult(completed, row, last_ckpt, None, None, interrupted=True)
    vae_path, ema_path = run.export(completed)
    return VAETrainResult(completed, row, last_ckpt, vae_path, ema_path)


class _VAERun:
    """One call's state: both players (wrapped), the EMA, both optimisers and schedules, the losses, the data."""

    def __init__(self, cfg, vae, data, out_dir: Path, resume: bool, discriminator, perceptual_net, holdout):
        self.cfg, self.vae, self.out_dir = cfg, vae, out_dir
        self.device = next(vae.parameters()).device
        self.rank, self.world = get_rank(), get_world_size()
        self.vae_config = config_to_dict(vae.config)
        check_parallel(cfg.parallel, self.world, is_main(), offered="'ddp'")
        if cfg.batch_size % (self.world * cfg.grad_accum):
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by world_size x grad_accum = "
                             f"{self.world} x {cfg.grad_accum}")
        self.holdout = _check_holdout(holdout, cfg, vae)
        self.batches = VAEBatches(data, cfg.batch_size, cfg.seed, self.rank, self.world)
        self._losses(discriminator, perceptual_net)
        # Resume, part 1: weights and data position, before anything is copied or wrapped.
        state, self.last_ckpt = resume_point(out_dir / "checkpoints", resume)
        self.start = 0
        if state is not None:
            check_resumable(state, cfg, self.vae_config, self.last_ckpt)
            self.batches.load_state_dict(state.get("data"))
            vae.load_state_dict(state["vae"])
            if self.disc is not None:
                self.disc.load_state_dict(state["discriminator"])
                self.loss_fn.lecam.load_state_dict(state["lecam"])
            self.start = int(state["step"])
        self._build()
        if state is not None:
            self._restore(state)
        elif self.world > 1:
            self.ema.module.load_state_dict(vae.state_dict())  # DDP broadcast rank 0's weights: start the EMA there too

    def _losses(self, discriminator, perceptual_net) -> None:
        """The discriminator (deterministically from cfg.seed) and the generator / discriminator losses."""
        cfg = self.cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            disc = discriminator
            if disc is None and cfg.discriminator is not None:
                disc = Discriminator3D(cfg.discriminator)
        self.disc = disc.to(self.device) if disc is not None else None
        perceptual = perceptual_net if perceptual_net is not None else build_perceptual_loss(cfg.perceptual)
        self.loss_fn = VAELoss(cfg.loss, perceptual).to(self.device)
        if self.world > 1:
            self.loss_fn.lecam.reduce = all_reduce_mean  # every rank keeps the same anchors (global batch means)

    def _build(self) -> None:
        """EMA (copied before any wrapper), wrappers, optimisers and their warmup + cosine schedules."""
        cfg, vae, disc = self.cfg, self.vae, self.disc
        self.ema = EMA(vae, cfg.ema_decay)
        self.model_g = apply_training_wrappers(vae, cfg.parallel, compile=cfg.compile,
                                               activation_checkpointing=cfg.activation_checkpointing, device=self.device)
        self.model_d = wrap_model(disc, cfg.parallel, device=self.device) if disc is not None else None
        adamw = dict(betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
        self.opt_g = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, **adamw)
        self.sched_g = warmup_cosine_scheduler(self.opt_g, cfg.warmup_steps, cfg.steps, cfg.min_lr / cfg.lr)
        self.opt_d = self.sched_d = None
        if disc is not None:
            self.opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr or cfg.lr, **adamw)
            # D's schedule counts D updates: it warms up from when it starts training.
            d_steps = max(1, cfg.steps - cfg.disc_start_step)
            self.sched_d = warmup_cosine_scheduler(self.opt_d, cfg.warmup_steps, d_steps, cfg.min_lr / cfg.lr)
        self.autocast = autocast_for(resolve_precision(cfg.precision, self.device), self.device)

    def _restore(self, state: dict[str, Any]) -> None:
        """Resume, part 2: EMA, optimisers, schedules, RNG."""
        self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.sched_g.load_state_dict(state["sched_g"])
        if self.disc is not None:
            self.opt_d.load_state_dict(state["opt_d"])
            self.sched_d.load_state_dict(state["sched_d"])
        restore_rng_state(state["rng"])

    def step(self, step: int, stop_flag) -> tuple[dict[str, float], bool, dict[str, int]]:
        """One step of each player -> (logs, whether any rank got a stop signal, throughput counts).

        `stop_flag` (a threading.Event) is read after the generator pass: a signal during the step still stops here.
        """
        cfg, device, k = self.cfg, self.device, self.cfg.grad_accum
        x = self.batches.get(step).to(device)  # (B_rank, 3, T, H, W), this rank's share
        noise = _posterior_noise(self.vae, tuple(x.shape), cfg, step, self.rank, self.batches.per_rank, device)
        lr_now = self.opt_g.param_groups[0]["lr"]

        # 1. generator (autoencoder) step, D frozen but differentiable w.r.t. its input
        self.opt_g.zero_grad(set_to_none=True)
        recons, logs = generator_pass(step, x, noise, self.model_g, self.disc, self.loss_fn, k, self.autocast,
                                      decoder_noise=cfg.decoder_noise)
        logs, stop_now = _reduce(logs, stop_flag.is_set(), device)
        check_finite(logs["g_total"], step, "generator loss")  # same value on every rank
        logs["grad_norm_g"] = clip_grad_norm(self.vae.parameters(), cfg.grad_clip)
        check_finite(logs["grad_norm_g"], step, "generator gradient norm")
        self.opt_g.step()
        self.sched_g.step()
        self.ema.update(self.vae)

        # 2. discriminator step on the real clips and the detached reconstructions
        if self.disc is not None and step >= cfg.disc_start_step:
            self.opt_d.zero_grad(set_to_none=True)
            d_logs, _ = _reduce(discriminator_pass(x, recons, self.model_d, self.disc, self.loss_fn, k, self.autocast),
                                False, device)
            check_finite(d_logs["d_total"], step, "discriminator loss")
            d_logs["grad_norm_d"] = clip_grad_norm(self.disc.parameters(), cfg.grad_clip)
            check_finite(d_logs["grad_norm_d"], step, "discriminator gradient norm")
            self.opt_d.step()
            self.sched_d.step()
            logs.update(d_logs)
        del recons
        logs["lr"] = lr_now
        done = step + 1
        if self.holdout is not None and done % cfg.sample_every == 0:
            if is_main():
                logs["val_psnr"] = write_reconstructions(self.ema.module, self.holdout,
                                                         sample_path(self.out_dir / "samples", done), self.autocast)
            barrier()
        return logs, stop_now, {"clips": cfg.batch_size, "frames": cfg.batch_size * x.shape[2]}

    @property
    def epoch(self) -> int | None:
        return self.batches.epoch

    def after_step(self, step: int) -> None:
        pass  # the held-out reconstructions are part of the step's logs (val_psnr)

    def save(self, step: int) -> Path:
        cfg, disc = self.cfg, self.disc
        state = {
            "step": step, "data": self.batches.state_dict(step), "data_position": step,
            "train_config": config_to_dict(cfg), "vae_config": self.vae_config,
            "discriminator_config": config_to_dict(disc.config) if disc is not None and hasattr(disc, "config") else None,
            "world_size": self.world, "vae": self.vae.state_dict(), "ema": self.ema.state_dict(),
            "opt_g": self.opt_g.state_dict(), "sched_g": self.sched_g.state_dict(), "rng": capture_rng_state(),
        }
        if disc is not None:
            state.update(discriminator=disc.state_dict(), opt_d=self.opt_d.state_dict(),
                         sched_d=self.sched_d.state_dict(), lecam=self.loss_fn.lecam.state_dict())
        path = checkpoint_path(self.out_dir / "checkpoints", step)
        if is_main():
            save_training_state(path, state, keep_last=cfg.keep_checkpoints)
        barrier()
        return path

    def export(self, step: int) -> tuple[Path, Path]:
        """The final autoencoders (raw and EMA) in the `CausalVAE.save` format."""
        extra = {"step": step, "train_config": config_to_dict(self.cfg)}
        vae_path, ema_path = self.out_dir / "vae.safetensors", self.out_dir / "vae_ema.safetensors"
        if is_main():
            self.vae.save(vae_path, **extra, ema=False)
            self.ema.module.save(ema_path, **extra, ema=True)
        barrier()
        return vae_path, ema_path
