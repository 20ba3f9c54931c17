"""Autoencoder (stage 1) training: reconstruction + KL + perceptual + adversarial, one process to many GPUs.

Each step (SPEC Sec. 1, MAGVIT-v2 recipe; the passes themselves are in `walt.train.vae_step`):
  1. generator step: the autoencoder minimises  5 * L1 + kl_w * KL [+ 0.1 * perceptual]
     [+ 0.1 * non-saturating adversarial]  (D frozen), then its EMA (0.999) is updated;
  2. discriminator step (from `disc_start_step`): non-saturating GAN loss + 10 * R1 + 0.001 * LeCAM
     on the real clips and the (detached) reconstructions.
Both use Adam with betas (0, 0.99) and warmup + cosine learning rates, with gradient clipping,
gradient accumulation over `grad_accum` micro-batches and bf16 autocast on CUDA.

The same loop design as the transformer's (`walt.train.denoiser`, sharing `walt.train.common`
and `walt.train.distributed`):
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
model by `walt.train.distributed.apply_training_wrappers`, before DDP.

Outputs in `out_dir` (rank 0 only):
  log.csv, tb/ (TensorBoard, if installed)   one row every `log_every` steps (window means)
  checkpoints/step_XXXXXXXX.safetensors      full training state, the last `keep_checkpoints` kept
  samples/step_XXXXXXXX.png                  held-out clips vs EMA reconstructions (`sample_every`)
  vae.safetensors, vae_ema.safetensors       final raw and EMA autoencoders (`CausalVAE.load`)
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch import Tensor
from tqdm.auto import tqdm

from walt.autoencoder.discriminator import Discriminator3D
from walt.autoencoder.losses import VAELoss
from walt.train.perceptual import build_perceptual_loss
from walt.config import config_to_dict
from walt.train.common import (
    EMA,
    NonFiniteLossError,
    capture_rng_state,
    check_finite,
    checkpoint_path,
    latest_checkpoint,
    load_training_state,
    restore_rng_state,
    save_training_state,
    warmup_cosine_scheduler,
)
from walt.train.distributed import (
    GracefulStop,
    all_reduce_mean,
    apply_training_wrappers,
    barrier,
    clip_grad_norm,
    get_rank,
    get_world_size,
    is_main,
    wrap_model,
)
from walt.train.metrics_log import MetricsLog
from walt.train.vae_config import LOG_COLUMNS, VAETrainConfig, VAETrainResult, check_resumable
from walt.train.vae_data import VAEBatches
from walt.train.vae_samples import sample_path, write_reconstructions
from walt.train.vae_step import discriminator_pass, generator_pass

BatchFn = Callable[[int], Tensor]
_check_resumable = check_resumable  # the name `walt train-vae` imports

__all__ = ["VAETrainConfig", "VAETrainResult", "NonFiniteLossError", "train_vae", "LOG_COLUMNS"]


def _step_seed(seed: int, step: int) -> int:
    """Seed of the posterior-noise generator of one step: independent of how the run was split."""
    return (seed * 1_000_003 + step) % (2**63)


def _posterior_noise(vae: nn.Module, clip_shape: tuple[int, ...], cfg: VAETrainConfig, step: int, rank: int,
                     per_rank: int, device: torch.device) -> Tensor | None:
    """This rank's slice (B_rank, c, t, h, w) of the global batch's reparameterisation noise (None if kl=False)."""
    if not vae.config.kl:
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
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    device = next(vae.parameters()).device
    rank, world = get_rank(), get_world_size()
    vae_config = config_to_dict(vae.config)
    k = cfg.grad_accum
    if cfg.parallel == "none" and world > 1:
        raise ValueError(f"parallel='none' with {world} processes would train unsynchronised copies; "
                         "set parallel='ddp', or launch a single process")
    if cfg.parallel != "none" and world == 1 and is_main():
        print(f"note: parallel={cfg.parallel!r} in a single process: training unwrapped (launch with torchrun)")
    if cfg.batch_size % (world * k):
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by world_size x grad_accum = {world} x {k}")
    holdout = _check_holdout(holdout, cfg, vae)
    batches = VAEBatches(data, cfg.batch_size, cfg.seed, rank, world)

    # ---- the discriminator (deterministically from cfg.seed) and the losses ----
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        disc = discriminator
        if disc is None and cfg.discriminator is not None:
            disc = Discriminator3D(cfg.discriminator)
    if disc is not None:
        disc = disc.to(device)
    perceptual = perceptual_net if perceptual_net is not None else build_perceptual_loss(cfg.perceptual)
    loss_fn = VAELoss(cfg.loss, perceptual).to(device)
    if world > 1:
        loss_fn.lecam.reduce = all_reduce_mean  # every rank keeps the same anchors (global batch means)

    # ---- resume, part 1: weights and data position, before anything is copied or wrapped ----
    start, last_ckpt, state = 0, latest_checkpoint(ckpt_dir), None
    if last_ckpt is not None:
        if not resume:
            raise ValueError(f"{ckpt_dir} already holds checkpoints; pass resume=True or choose an empty out_dir")
        state = load_training_state(last_ckpt)
        check_resumable(state, cfg, vae_config, last_ckpt)
        batches.load_state_dict(state.get("data"))
        vae.load_state_dict(state["vae"])
        if disc is not None:
            disc.load_state_dict(state["discriminator"])
            loss_fn.lecam.load_state_dict(state["lecam"])
        start = int(state["step"])

    # ---- EMA (copied before any wrapper), wrappers, optimisers, schedules ----
    ema = EMA(vae, cfg.ema_decay)
    model_g = apply_training_wrappers(vae, cfg.parallel, compile=cfg.compile,
                                      activation_checkpointing=cfg.activation_checkpointing, device=device)
    model_d = wrap_model(disc, cfg.parallel, device=device) if disc is not None else None
    adamw = dict(betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    opt_g = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, **adamw)
    sched_g = warmup_cosine_scheduler(opt_g, cfg.warmup_steps, cfg.steps, cfg.min_lr / cfg.lr)
    opt_d = sched_d = None
    if disc is not None:
        opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr or cfg.lr, **adamw)
        # D's schedule counts D updates: it warms up from when it starts training.
        d_steps = max(1, cfg.steps - cfg.disc_start_step)
        sched_d = warmup_cosine_scheduler(opt_d, cfg.warmup_steps, d_steps, cfg.min_lr / cfg.lr)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    # ---- resume, part 2: EMA, optimisers, schedules, RNG ----
    if state is not None:
        ema.load_state_dict(state["ema"])
        opt_g.load_state_dict(state["opt_g"])
        sched_g.load_state_dict(state["sched_g"])
        if disc is not None:
            opt_d.load_state_dict(state["opt_d"])
            sched_d.load_state_dict(state["sched_d"])
        restore_rng_state(state["rng"])
        state = None  # free the host copy
    elif world > 1:
        ema.module.load_state_dict(vae.state_dict())  # DDP broadcast rank 0's weights: start the EMA there too
    logger = MetricsLog(out_dir, LOG_COLUMNS, start if last_ckpt is not None else None,
                        cfg.tensorboard) if is_main() else None

    def save(step: int) -> Path:
        state = {
            "step": step,
            "data": batches.state_dict(step),
            "data_position": step,
            "train_config": config_to_dict(cfg),
            "vae_config": vae_config,
            "discriminator_config": config_to_dict(disc.config) if disc is not None and hasattr(disc, "config") else None,
            "world_size": world,
            "vae": vae.state_dict(),
            "ema": ema.state_dict(),
            "opt_g": opt_g.state_dict(),
            "sched_g": sched_g.state_dict(),
            "rng": capture_rng_state(),
        }
        if disc is not None:
            state.update(discriminator=disc.state_dict(), opt_d=opt_d.state_dict(),
                         sched_d=sched_d.state_dict(), lecam=loss_fn.lecam.state_dict())
        path = checkpoint_path(ckpt_dir, step)
        if is_main():
            save_training_state(path, state, keep_last=cfg.keep_checkpoints)
        barrier()
        return path

    # ---- loop ----
    window: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    last_row: dict[str, float] = {}
    t_window, n_window, frames_window = time.perf_counter(), 0, 0
    end = cfg.steps if stop_at is None else min(cfg.steps, max(stop_at, start))
    interrupted, completed = False, start
    pbar = tqdm(total=cfg.steps, initial=start, disable=not (progress and is_main()), desc="train-vae",
                unit="step", dynamic_ncols=True)
    try:
        with GracefulStop() as stop:
            for step in range(start, end):
                x = batches.get(step).to(device)  # (B_rank, 3, T, H, W), this rank's share
                epoch = batches.epoch
                noise = _posterior_noise(vae, tuple(x.shape), cfg, step, rank, batches.per_rank, device)
                lr_now = opt_g.param_groups[0]["lr"]

                # 1. generator (autoencoder) step, D frozen but differentiable w.r.t. its input
                opt_g.zero_grad(set_to_none=True)
                recons, logs = generator_pass(step, x, noise, model_g, disc, loss_fn, k, autocast)
                logs, stop_now = _reduce(logs, stop.flag.is_set(), device)
                check_finite(logs["g_total"], step, "generator loss")  # same value on every rank
                logs["grad_norm_g"] = clip_grad_norm(vae.parameters(), cfg.grad_clip)
                check_finite(logs["grad_norm_g"], step, "generator gradient norm")
                opt_g.step()
                sched_g.step()
                ema.update(vae)

                # 2. discriminator step on the real clips and the detached reconstructions
                if disc is not None and step >= cfg.disc_start_step:
                    opt_d.zero_grad(set_to_none=True)
                    d_logs, _ = _reduce(discriminator_pass(x, recons, model_d, disc, loss_fn, k, autocast), False,
                                        device)
                    check_finite(d_logs["d_total"], step, "discriminator loss")
                    d_logs["grad_norm_d"] = clip_grad_norm(disc.parameters(), cfg.grad_clip)
                    check_finite(d_logs["grad_norm_d"], step, "discriminator gradient norm")
                    opt_d.step()
                    sched_d.step()
                    logs.update(d_logs)
                del recons
                logs["lr"] = lr_now
                done = step + 1
                if holdout is not None and done % cfg.sample_every == 0:
                    if is_main():
                        logs["val_psnr"] = write_reconstructions(ema.module, holdout,
                                                                 sample_path(out_dir / "samples", done), autocast)
                    barrier()

                for name, v in logs.items():
                    window[name] += v
                    counts[name] += 1
                n_window += 1
                frames_window += cfg.batch_size * x.shape[2]
                if done % cfg.log_every == 0 or done == cfg.steps:
                    elapsed = max(time.perf_counter() - t_window, 1e-9)
                    last_row = {name: window[name] / counts[name] for name in window}
                    last_row.update(step=done, epoch=epoch, clips_per_s=n_window * cfg.batch_size / elapsed,
                                    frames_per_s=frames_window / elapsed, sec_per_step=elapsed / n_window)
                    if logger is not None:
                        logger.write(last_row)
                    pbar.set_postfix(loss=f"{last_row['g_total']:.4f}", psnr=f"{last_row['psnr']:.2f}",
                                     clips_s=f"{last_row['clips_per_s']:.2f}")
                    window.clear()
                    counts.clear()
                    t_window, n_window, frames_window = time.perf_counter(), 0, 0
                interrupted = stop_now or (done == end and end < cfg.steps)
                if done % cfg.ckpt_every == 0 or done == cfg.steps or interrupted:
                    last_ckpt = save(done)
                pbar.update(1)
                completed = done
                if interrupted:
                    break
    except NonFiniteLossError as e:
        where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
        raise NonFiniteLossError(f"{e} ({where})") from None
    finally:
        pbar.close()
        if logger is not None:
            logger.close()

    if completed < cfg.steps:
        return VAETrainResult(completed, last_row, last_ckpt, None, None, interrupted=True)

    # ---- export the final autoencoders (raw and EMA) ----
    extra = {"step": completed, "train_config": config_to_dict(cfg)}
    vae_path, ema_path = out_dir / "vae.safetensors", out_dir / "vae_ema.safetensors"
    if is_main():
        vae.save(vae_path, **extra, ema=False)
        ema.module.save(ema_path, **extra, ema=True)
    barrier()
    return VAETrainResult(step=completed, metrics=last_row, checkpoint=last_ckpt, vae_path=vae_path, ema_path=ema_path)
