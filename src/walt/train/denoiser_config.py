"""Configuration of the transformer (stage 2) training loop, and the checks made before it starts.

`DenoiserTrainConfig` holds the hyper-parameters (paper §5.1 / SPEC §3 defaults where stated),
`DenoiserTrainResult` what `walt.train.denoiser_loop.train_denoiser` returns, and `check_resumable`
compares a checkpoint on disk with a run, so that `walt train` can refuse a mismatch before
building anything (the data checks are `walt.train.batches`').
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from walt.config import config_to_dict
from walt.diffusion.loss import DiffusionLossConfig
from walt.diffusion.schedule import DiffusionConfig
from walt.train.common import TrainResult

__all__ = ["DenoiserTrainConfig", "DenoiserTrainResult", "RESUMABLE_CHANGES", "check_resumable"]

# Settings that may change when a run is resumed without changing what a step computes
# (`steps` re-shapes the cosine tail: that is how a run is extended).
RESUMABLE_CHANGES = {
    "steps", "log_every", "ckpt_every", "keep_checkpoints", "sample_every", "sample_clips", "sample_steps",
    "tensorboard", "compile", "activation_checkpointing", "parallel",
}


@dataclass(frozen=True)
class DenoiserTrainConfig:
    """Transformer training hyper-parameters. Defaults: W.A.L.T-XL on UCF-101 (SPEC §3) where stated.

    `batch_size` is the GLOBAL batch per optimizer step (paper: 256), split evenly over
    ranks and then over `grad_accum` micro-batches: batch_size % (world_size * grad_accum) == 0.
    `precision`: "auto" = bf16 autocast on CUDA, fp32 on CPU; "fast" = bf16 wherever it is faster
    (CUDA, CPUs with native bf16: `walt.train.precision`).
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
    precision: Literal["auto", "fp32", "bf16", "fast"] = "auto"
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
        if self.precision not in ("auto", "fp32", "bf16", "fast"):
            raise ValueError(f"DenoiserTrainConfig.precision must be 'auto', 'fp32', 'bf16' or 'fast', got {self.precision!r}")
        if self.parallel not in ("none", "ddp", "fsdp"):
            raise ValueError(f"DenoiserTrainConfig.parallel must be 'none', 'ddp' or 'fsdp', got {self.parallel!r}")
        if not 0.0 <= self.image_ratio <= 1.0:
            raise ValueError(f"DenoiserTrainConfig.image_ratio must be in [0, 1], got {self.image_ratio}")
        if self.image_batch_size is not None and self.image_batch_size < 1:
            raise ValueError(f"DenoiserTrainConfig.image_batch_size must be >= 1, got {self.image_batch_size}")


DenoiserTrainResult = TrainResult  # what `train_denoiser` returns


def check_resumable(state: dict, cfg: DenoiserTrainConfig, walt_config: dict, vae_hash: str, ckpt: Path,
                    objective: dict | None = None, text_info: dict | None = None) -> None:
    """ValueError naming what differs between the training state `state` and this run.

    The network config, the autoencoder of the latents, the objective's settings, the caption
    features and every setting outside `RESUMABLE_CHANGES` must be the ones the run started with.
    """
    if state.get("walt_config") != walt_config:
        raise ValueError(f"{ckpt} was trained with a different WALT config; use a new out_dir or the same preset")
    if state.get("cache", {}).get("vae_sha256") != vae_hash:
        raise ValueError(f"{ckpt} was trained on latents of a different VAE; use a new out_dir or the original cache")
    if (state.get("objective") or {}) != (objective or {}):
        raise ValueError(f"{ckpt} was trained with another objective ({state.get('objective') or 'denoise'}); "
                         "use a new out_dir or the same settings")
    if (state.get("text_encoder") or {}).get("weights_id") != (text_info or {}).get("weights_id"):
        raise ValueError(f"{ckpt} was trained with other text features (or with/without text); "
                         "use a new out_dir or the same text embeddings")
    old, new = state["train_config"], config_to_dict(cfg)
    diff = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if diff:
        k = diff[0]
        raise ValueError(f"{ckpt} was trained with {k}={old.get(k)!r}, now {k}={new.get(k)!r}; "
                         "use a new out_dir (or resume=False there) to start a different run")
