"""Settings of `walt demo`: one frozen dataclass, presets as plain functions in a dict.

The demo is the whole W.A.L.T pipeline in miniature (SPEC §1-3): train a causal 3D CNN
autoencoder, encode the training clips into a latent cache, train a window-attention
transformer on the cache, sample class-conditional videos and frame-prediction continuations.
What makes it fit a 2-core CPU in ~15 minutes is the size of everything: 32x32 clips of 9
frames with a plainer appearance and faster motions (`walt.demo.clips`), an autoencoder with
spatial factor 4, temporal factor 2, no KL and an L2 loss, a 2.2M-parameter denoiser with patch
size 2 (80 tokens per clip) trained without self-conditioning and with the exact GELU (more steps
per minute, `walt.experiment.recipes.DEMO_FAST`), and classifier-free guidance 3 on the class.
Each choice was measured on this project's 2-core machine, and so were the ones that did not
help: docs/demo/NOTES.md records those probes.

FVD (`walt.demo.fvd_curve`) scores the denoiser's samples with walt.eval's `smoke` protocol (real
Kinetics-400 I3D) at step 0, at `fvd_checkpoints` of its run and at the end, inside the
denoiser's time; the I3D costs ~1 CPU-s per clip, so the CPU preset uses 32 clips per set.
The text-to-video stage (`walt demo --text`, `walt.demo.text_stage`) uses `text_*`.

Training stages run against wall-clock deadlines, not step counts: the total budget is split
by fixed fractions (`vae_fraction`, `final_fraction`; the transformer gets what is left after
the cache is written), each stage measures its own speed on its first steps and sets its step
count so that it ends on time (never fewer than `*_min_steps`). More minutes = more steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from walt.config import from_presets
from walt.experiment.recipes import DEMO_DENOISER, DEMO_FAST
from walt.data.synthetic import CLASS_NAMES


@dataclass(frozen=True)
class DemoConfig:
    """Everything `walt demo` does, except where it writes and how long it may take."""

    # ---- data: the built-in procedural dataset (walt.data.SyntheticVideos) ----
    resolution: int = 32
    num_frames: int = 9  # 1 + f_t * k
    classes: tuple[str, ...] = CLASS_NAMES
    train_clips: int = 512  # clips encoded into the latent cache (the transformer's training set)
    heldout_clips: int = 16  # clips of another seed: reconstruction metrics, frame-prediction contexts
    # appearance restriction (walt.demo.clips.DemoVideos); () / 1.0 = the full built-in dataset
    backgrounds: tuple[str, ...] = ("plain", "gradient", "radial")
    textures: tuple[str, ...] = ("two-tone",)
    shapes: tuple[str, ...] = ()  # () = all 8 shapes of the built-in dataset
    shape_scale: float = 1.8
    speed_scale: float = 2.0  # every motion's rate x this (walt.demo.clips.demo_videos); 1.0 = as built in
    # ---- stage 1: causal autoencoder (CausalVAE "tiny" preset + these overrides) ----
    vae_overrides: tuple[tuple[str, object], ...] = (
        ("base_channels", 16), ("channel_multipliers", (1, 2, 2)), ("num_res_blocks", 1),
        ("spatial_factor", 4), ("temporal_factor", 2), ("latent_channels", 8), ("norm_groups", 8),
        ("kl", False),  # no posterior noise (docs/demo/NOTES.md)
    )
    vae_train_frames: int = 5  # frames per training clip (causal + fully convolutional: shorter clips train faster)
    vae_batch_size: int = 8
    vae_lr: float = 2e-3
    vae_warmup_steps: int = 10
    vae_min_steps: int = 20
    vae_kl_weight: float = 1e-6  # used only when vae_overrides keep kl=True
    vae_decoder_noise: float = 0.3  # walt.train.vae.VAETrainConfig.decoder_noise: noise on the decoder's input
    vae_recon_type: str = "l2"  # walt.autoencoder.losses.VAELossConfig.recon_type: "l1" (MAGVIT-v2), "l2", "l1+l2"
    # ---- stage 2: W.A.L.T denoiser (WALT "tiny" preset + these overrides) ----
    walt_overrides: tuple[tuple[str, object], ...] = tuple({**DEMO_DENOISER, **DEMO_FAST}.items())
    walt_precision: str = "fast"  # walt.train.precision: bf16 autocast where the CPU runs bf16 natively, else fp32
    walt_batch_size: int = 16
    walt_lr: float = 4e-3  # 2e-3 and 6e-3 learned less per minute here (docs/demo/NOTES.md)
    walt_warmup_steps: int = 50
    walt_min_steps: int = 50
    walt_ema_decay: float = 0.995
    walt_snr_shift: float = 1.0  # walt.diffusion.DiffusionConfig.snr_shift: SNR x this at every step; 1 = the paper's schedule
    p_frame_pred: float = 0.5  # frame-prediction conditioning during training (paper: not stated)
    # walt.diffusion.DiffusionLossConfig.timesteps: "uniform" (the paper's t ~ U) or "logit_normal" (SD3's),
    # with walt_timestep_mean its logit-space mean
    walt_timesteps: str = "uniform"
    walt_timestep_mean: float = 0.0
    # ---- sampling ----
    samples_per_class: int = 2
    sampler: str = "ddim"
    sample_steps: int = 50  # paper: DDIM 50 steps
    guidance_scale: float = 3.0  # paper: no CFG for class-conditional results (here: docs/demo/NOTES.md)
    context_latent_frames: int = 1  # frame prediction: 1 = image-to-video
    fps: float = 8.0
    # ---- the motion-class score (walt.eval.class_score): a classifier trained on reconstructions ----
    score_samples_per_class: int = 16  # class-conditional samples it scores (the grid shows samples_per_class)
    score_heldout_clips: int = 256  # held-out clips: the reconstruction ceiling, real clips, feature FD
    classifier_train_clips: int = 1024
    classifier_steps: int = 600
    # ---- FVD as the denoiser trains (walt.demo.fvd_curve): protocol `smoke` of walt.eval, real Kinetics I3D ----
    fvd_clips: int = 32  # generated clips per evaluation = real clips per set (the smoke preset has 64); 0 = off
    fvd_at_start: bool = False  # also score the untrained denoiser (the curve's first point)
    fvd_checkpoints: tuple[float, ...] = ()  # fractions of the denoiser's run, besides step 0 and the end
    fvd_sample_steps: int = 50  # DDIM steps of the FVD samples (paper: DDIM 50 for every result)
    fvd_max_share: float = 0.5  # FVD may take at most this share of the denoiser's time left (else fewer points; >= 1: all)
    # ---- text to video (`walt demo --text`, walt.demo.text_stage): a second denoiser, prompts -> videos ----
    text_encoder: str = "minilm"  # walt.text.build_text_encoder spec: all-MiniLM-L6-v2 offline, or "t5:PATH"
    text_guidance_scale: float = 3.0  # classifier-free guidance of the guided text samples
    # ---- budget split (fractions of --minutes) ----
    vae_fraction: float = 0.40
    final_fraction: float = 0.05  # sampling, metrics, videos, plots, report (~15-25 s of the CPU preset)
    calibration_steps: int = 5  # first steps of each training stage, timed to set its step count

    def __post_init__(self) -> None:
        if self.resolution < 1 or self.num_frames < 1:
            raise ValueError(f"resolution and num_frames must be positive, got {self.resolution}, {self.num_frames}")
        unknown = [c for c in self.classes if c not in CLASS_NAMES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct names from {', '.join(CLASS_NAMES)}; got {list(self.classes)}")
        if self.train_clips < len(self.classes) or self.heldout_clips < 1:
            raise ValueError("train_clips must cover every class once and heldout_clips must be >= 1")
        if not 0 < self.vae_fraction < 1 or not 0 <= self.final_fraction < 1 or self.vae_fraction + self.final_fraction >= 1:
            raise ValueError("vae_fraction and final_fraction must be in (0, 1) and leave time for the transformer")
        if min(self.score_samples_per_class, self.score_heldout_clips, self.classifier_train_clips,
               self.classifier_steps) < 1:
            raise ValueError("score_samples_per_class, score_heldout_clips, classifier_train_clips and classifier_steps "
                             "must be >= 1")
        if self.fvd_clips != 0 and self.fvd_clips < 2:
            raise ValueError(f"fvd_clips must be 0 (no FVD) or >= 2 (a covariance needs 2 clips), got {self.fvd_clips}")
        if any(not 0 < f < 1 for f in self.fvd_checkpoints) or self.fvd_sample_steps < 1 or not 0 < self.fvd_max_share <= 1:
            raise ValueError("fvd_checkpoints must be fractions in (0, 1), fvd_sample_steps >= 1, fvd_max_share in (0, 1]")
        if not 0.25 <= self.speed_scale <= 4.0 or self.vae_recon_type not in ("l1", "l2", "l1+l2"):
            raise ValueError(f"speed_scale must be in [0.25, 4] (got {self.speed_scale}) and vae_recon_type one of "
                             f"l1, l2, l1+l2 (got {self.vae_recon_type!r})")
        if self.walt_precision not in ("auto", "fp32", "bf16", "fast"):
            raise ValueError(f"walt_precision must be auto, fp32, bf16 or fast, got {self.walt_precision!r}")
        if self.walt_timesteps not in ("uniform", "logit_normal") or abs(self.walt_timestep_mean) > 5:
            raise ValueError(f"walt_timesteps must be uniform or logit_normal and |walt_timestep_mean| <= 5, got "
                             f"{self.walt_timesteps!r}, {self.walt_timestep_mean}")
        if not 0 < self.walt_snr_shift <= 1000:
            raise ValueError(f"walt_snr_shift must be in (0, 1000], got {self.walt_snr_shift}")
        if self.calibration_steps < 1 or self.calibration_steps > min(self.vae_warmup_steps, self.walt_warmup_steps):
            raise ValueError("calibration_steps must be >= 1 and within both warmups (so timing them changes nothing)")

    def walt_loss_config(self, context_frames: tuple[int, ...]):
        """The class-conditional denoiser's loss: frame prediction `p_frame_pred` from `context_frames`
        latent frames, label dropout 0.1, timesteps `walt_timesteps`."""
        from walt.diffusion import DiffusionLossConfig

        return DiffusionLossConfig(p_frame_pred=self.p_frame_pred, context_frames=context_frames,
                                   timesteps=self.walt_timesteps, logit_normal_mean=self.walt_timestep_mean)

    def vae_kwargs(self) -> dict:
        return dict(self.vae_overrides)

    def walt_kwargs(self) -> dict:
        return dict(self.walt_overrides)

    def vae_loss_config(self):
        """The autoencoder's loss (walt.autoencoder.losses.VAELossConfig) the demo trains with."""
        from walt.autoencoder.losses import VAELossConfig

        return VAELossConfig(recon_type=self.vae_recon_type, kl_weight=self.vae_kl_weight)

    def diffusion_config(self):
        """The denoisers' noise schedule: the paper's, with `walt_snr_shift` applied."""
        from walt.diffusion import DiffusionConfig

        return DiffusionConfig(snr_shift=self.walt_snr_shift)


