"""What every design / variant of a study shares: data sizes, model sizes, training budget, eval.

`StudyConfig` and its presets ("cpu", "gpu", "micro"), plain functions in a dict. FVD here is the
I3D Frechet distance between a handful of generated (or reconstructed) clips and a handful of
real held-out clips: with 16-64 samples of 400-d features it is strongly biased upwards and
noisy, comparable only between rows of the same study (same protocol hash).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from walt.config import from_presets
from walt.experiment.runner import SettingsError

__all__ = ["StudyConfig", "STUDY_PRESETS", "study_config", "StudySettingsError"]


class StudySettingsError(SettingsError):
    """The output folder holds a study with other settings (raised before any work)."""


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
    """The named preset with `overrides` applied (unknown keys -> ConfigError naming them)."""
    return from_presets(STUDY_PRESETS, name, "study preset", **overrides)
