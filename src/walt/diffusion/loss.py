"""The denoiser's training loss (SPEC §3; paper §3.2, §5.1).

v-prediction with an UNWEIGHTED MSE, t ~ U{0, ..., T-1}, plus the three training-time
conditioning tricks of the paper:

- self-conditioning (Chen et al. 2023) with probability p_sc = 0.9: a first forward pass with a
  zero self-cond input gives an x0 estimate; the second pass is fed stop-grad(x0 estimate)
  (p_sc 0 -> FVD 110, 0.9 -> 61; paper Table 3);
- frame prediction with probability p_fp (value not stated by the paper; *choice* 0.5): the
  first 1 (image-to-video) or 2 (video prediction) latent frames are given clean through the
  network's c_fp input; the loss ignores those frames (*choice*: the sampler pins them, see
  `guidance.replace_context_fn`), unless `loss_on_context=True`;
- class-label dropout to the null class with probability p_uncond (for classifier-free
  guidance; 0 disables it);
- text dropout with probability p_uncond_text (CFG for text-to-video, paper §5.3): the dropped
  sample gets NO text tokens (all-False mask, zeroed features; `walt.text.null_text`), which is
  also the unconditional branch at sampling time.

The loss only calls `net(x_t, t, y=..., cond_frames=..., cond_mask=..., self_cond=..., **extra)`
with the keyword contract of `walt.denoiser.WALT`; it reads `net.config.self_conditioning`,
`net.config.frame_conditioning` and `net.null_class` when present, and never imports the denoiser.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from walt.diffusion.schedule import DiffusionSchedule, v_from_x0_eps, x0_from_v

__all__ = ["DiffusionLossConfig", "diffusion_loss"]


@dataclass(frozen=True)
class DiffusionLossConfig:
    """Probabilities of the training-time conditioning tricks (each applied per sample)."""

    p_self_cond: float = 0.9  # paper: 0.9; used only if net.config.self_conditioning
    p_frame_pred: float = 0.5  # *choice*; used only if net.config.frame_conditioning
    context_frames: tuple[int, ...] = (1, 2)  # latent context lengths, drawn uniformly
    p_uncond: float = 0.1  # label dropout to the null class; used only when labels are given
    p_uncond_text: float = 0.1  # text dropout (all-False mask); used only when text is given
    loss_on_context: bool = False  # include the (clean-given) context frames in the MSE
    # "none": the paper's unweighted v-MSE. "min_snr": Min-SNR-gamma (Hang et al. 2023), the
    # per-sample weight min(SNR, gamma) / (SNR + 1) on the v-MSE (= min(SNR, gamma) on the x0
    # error); a zero-SNR sample (the rescaled schedule's last step) keeps weight 1, as the zero
    # terminal SNR paper's v-prediction models do, else the mean there would never be learnt.
    weighting: str = "none"
    min_snr_gamma: float = 5.0
    # "uniform": the paper's t ~ U{0..T-1}. "logit_normal": t/T = sigmoid(N(mean, std)) (Esser et al.
    # 2024, SD3 §3.1), which spends the steps on mid noise levels, where layout and motion are decided.
    timesteps: str = "uniform"
    logit_normal_mean: float = 0.0
    logit_normal_std: float = 1.0

    def __post_init__(self):
        for name in ("p_self_cond", "p_frame_pred", "p_uncond", "p_uncond_text"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if not self.context_frames or any(k < 1 for k in self.context_frames):
            raise ValueError(f"context_frames must be a non-empty tuple of ints >= 1, got {self.context_frames}")
        if self.weighting not in ("none", "min_snr") or not self.min_snr_gamma > 0:
            raise ValueError(f"weighting must be 'none' or 'min_snr' and min_snr_gamma > 0, got "
                             f"{self.weighting!r}, {self.min_snr_gamma}")
        if self.timesteps not in ("uniform", "logit_normal") or not self.logit_normal_std > 0:
            raise ValueError(f"timesteps must be 'uniform' or 'logit_normal' and logit_normal_std > 0, got "
                             f"{self.timesteps!r}, {self.logit_normal_std}")


def _rand(shape, generator: torch.Generator | None, device) -> Tensor:
    """U[0, 1) drawn from `generator` (on its own device) then moved to `device`."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _timesteps(cfg: DiffusionLossConfig, num_timesteps: int, generator, B: int, dev) -> Tensor:
    """(B,) long training timesteps in [0, num_timesteps): uniform, or logit-normal in t / T."""
    u = _rand((B,), generator, dev)  # (B,) in [0, 1)
    if cfg.timesteps == "logit_normal":
        # Inverse-CDF of the normal on the same uniform draw: one generator call either way.
        z = torch.special.ndtri(u.double().clamp(1e-7, 1 - 1e-7))
        u = torch.sigmoid(cfg.logit_normal_mean + cfg.logit_normal_std * z).to(u.dtype)
    return (u * num_timesteps).long().clamp_(max=num_timesteps - 1)