def _cpu() -> DemoConfig:
    """The default: about 15 minutes on 2 CPU cores (see the module docstring)."""
    return DemoConfig()


def _smoke() -> DemoConfig:
    """Minimal sizes for the end-to-end test: every stage and every output in well under a minute."""
    return DemoConfig(
        resolution=16, num_frames=9, classes=("bouncing", "orbiting"), train_clips=8, heldout_clips=2,
        vae_overrides=(("base_channels", 4), ("channel_multipliers", (1, 2)), ("num_res_blocks", 1),
                       ("spatial_factor", 4), ("temporal_factor", 4), ("latent_channels", 4), ("norm_groups", 4)),
        vae_batch_size=2, vae_min_steps=2, vae_warmup_steps=2,
        walt_overrides=(("hidden_size", 32), ("depth", 2), ("num_heads", 2)),
        walt_batch_size=4, walt_min_steps=2, walt_warmup_steps=2,
        samples_per_class=1, sample_steps=4, calibration_steps=1,
        score_samples_per_class=2, score_heldout_clips=8, classifier_train_clips=16, classifier_steps=3,
        # FVD with the real I3D on 2 + 2 clips (9 frames: the I3D's minimum), every evaluation kept
        fvd_clips=2, fvd_sample_steps=2, fvd_max_share=1.0, fvd_at_start=True, fvd_checkpoints=(0.5,),
    )


