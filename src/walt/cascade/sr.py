"""Super-resolution stages of the cascade: low-res conditioning and noise-conditioning augmentation.

W.A.L.T §4 / SPEC §4: "SR models upsample the low-res latent with depth-to-space and take it as
conditioning, with noise-conditioning augmentation: t_sr ~ U(0, t_max), fed through AdaLN-LoRA."

* **Upsampling** (`upsample_latent`): the low-res latent (B, c, T, h, w) is brought to the SR
  stage's latent size (B, c, T, 2h, 2w) and concatenated with the noisy input on channels (the
  network's `lowres` input, `WALTConfig.lowres_channels`). *Choice*: a FIXED nearest upsample,
  which is depth-to-space of the channel-repeated latent (each low-res vector copied to its 2x2
  children). A learned 1x1 conv to 4c channels + depth-to-space would add nothing here: the
  network's first layer is a linear patch embedding over p x p x C_in patches with p = 2 (SR-1)
  or 4 (SR-2), a multiple of the factor 2, so every token sees whole 2x2 groups of upsampled
  values, and linear conv -> depth-to-space -> linear patch embedding is again a single linear map
  of the same low-res vectors: the two are equally expressive, the fixed one has no parameters
  and its checkpoints are plain `WALT`s. ("bilinear" is offered for p = 1 networks such as the
  tiny twins' ablations, where neighbouring tokens would otherwise see identical conditioning.)
* **Noise-conditioning augmentation** (`augment_lowres`, Ho et al. 2022 "Cascaded Diffusion
  Models" §4.3): the low-res latent is corrupted with the SAME diffusion forward process as the
  denoiser, z_aug = sqrt(a_s) z_lo + sqrt(1 - a_s) eps at level s, BEFORE upsampling (the level
  models the base stage's errors, which live at low resolution), and s is given to the network as
  `noise_level` (embedded like a timestep and added to the AdaLN conditioning vector, so it
  reaches every layer's AdaLN-LoRA modulation). Training draws s ~ U{0, ..., t_max}; sampling uses
  one fixed level (`SRConfig.sample_noise_level`, overridable per call / `--sr-noise-level`).
  *Choices* (the paper states neither number): t_max = 250 (alpha_bar = 0.52) and a sampling level
  of 50 (alpha_bar ~ 0.97 on the zero-terminal-SNR linear schedule).
* Training pairs (`sr_loss`): hi-res latents z_hi and the latents z_lo of the same clips at half
  the resolution, from the same autoencoder: the low-res clip is the high-res clip's pixels
  downsampled (box filter) before encoding (`walt.data.downsample`, `walt encode --downsample-from`;
  two latent caches, `walt train --stage sr`); both normalised with their own cache's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn

from walt.diffusion.loss import DiffusionLossConfig, diffusion_loss
from walt.diffusion.schedule import DiffusionSchedule

__all__ = ["SRConfig", "upsample_latent", "augment_lowres", "sr_conditioning", "sr_loss", "super_resolve"]


@dataclass(frozen=True)
class SRConfig:
    """How an SR stage is conditioned on the previous stage's latent (stored with its checkpoint)."""

    scale: int = 2  # spatial factor over the previous stage (paper: 2 for SR-1 and SR-2)
    upsample: Literal["nearest", "bilinear"] = "nearest"  # nearest == depth-to-space of repeated channels
    max_noise_level: int = 250  # t_max of the training augmentation t_sr ~ U{0..t_max} (*choice*)
    sample_noise_level: int = 50  # augmentation level used at sampling time (*choice*)

    def __post_init__(self):
        if self.scale < 1:
            raise ValueError(f"SRConfig.scale must be >= 1, got {self.scale}")
        if self.upsample not in ("nearest", "bilinear"):
            raise ValueError(f"SRConfig.upsample must be 'nearest' or 'bilinear', got {self.upsample!r}")
        if self.max_noise_level < 0 or self.sample_noise_level < 0:
            raise ValueError("SRConfig noise levels must be >= 0 (timesteps of the diffusion schedule)")