def _null_class(net: nn.Module) -> int:
    num_classes = getattr(getattr(net, "config", None), "num_classes", None)
    if num_classes is not None and num_classes <= 0:
        raise ValueError("labels y were given but the network is not class-conditional (config.num_classes is 0)")
    null = getattr(net, "null_class", num_classes)
    if null is None:
        raise ValueError("labels y were given but the network has neither `null_class` nor `config.num_classes`")
    return int(null)


def _drop_text(text: Tensor, text_mask: Tensor | None, cfg: DiffusionLossConfig, generator, B: int, dev):
    """(text with dropped samples zeroed, the (B, L) mask of kept tokens, fraction dropped)."""
    if text.ndim != 3 or text.shape[0] != B:
        raise ValueError(f"text must be (B, L, D) with B={B}, got shape {tuple(text.shape)}")
    keep = text.new_ones(text.shape[:2], dtype=torch.bool) if text_mask is None else text_mask.to(dev).bool()
    drop_text = _rand((B,), generator, dev) < cfg.p_uncond_text  # (B,)
    keep = keep & ~drop_text[:, None]  # (B, L)
    return text * keep[..., None].to(text.dtype), keep, drop_text.float().mean()


def _frame_prediction_mask(cfg: DiffusionLossConfig, generator, x0: Tensor) -> Tensor:
    """(B, T) mask of the context frames: the first k of a sample, k drawn from cfg.context_frames
    with probability cfg.p_frame_pred, else none."""
    B, T, dev = x0.shape[0], x0.shape[2], x0.device
    ks = [k for k in cfg.context_frames if k < T]  # images (T = 1) cannot be predicted from context
    if not ks or cfg.p_frame_pred <= 0:
        return torch.zeros(B, T, device=dev, dtype=x0.dtype)
    use = _rand((B,), generator, dev) < cfg.p_frame_pred
    pick = (_rand((B,), generator, dev) * len(ks)).long().clamp_(max=len(ks) - 1)
    # Gather ks[pick] with Python scalars: a `torch.tensor(ks, device=dev)` would be a
    # (synchronising) host-to-device copy every step on an accelerator.
    k = sum((pick == j).long() * kj for j, kj in enumerate(ks)) * use  # (B,) context length, 0 = none
    return (torch.arange(T, device=dev)[None, :] < k[:, None]).to(x0.dtype)


def _self_condition(net: nn.Module, x0: Tensor, x_t: Tensor, t: Tensor, a: Tensor, kwargs: dict,
                    cfg: DiffusionLossConfig, generator) -> tuple[Tensor, Tensor]:
    """(self_cond, fraction used): the x0 estimate of a pass with a zero self-condition, stop-grad,
    for a fraction cfg.p_self_cond of the samples; zeros for the others (Chen et al. 2023)."""
    B, dev = x_t.shape[0], x_t.device
    self_cond = torch.zeros_like(x0)
    use_sc = _rand((B,), generator, dev) < cfg.p_self_cond
    # Skipping the extra pass when no sample uses it is only worth it on the CPU: on an
    # accelerator `use_sc.any()` would be a host synchronisation every step (and with
    # p_sc = 0.9 the pass is almost always needed); the result is the same either way.
    if cfg.p_self_cond > 0 and (dev.type != "cpu" or bool(use_sc.any())):
        with torch.no_grad():
            v0 = net(x_t, t, self_cond=self_cond, **kwargs)
            x0_est = x0_from_v(x_t, v0.to(x_t.dtype), a)
        self_cond = torch.where(use_sc[:, None, None, None, None], x0_est, self_cond).detach()
    return self_cond, use_sc.float().mean()