def _gpu() -> DemoConfig:
    """What `--device auto` picks on a GPU: 64x64 clips of 17 frames, f_s = 8, bigger models and batches."""
    return DemoConfig(
        resolution=64, num_frames=17, train_clips=4096, heldout_clips=32, backgrounds=(), textures=(), shape_scale=1.0,
        speed_scale=1.0, vae_recon_type="l1",  # the full built-in dataset; MAGVIT-v2's L1 + KL
        vae_overrides=(("base_channels", 64), ("channel_multipliers", (1, 2, 2, 4)), ("num_res_blocks", 2),
                       ("spatial_factor", 8), ("temporal_factor", 4), ("latent_channels", 8), ("norm_groups", 32)),
        vae_train_frames=9, vae_batch_size=16, vae_lr=5e-4, vae_min_steps=200,
        walt_overrides=(("hidden_size", 384), ("depth", 12), ("num_heads", 6)), vae_decoder_noise=0.0,
        walt_batch_size=64, walt_lr=5e-4, walt_min_steps=500, walt_ema_decay=0.999,
        guidance_scale=1.0, context_latent_frames=2, fvd_clips=256, fvd_checkpoints=(0.25, 0.5), fvd_at_start=True,
    )


PRESETS: dict[str, Callable[[], DemoConfig]] = {"cpu": _cpu, "gpu": _gpu, "smoke": _smoke}


def demo_config(name: str, **overrides) -> DemoConfig:
    """The named preset with `overrides` applied (unknown keys -> ConfigError naming them)."""
    return from_presets(PRESETS, name, "demo preset", **overrides)