def upsample_latent(z: Tensor, scale: int = 2, mode: str = "nearest") -> Tensor:
    """(B, c, T, h, w) -> (B, c, T, scale*h, scale*w), every frame on its own.

    "nearest" is depth-to-space of the latent with each channel repeated scale^2 times (the
    paper's "upsample with depth-to-space" with a fixed, parameter-free projection).
    """
    if z.ndim != 5:
        raise ValueError(f"expected latents (B, c, T, h, w), got shape {tuple(z.shape)}")
    if scale == 1:
        return z
    if mode == "nearest":
        return repeat(z, "b c t h w -> b c t (h s1) (w s2)", s1=scale, s2=scale)
    if mode == "bilinear":
        b = z.shape[0]
        frames = z.transpose(1, 2).flatten(0, 1)  # (B*T, c, h, w)
        up = F.interpolate(frames, scale_factor=scale, mode="bilinear", align_corners=False)
        return up.unflatten(0, (b, -1)).transpose(1, 2)  # (B, c, T, sh, sw)
    raise ValueError(f"unknown upsample mode {mode!r}; use 'nearest' or 'bilinear'")


def _levels(noise_level: int | Sequence[int] | Tensor, batch: int, schedule: DiffusionSchedule, device) -> Tensor:
    """An int, a sequence or a (B,) tensor of augmentation timesteps -> (B,) long on `device`."""
    t = torch.as_tensor(noise_level, device=device)
    if t.dtype.is_floating_point:
        raise ValueError(f"noise levels are integer diffusion timesteps, got dtype {t.dtype}")
    t = t.long().expand(batch) if t.ndim == 0 else t.long()
    if t.shape != (batch,):
        raise ValueError(f"noise_level must be an int or (B,) = ({batch},) timesteps, got shape {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= schedule.num_timesteps):
        raise ValueError(f"noise levels must lie in [0, {schedule.num_timesteps - 1}], got {t.tolist()}")
    return t


def augment_lowres(
    z_lo: Tensor,
    noise_level: int | Sequence[int] | Tensor,
    schedule: DiffusionSchedule,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> tuple[Tensor, Tensor]:
    """Noise-conditioning augmentation: z_aug = sqrt(a_s) z_lo + sqrt(1 - a_s) eps at level s.

    Args:
        z_lo: (B, c, T, h, w) normalised low-res latents.
        noise_level: s, an int for the whole batch or (B,) timesteps; 0 is (almost) clean.
        generator: one generator, or one per sample (sample i's noise depends on its own only).
    Returns: (z_aug (B, c, T, h, w), levels (B,) long).
    """
    b = z_lo.shape[0]
    s = _levels(noise_level, b, schedule, z_lo.device)
    if isinstance(generator, (list, tuple)):
        if len(generator) != b:
            raise ValueError(f"got {len(generator)} generators for a batch of {b}")
        eps = torch.stack([torch.randn(z_lo.shape[1:], generator=g, device=g.device) for g in generator])
    elif generator is not None:
        eps = torch.randn(z_lo.shape, generator=generator, device=generator.device)
    else:
        eps = torch.randn(z_lo.shape)
    eps = eps.to(z_lo.device, z_lo.dtype)
    return schedule.q_sample(z_lo, s, eps), s


def sr_conditioning(
    z_lo: Tensor,
    noise_level: int | Sequence[int] | Tensor,
    schedule: DiffusionSchedule,
    sr: SRConfig = SRConfig(),
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> dict[str, Tensor]:
    """The SR network's conditioning inputs from a normalised low-res latent.

    (B, c, T, h, w) -> {"lowres": (B, c, T, scale*h, scale*w) augmented + upsampled,
                        "noise_level": (B,) long}: keyword arguments of `WALT.forward`.
    """
    z_aug, s = augment_lowres(z_lo, noise_level, schedule, generator)
    return {"lowres": upsample_latent(z_aug, sr.scale, sr.upsample), "noise_level": s}


def _check_pair(net: nn.Module, z_lo: Tensor, hi_shape: Sequence[int], sr: SRConfig) -> None:
    cfg = net.config
    if cfg.lowres_channels <= 0:
        raise ValueError("this network has no SR conditioning (config.lowres_channels = 0); use an sr preset")
    if z_lo.ndim != 5 or z_lo.shape[1] != cfg.lowres_channels:
        raise ValueError(f"low-res latents must be (B, {cfg.lowres_channels}, T, h, w), got {tuple(z_lo.shape)}")
    b, _, t, h, w = hi_shape
    want = (b, t, h // sr.scale, w // sr.scale)
    got = (z_lo.shape[0], z_lo.shape[2], z_lo.shape[3], z_lo.shape[4])
    if got != want or h % sr.scale or w % sr.scale:
        raise ValueError(
            f"low-res latents (B, T, h, w)={got} do not fit the SR stage: it needs {want} "
            f"(its latent {h}x{w} / scale {sr.scale}); chain stages whose sizes differ by the scale"
        )


def sr_loss(
    net: nn.Module,
    z_hi: Tensor,
    z_lo: Tensor,
    schedule: DiffusionSchedule,
    loss_cfg: DiffusionLossConfig | None = None,
    sr: SRConfig = SRConfig(),
    generator: torch.Generator | None = None,
    **extra: Any,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Training loss of an SR stage: `diffusion_loss` on z_hi conditioned on augmented, upsampled z_lo.

    Args:
        z_hi: (B, c, T, H, W) normalised target latents; z_lo: (B, c, T, H/2, W/2) normalised
            latents of the same clips at half the resolution.
        sr: the stage's `SRConfig`; t_sr ~ U{0, ..., sr.max_noise_level} per sample.
        generator: every random draw (levels, augmentation noise, then the diffusion loss's).
        **extra: more network inputs, e.g. text=..., text_mask=...
    Returns: (loss, stats) as `diffusion_loss`, stats gain "noise_level" (batch mean).
    """
    _check_pair(net, z_lo, z_hi.shape, sr)
    b = z_hi.shape[0]
    dev = z_hi.device
    u = torch.rand((b,), generator=generator, device=generator.device if generator is not None else "cpu")
    levels = (u * (sr.max_noise_level + 1)).long().clamp_(max=min(sr.max_noise_level, schedule.num_timesteps - 1))
    cond = sr_conditioning(z_lo, levels.to(dev), schedule, sr, generator)
    loss, stats = diffusion_loss(net, z_hi, schedule, loss_cfg, generator=generator, **cond, **extra)
    stats["noise_level"] = levels.float().mean()
    return loss, stats


@torch.no_grad()
def super_resolve(
    net: nn.Module,
    schedule: DiffusionSchedule,
    z_lo: Tensor,
    noise_level: int | None = None,
    sr: SRConfig = SRConfig(),
    lowres_stats: Any = None,
    latent_stats: Any = None,
    seeds: Sequence[int] | Sequence[torch.Generator] | None = None,
    **generate_kwargs: Any,
) -> Tensor:
    """Sample the SR stage's latents given the previous stage's latents.

    Args:
        net: an SR `WALT` (config.lowres_channels > 0).
        z_lo: (B, c, T, h, w) low-res latents in the previous stage's RAW autoencoder space
            (normalised here with `lowres_stats`, the statistics the stage was trained with).
        noise_level: augmentation level s (default `sr.sample_noise_level`); the augmentation
            noise is drawn from each sample's own generator, so seeds stay per-sample.
        latent_stats: the stage's own statistics (its output comes back raw / denormalised).
        seeds: one int or generator per sample (continued by the sampler afterwards).
        **generate_kwargs: as `walt.pipeline.generate` (sampler, steps, text, guidance_scale,
            context, ...).
    Returns: (B, c, T, scale*h, scale*w) latents (raw space when latent_stats is given).
    """
    from walt.diffusion.samplers import make_generators
    from walt.pipeline import generate

    cfg = net.config
    b, c, t = z_lo.shape[:3]
    shape = (b, cfg.in_channels, t, *cfg.input_size[1:])
    _check_pair(net, z_lo, shape, sr)
    p = next(net.parameters())
    z = z_lo.to(p.device, torch.float32)
    if lowres_stats is not None:
        z = lowres_stats.normalize(z)
    seeds = list(range(b)) if seeds is None else list(seeds)
    gens = seeds if all(isinstance(g, torch.Generator) for g in seeds) else make_generators(seeds)
    level = sr.sample_noise_level if noise_level is None else int(noise_level)
    cond = sr_conditioning(z, level, schedule, sr, gens)
    cond["lowres"] = cond["lowres"].to(p.dtype)
    return generate(net, schedule, shape, seeds=gens, latent_stats=latent_stats, extra_cond=cond, **generate_kwargs)