def diffusion_loss(
    net: nn.Module,
    x0: Tensor,
    schedule: DiffusionSchedule,
    cfg: DiffusionLossConfig | None = None,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    text: Tensor | None = None,
    text_mask: Tensor | None = None,
    **extra,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One training loss evaluation.

    Args:
        net: the denoiser (v-prediction), called as described in the module docstring.
        x0: clean, normalised latents (B, C, T, H, W); T = 1 for images.
        schedule: the `DiffusionSchedule`.
        cfg: `DiffusionLossConfig` (defaults to the paper's settings).
        y: (B,) long class labels or None (unconditional). Dropped to `net.null_class` with
            probability cfg.p_uncond.
        generator: optional torch.Generator for every random draw (t, noise, coin flips).
        t, noise: fixed timesteps (B,) / noise like x0 instead of random ones (tests, analysis).
        text, text_mask: (B, L, D) text features and (B, L) bool mask (None: all tokens real), for
            a text-conditioned network; each sample's text is dropped (mask all False, features
            zeroed) with probability cfg.p_uncond_text.
        **extra: passed through to `net` unchanged.
    Returns:
        loss: scalar tensor (float32) with grad; stats: detached scalars
        {"loss", "frac_self_cond", "frac_frame_pred", "frac_uncond", "frac_uncond_text"}.
    """
    cfg = cfg or DiffusionLossConfig()
    if x0.ndim != 5:
        raise ValueError(f"x0 must be latents (B, C, T, H, W), got shape {tuple(x0.shape)}")
    B, C, T, H, W = x0.shape
    dev = x0.device
    net_cfg = getattr(net, "config", None)

    # Diffusion: t ~ U{0..T-1} (or cfg.timesteps), x_t = sqrt(a) x0 + sqrt(1-a) eps, target v = sqrt(a) eps - sqrt(1-a) x0.
    if t is None:
        t = _timesteps(cfg, schedule.num_timesteps, generator, B, dev)
    if noise is None:
        if generator is None:
            noise = torch.randn_like(x0)
        else:
            noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype).to(dev)
    a = schedule.alpha_bar(t, dev)  # (B,) float64
    x_t = schedule.q_sample(x0, t, noise)  # (B, C, T, H, W)
    v_target = v_from_x0_eps(x0, noise, a)

    kwargs: dict = dict(extra)
    stats: dict[str, Tensor] = {}

    # Class-label dropout for classifier-free guidance.
    if y is not None:
        drop = _rand((B,), generator, dev) < cfg.p_uncond
        y = torch.where(drop, torch.full_like(y, _null_class(net)), y)
        kwargs["y"] = y
        stats["frac_uncond"] = drop.float().mean()

    # Text dropout for classifier-free guidance: a dropped sample attends to no text token.
    if text is not None:
        text, keep, stats["frac_uncond_text"] = _drop_text(text, text_mask, cfg, generator, B, dev)
        kwargs["text"], kwargs["text_mask"] = text, keep
    elif text_mask is not None:
        raise ValueError("text_mask was given without text")

    # Frame prediction: the first k latent frames are given clean, with probability p_fp.
    frame_mask = torch.zeros(B, T, device=dev, dtype=x0.dtype)  # (B, T), 1 = context frame
    if getattr(net_cfg, "frame_conditioning", False):
        frame_mask = _frame_prediction_mask(cfg, generator, x0)  # (B, T)
        kwargs["cond_frames"] = x0 * frame_mask[:, None, :, None, None]
        kwargs["cond_mask"] = frame_mask
        stats["frac_frame_pred"] = (frame_mask[:, 0] > 0).float().mean()

    # Self-conditioning: x0 estimate from a zero self-cond pass, fed back as stop-grad.
    if getattr(net_cfg, "self_conditioning", False):
        kwargs["self_cond"], stats["frac_self_cond"] = _self_condition(net, x0, x_t, t, a, kwargs, cfg, generator)

    v_pred = net(x_t, t, **kwargs)  # (B, C, T, H, W)
    if v_pred.shape != x0.shape:
        raise ValueError(f"net returned shape {tuple(v_pred.shape)} for latents {tuple(x0.shape)}")

    # MSE over all elements of the frames that are not given as context (unweighted unless cfg.weighting).
    err = (v_pred.float() - v_target.float()).pow(2).mean(dim=(1, 3, 4))  # (B, T)
    weight = torch.ones_like(err) if cfg.loss_on_context else (1.0 - frame_mask.float())
    denom = weight.sum().clamp(min=1.0)  # the mean over frames stays a mean: weighting rescales samples only
    if cfg.weighting == "min_snr":
        snr = a / (1.0 - a).clamp(min=1e-20)  # (B,) float64
        w = torch.where(snr > 0, snr.clamp(max=cfg.min_snr_gamma) / (snr + 1.0), torch.ones_like(snr))
        weight = weight * w.to(weight.dtype)[:, None]
    loss = (err * weight).sum() / denom
    stats["loss"] = loss.detach()
    return loss, stats
