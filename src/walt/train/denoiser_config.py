"""Configuration of the transformer (stage 2) training loop, and the checks made before it starts.

`DenoiserTrainConfig` holds the hyper-parameters (paper §5.1 / SPEC §3 defaults where stated),
`DenoiserTrainResult` what `walt.train.denoiser.train_denoiser` returns. The `_check_*` helpers
compare a latent cache, its caption features and a checkpoint on disk against a network and a
config, so that `walt train` (walt.commands.train) can refuse a mismatch before building anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import torch.nn as nn

from walt.config import config_to_dict
from walt.diffusion.loss import DiffusionLossConfig
from walt.diffusion.schedule import DiffusionConfig

__all__ = ["DenoiserTrainConfig", "DenoiserTrainResult", "is_image_step"]

# Settings that may change when a run is resumed without changing what a step computes
# (`steps` re-shapes the cosine tail: that is how a run is extended).
_RESUMABLE_CHANGES = {
    "steps", "log_every", "ckpt_every", "keep_checkpoints", "sample_every", "sample_clips", "sample_steps",
    "tensorboard", "compile", "activation_checkpointing", "parallel",
}


@dataclass(frozen=True)
class DenoiserTrainConfig:
    """Transformer training hyper-parameters. Defaults: W.A.L.T-XL on UCF-101 (SPEC §3) where stated.

    `batch_size` is the GLOBAL batch per optimizer step (paper: 256), split evenly over
    ranks and then over `grad_accum` micro-batches: batch_size % (world_size * grad_accum) == 0.
    `precision`: "auto" = bf16 autocast on CUDA, fp32 on CPU.
    `image_ratio`: fraction of steps that take an image batch from the image cache (joint
    image-video training; 0.5 alternates); ignored without an image cache.
    """

    steps: int = 60_000  # paper: 60k (ablations 35k)
    batch_size: int = 256  # global; paper: 256
    grad_accum: int = 1
    lr: float = 5e-4  # paper: AdamW 5e-4, cosine
    min_lr: float = 0.0
    warmup_steps: int = 1_000  # *choice*: not stated
    betas: tuple[float, float] = (0.9, 0.999)  # *choice*: not stated (AdamW defaults)
    weight_decay: float = 0.0  # *choice* (DiT)
    eps: float = 1e-8
    grad_clip: float = 1.0  # global L2 norm; <= 0 disables clipping
    ema_decay: float = 0.9999  # *choice* (DiT); the paper says only "EMA"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    activation_checkpointing: bool = False
    compile: bool = False
    parallel: Literal["none", "ddp", "fsdp"] = "none"
    image_ratio: float = 0.0
    image_batch_size: Optional[int] = None  # global; None: batch_size
    log_every: int = 50
    ckpt_every: int = 1_000
    keep_checkpoints: int = 2
    sample_every: int = 0  # 0: no periodic samples
    sample_clips: int = 4
    sample_steps: int = 50  # DDIM steps (paper: 50)
    seed: int = 0
    tensorboard: bool = True  # also log to TensorBoard when it is installed
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    loss: DiffusionLossConfig = field(default_factory=DiffusionLossConfig)

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "log_every", "ckpt_every", "keep_checkpoints",
                     "sample_clips", "sample_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"DenoiserTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.min_lr < 0 or self.warmup_steps < 0 or self.sample_every < 0:
            raise ValueError("DenoiserTrainConfig: lr must be > 0; min_lr, warmup_steps, sample_every >= 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"DenoiserTrainConfig.betas must be in [0, 1), got {self.betas}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"DenoiserTrainConfig.precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.parallel not in ("none", "ddp", "fsdp"):
            raise ValueError(f"DenoiserTrainConfig.parallel must be 'none', 'ddp' or 'fsdp', got {self.parallel!r}")
        if not 0.0 <= self.image_ratio <= 1.0:
            raise ValueError(f"DenoiserTrainConfig.image_ratio must be in [0, 1], got {self.image_ratio}")
        if self.image_batch_size is not None and self.image_batch_size < 1:
            raise ValueError(f"DenoiserTrainConfig.image_batch_size must be >= 1, got {self.image_batch_size}")


@dataclass
class DenoiserTrainResult:
    step: int  # completed steps
    metrics: dict[str, float]  # the last logged row
    checkpoint: Path | None  # newest training-state checkpoint
    model_path: Path | None  # final raw weights (only when the run reached cfg.steps)
    ema_path: Path | None  # final EMA weights
    interrupted: bool = False  # stopped early by SIGTERM / SIGINT or `stop_at` (a checkpoint was written)


def is_image_step(step: int, ratio: float) -> bool:
    """Step `step` takes an image batch: exactly round(ratio * n) of any n first steps do (0.5 alternates)."""
    return ratio > 0 and math.floor((step + 1) * ratio + 1e-9) > math.floor(step * ratio + 1e-9)


def _check_data(ds, net: nn.Module, what: str) -> None:
    cfg = net.config
    c, t, h, w = ds.latent_shape
    t_max, h_cfg, w_cfg = cfg.input_size
    if c != cfg.in_channels or (h, w) != (h_cfg, w_cfg) or not 1 <= t <= t_max:
        raise ValueError(f"{what} latents are (c, t, h, w) = {(c, t, h, w)} but the network takes "
                         f"{cfg.in_channels} channels, up to {t_max} frames of {h_cfg}x{w_cfg}; build it with "
                         f"in_channels={c}, input_size=({max(t, t_max)}, {h}, {w})")
    if cfg.num_classes > 0:
        lo, hi = int(ds.labels.min()), int(ds.labels.max())
        if lo < 0 or hi >= cfg.num_classes:
            raise ValueError(f"{what} labels span [{lo}, {hi}] but the network has num_classes={cfg.num_classes}; "
                             "use a class-conditional cache with labels in range, or num_classes=0")


def _check_text(text_embeddings, ds, net: nn.Module) -> dict | None:
    """The text features must fit the network (text_dim) and the latent cache (items, VAE); returns their info."""
    text_dim = getattr(net.config, "text_dim", 0)
    if text_embeddings is None:
        return None
    if text_dim <= 0:
        raise ValueError("text embeddings were given but the network has text_dim=0; build it with "
                         f"text_dim={text_embeddings.dim}")
    if text_embeddings.dim != text_dim:
        raise ValueError(f"the text features are {text_embeddings.dim}-d but the network has text_dim={text_dim}; "
                         f"build it with text_dim={text_embeddings.dim}")
    if len(text_embeddings) != len(ds) or text_embeddings.vae_sha256 != ds.vae_sha256:
        raise ValueError("the text embeddings belong to another latent cache (item count or VAE differ); "
                         "cache them again for this one")
    return dict(text_embeddings.encoder_info)


def _check_resumable(state: dict, cfg: DenoiserTrainConfig, walt_config: dict, vae_hash: str, ckpt: Path) -> None:
    if state.get("walt_config") != walt_config:
        raise ValueError(f"{ckpt} was trained with a different WALT config; use a new out_dir or the same preset")
    if state.get("cache", {}).get("vae_sha256") != vae_hash:
        raise ValueError(f"{ckpt} was trained on latents of a different VAE; use a new out_dir or the original cache")
    old, new = state["train_config"], config_to_dict(cfg)
    diff = sorted(k for k in set(old) | set(new) if k not in _RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if diff:
        k = diff[0]
        raise ValueError(f"{ckpt} was trained with {k}={old.get(k)!r}, now {k}={new.get(k)!r}; "
                         "use a new out_dir (or resume=False there) to start a different run")
