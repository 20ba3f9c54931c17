"""What every row of a study shares: the clips, the two models' recipe, the budget, the evaluation.

`StudyConfig` and its presets ("cpu", "paper" (= "gpu"), "micro"), plain functions in a dict.

The CPU preset trains on the demo's clips (`walt.data.restricted.RestrictedVideos` with the CPU
demo's restriction: 32x32, 9 frames, 8 motion classes) with the demo's recipe (autoencoder: L2,
no KL, decoder-input noise; denoiser: `walt.experiment.recipes.DEMO_DENOISER`, read when a row
is built, classifier-free guidance 3), so its motion-class accuracy means what the demo's does.
Every row gets the same wall-clock minutes (`budget_minutes`, `vae_fraction` of it for the
autoencoder); fixed step counts (`budget_minutes=None`, `vae_steps` / `walt_steps`) are for tests.

Evaluation (`walt.study.evaluate`, `walt.study.reference`): two held-out real sets A and B of
`heldout_clips` each; `seed_sets` x `samples_per_seed` class-conditional samples per row and
weights (their first `fvd_clips_per_seed` of each set also through the I3D), scored against A;
B's reconstructions give PSNR / SSIM / rFVD; FD(A, B) is the real-vs-real floor, measured at
`floor_counts` (`fvd_floor_counts` for the I3D) to find the clip count that makes its 95%
interval <= 10% of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from walt.config import from_presets
from walt.data.synthetic_scene import CLASS_NAMES
from walt.experiment.runner import SettingsError

__all__ = ["StudyConfig", "STUDY_PRESETS", "study_config", "StudySettingsError"]


class StudySettingsError(SettingsError):
    """The output folder holds a study with other settings (raised before any work)."""


@dataclass(frozen=True)
class StudyConfig:
    """Clips, models, budget and evaluation counts of a study (see the module docstring)."""

    # ---- data: RestrictedVideos of the built-in dataset (the CPU demo's restriction) ----
    resolution: int = 32
    num_frames: int = 9  # 1 + 8k fits every f_t in {1, 2, 4, 8}; the I3D reads >= 9
    classes: tuple[str, ...] = CLASS_NAMES
    backgrounds: tuple[str, ...] = ("plain", "gradient", "radial")
    textures: tuple[str, ...] = ("two-tone",)
    shapes: tuple[str, ...] = ()  # () = all 8 shapes
    shape_scale: float = 1.8
    speed_scale: float = 2.0
    train_clips: int = 512  # the autoencoder's training pool = the latent cache
    # ---- stage 1: autoencoder (CausalVAE "tiny" preset + these; the design sets f_t, f_s, c, ...) ----
    vae_base_channels: int = 16
    vae_channel_multipliers: tuple[int, ...] = (1, 2, 2)
    vae_num_res_blocks: int = 1
    vae_norm_groups: int = 8
    vae_kl: bool = False
    vae_train_frames: int = 5  # training crops (causal + fully convolutional: short clips train faster)
    vae_batch_size: int = 8
    vae_lr: float = 2e-3
    vae_warmup_steps: int = 10
    vae_min_steps: int = 20
    vae_kl_weight: float = 1e-6  # only with vae_kl
    vae_decoder_noise: float = 0.3
    vae_recon_type: str = "l2"
    vae_steps: int = 200  # only without budget_minutes
    # ---- stage 2: W.A.L.T; None = walt.experiment.recipes.DEMO_DENOISER's value ----
    walt_hidden_size: int | None = None
    walt_depth: int | None = None
    walt_num_heads: int | None = None
    patch_size: int | None = None  # the same for every row
    walt_batch_size: int = 16
    walt_lr: float = 2e-3
    walt_warmup_steps: int = 50
    walt_min_steps: int = 50
    walt_ema_decay: float = 0.995
    walt_snr_shift: float = 1.0
    walt_precision: str = "fast"  # walt.train.precision: bf16 where the CPU runs it natively
    walt_steps: int = 300  # only without budget_minutes
    snapshot_every: int = 100  # EMA snapshots for the equal-steps comparison (those past it are deleted)
    # ---- sampling ----
    sample_steps: int = 50  # DDIM steps (paper: 50)
    guidance_scale: float = 3.0  # the demo's; paper: no guidance for class-conditional numbers
    # ---- budget (per row) ----
    budget_minutes: float | None = 19.0  # autoencoder + denoiser training; None: the fixed step counts
    vae_fraction: float = 7 / 19  # 7 min autoencoder, 12 min denoiser
    calibration_steps: int = 5
    # ---- evaluation ----
    heldout_clips: int = 512  # real clips per held-out set (A: reference, B: floor and reconstructions)
    seed_sets: int = 3
    samples_per_seed: int = 96  # class-conditional samples per seed set (classifier score)
    fvd_clips_per_seed: int = 32  # of those, through the I3D (FVD)
    floor_counts: tuple[int, ...] = (32, 64, 128, 256, 512)
    fvd_floor_counts: tuple[int, ...] = (32, 64, 128, 256)
    classifier_train_clips: int = 1024
    classifier_steps: int = 600
    timing_threads: int = 2  # torch threads of the sequential timing pass
    timing_clips: int = 16
    timing_repeats: int = 3
    fvd: bool = True
    fvd_protocol: str = "smoke"
    seed: int = 0

    def __post_init__(self) -> None:
        for k in ("resolution", "num_frames", "train_clips", "vae_steps", "vae_batch_size", "walt_steps",
                  "walt_batch_size", "sample_steps", "vae_train_frames", "seed_sets", "samples_per_seed",
                  "fvd_clips_per_seed", "classifier_train_clips", "classifier_steps", "timing_threads",
                  "timing_clips", "timing_repeats", "snapshot_every", "calibration_steps"):
            if getattr(self, k) < 1:
                raise ValueError(f"StudyConfig.{k} must be >= 1, got {getattr(self, k)}")
        for k in ("walt_hidden_size", "walt_depth", "walt_num_heads", "patch_size"):
            if getattr(self, k) is not None and getattr(self, k) < 1:
                raise ValueError(f"StudyConfig.{k} must be >= 1 or None (the demo's), got {getattr(self, k)}")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise ValueError(f"budget_minutes must be > 0, got {self.budget_minutes}")
        if not 0 < self.vae_fraction < 1:
            raise ValueError(f"vae_fraction must be in (0, 1), got {self.vae_fraction}")
        self._check_counts()

    def _check_counts(self) -> None:
        if self.fvd_clips_per_seed > self.samples_per_seed or self.seed_sets * self.samples_per_seed < 2:
            raise ValueError("fvd_clips_per_seed must be <= samples_per_seed, and the samples >= 2")
        if self.seed_sets * self.samples_per_seed > self.heldout_clips:
            raise ValueError(f"heldout_clips={self.heldout_clips} must cover the {self.samples} samples of a row "
                             "(the real reference set has as many clips)")
        if any(n < 2 or n > self.heldout_clips for n in (*self.floor_counts, *self.fvd_floor_counts)):
            raise ValueError(f"floor_counts and fvd_floor_counts must lie in [2, heldout_clips={self.heldout_clips}]")
        if self.fvd and self.num_frames < 9:
            raise ValueError(f"FVD needs clips of >= 9 frames (the I3D's minimum), got num_frames={self.num_frames}; "
                             "use 9 or 17 frames or turn FVD off (--no-fvd)")

    @property
    def samples(self) -> int:
        """Class-conditional samples per row and weights (all seed sets)."""
        return self.seed_sets * self.samples_per_seed

    @property
    def fvd_clips(self) -> int:
        """Samples per row and weights that go through the I3D (= real clips of FVD's reference)."""
        return self.seed_sets * self.fvd_clips_per_seed

    @property
    def vae_seconds(self) -> float | None:
        return None if self.budget_minutes is None else self.vae_fraction * self.budget_minutes * 60

    @property
    def walt_seconds(self) -> float | None:
        return None if self.budget_minutes is None else (1 - self.vae_fraction) * self.budget_minutes * 60

    def vae_kwargs(self) -> dict[str, Any]:
        return dict(base_channels=self.vae_base_channels, channel_multipliers=self.vae_channel_multipliers,
                    num_res_blocks=self.vae_num_res_blocks, norm_groups=self.vae_norm_groups, kl=self.vae_kl)

    def walt_kwargs(self) -> dict[str, Any]:
        """The denoiser's size: `DEMO_DENOISER` (read now) with this config's non-None fields."""
        from walt.experiment.recipes import DEMO_DENOISER

        mine = {"hidden_size": self.walt_hidden_size, "depth": self.walt_depth, "num_heads": self.walt_num_heads,
                "patch_size": self.patch_size}
        return {**DEMO_DENOISER, **{k: v for k, v in mine.items() if v is not None}}

    def data_kwargs(self) -> dict[str, Any]:
        """`RestrictedVideos` arguments of every clip set (the seed and count are the caller's)."""
        return dict(num_frames=self.num_frames, resolution=self.resolution, classes=self.classes,
                    backgrounds=self.backgrounds, textures=self.textures, shapes=self.shapes,
                    shape_scale=self.shape_scale, speed_scale=self.speed_scale)


def _cpu() -> StudyConfig:
    """2 CPU cores, `--jobs 2`: 8 rows x 19 min of training (two at a time), then evaluation and
    timing; `walt study encoder` prints the planned total when it starts (under 2 hours)."""
    return StudyConfig()


def _paper() -> StudyConfig:
    """The paper's setting for a GPU: 17x128x128 clips of the full built-in dataset, MAGVIT-v2
    widths (base 128, multipliers 1,2,2,4, 4 res blocks: CausalVAE "ucf101"), a bigger W.A.L.T
    (patch 2: 320 tokens for the 5x16x16 latent), 20 minutes per row."""
    return StudyConfig(resolution=128, num_frames=17, backgrounds=(), textures=(), shape_scale=1.0, speed_scale=1.0,
                       train_clips=4096, vae_base_channels=128, vae_channel_multipliers=(1, 2, 2, 4),
                       vae_num_res_blocks=4, vae_norm_groups=32, vae_kl=True, vae_train_frames=9,
                       vae_batch_size=16, vae_lr=5e-4, vae_recon_type="l1", vae_decoder_noise=0.0,
                       walt_hidden_size=384, walt_depth=12, walt_num_heads=6, patch_size=2, walt_batch_size=64,
                       walt_lr=5e-4, walt_ema_decay=0.999, snapshot_every=200, budget_minutes=20.0, vae_fraction=0.4,
                       guidance_scale=1.0, samples_per_seed=128, fvd_clips_per_seed=128, heldout_clips=512,
                       fvd_floor_counts=(32, 64, 128, 256, 512), timing_threads=1)


def _micro() -> StudyConfig:
    """Tests: every stage in about a second (plumbing only; the numbers mean nothing)."""
    return StudyConfig(resolution=16, num_frames=9, classes=("bouncing", "orbiting"), train_clips=4,
                       vae_base_channels=4, vae_channel_multipliers=(1, 2), vae_norm_groups=4, vae_steps=2,
                       vae_batch_size=2, vae_warmup_steps=1, vae_min_steps=2, walt_hidden_size=16, walt_depth=2,
                       walt_num_heads=2, patch_size=1, walt_steps=4, walt_batch_size=2, walt_warmup_steps=1,
                       walt_min_steps=2, snapshot_every=2, walt_precision="fp32", sample_steps=2, budget_minutes=None,
                       calibration_steps=1, heldout_clips=8, seed_sets=3, samples_per_seed=2, fvd_clips_per_seed=2,
                       floor_counts=(4, 8), fvd_floor_counts=(4, 6), classifier_train_clips=8, classifier_steps=2,
                       timing_threads=1, timing_clips=2, timing_repeats=2)


STUDY_PRESETS: dict[str, Callable[[], StudyConfig]] = {"cpu": _cpu, "paper": _paper, "gpu": _paper, "micro": _micro}


def study_config(name: str, **overrides: Any) -> StudyConfig:
    """The named preset with `overrides` applied (unknown keys -> ConfigError naming them)."""
    return from_presets(STUDY_PRESETS, name, "study preset", **overrides)
