"""Autoencoder training losses: reconstruction, KL, perceptual, adversarial, R1 and LeCAM.

W.A.L.T trains its causal autoencoder with the MAGVIT-v2 recipe (SPEC Sec. 1; Yu et al. 2024,
Sec. 3.2 and App. A): reconstruction (weight 5.0) + perceptual (0.1) + generator adversarial
(0.1) for the autoencoder; non-saturating GAN loss + R1 gradient penalty (10) + LeCAM (0.001)
for the discriminator. The latent is continuous, so there is no quantiser/commitment loss;
the optional diagonal-Gaussian posterior adds a KL term with a small weight (project choice).

Adversarial form: **non-saturating** (the logistic loss, `softplus`), as MAGVIT's code uses
(`sigmoid_cross_entropy_with_logits` on real=1 / fake=0); hinge is available as an option.

Perceptual term: MAGVIT-v2 uses an ImageNet-pretrained perceptual network (LPIPS-style). No
LPIPS / VGG weights can be obtained offline on these machines (PyPI only, no model hubs), and a
randomly initialised "perceptual" network would be a lie, so the term is *pluggable*:
`PerceptualLoss(feature_net)` wraps a frozen, eval-mode, genuinely pretrained network given by
the caller. The real option available here is the Kinetics-400 I3D, whose weights ship in a PyPI
sdist (`walt.train.perceptual`: an LPIPS-style distance on its intermediate features). The weight
`perceptual_weight` applies only when a network is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

ReconType = Literal["l1", "l2", "l1+l2"]
GANLossType = Literal["non_saturating", "hinge"]


@dataclass(frozen=True)
class VAELossConfig:
    """Loss weights for autoencoder training; defaults are MAGVIT-v2's (SPEC Sec. 1)."""

    recon_type: ReconType = "l1"
    recon_weight: float = 5.0
    # Sum over latent elements, mean over the batch (LDM convention); weight is a project choice.
    kl_weight: float = 1e-6
    perceptual_weight: float = 0.1  # used only when a perceptual network is given
    adversarial_weight: float = 0.1  # generator adversarial loss
    discriminator_weight: float = 1.0  # the discriminator's own GAN loss
    r1_weight: float = 10.0
    lecam_weight: float = 0.001
    lecam_ema_decay: float = 0.99  # Tseng et al. 2021 default
    gan_loss: GANLossType = "non_saturating"
    # The generator's adversarial term is switched on at this step (the discriminator itself
    # starts at `VAETrainConfig.disc_start_step`, which may be earlier, to warm up first).
    adversarial_start_step: int = 0

    def __post_init__(self):
        if self.recon_type not in ("l1", "l2", "l1+l2"):
            raise ValueError(f"VAELossConfig.recon_type must be 'l1', 'l2' or 'l1+l2', got {self.recon_type!r}")
        if self.gan_loss not in ("non_saturating", "hinge"):
            raise ValueError(f"VAELossConfig.gan_loss must be 'non_saturating' or 'hinge', got {self.gan_loss!r}")
        for name in ("recon_weight", "kl_weight", "perceptual_weight", "adversarial_weight",
                     "discriminator_weight", "r1_weight", "lecam_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"VAELossConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.lecam_ema_decay < 1.0:
            raise ValueError(f"VAELossConfig.lecam_ema_decay must be in [0, 1), got {self.lecam_ema_decay}")


# ----------------------------------------------------------------------------- reconstruction


def reconstruction_loss(recon: Tensor, target: Tensor, kind: ReconType = "l1") -> Tensor:
    """Mean per-element L1, L2 or L1 + L2 between videos (B, C, T, H, W) -> scalar."""
    if recon.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(recon.shape)} and target {tuple(target.shape)} differ in shape")
    if kind == "l1":
        return (recon - target).abs().mean()
    if kind == "l2":
        return (recon - target).pow(2).mean()
    if kind == "l1+l2":
        return (recon - target).abs().mean() + (recon - target).pow(2).mean()
    raise ValueError(f"unknown reconstruction loss {kind!r}; use 'l1', 'l2' or 'l1+l2'")


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL( N(mean, exp(logvar)) || N(0, I) ), summed over latent elements, averaged over batch.

    KL = 0.5 * sum(mean^2 + exp(logvar) - 1 - logvar)   (Kingma & Welling 2014, App. B)
    mean, logvar: (B, c, t, h, w) -> scalar.
    """
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(1).mean()


# ----------------------------------------------------------------------------- perceptual


class PerceptualLoss(nn.Module):
    """Feature-space distance under a frozen, pretrained network chosen by the caller.

    `feature_net(video)` maps (B, 3, T, H, W) in [-1, 1] to a tensor or a sequence of tensors
    (B, C_i, ...). Two distances:
      normalize=False: mean over layers of the mean squared feature difference;
      normalize=True:  LPIPS without its learned linear heads (Zhang et al. 2018, eq. 1 with
                       w = 1): unit-normalise each feature vector along channels, sum the
                       squared difference over channels, average over batch and positions,
                       sum over layers. Layers of different scale then count alike.

    The network is put in eval mode with frozen parameters, and stays in eval mode when the
    surrounding module is switched to training. Gradients flow into the reconstruction only.
    """

    def __init__(self, feature_net: nn.Module, normalize: bool = False):
        super().__init__()
        self.net = feature_net.eval().requires_grad_(False)
        self.normalize = normalize

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.net.eval()  # BatchNorm / dropout of a pretrained net must never switch to training
        return self

    def _features(self, x: Tensor) -> list[Tensor]:
        f = self.net(x)
        feats = [f] if isinstance(f, Tensor) else list(f)
        if self.normalize:
            # eps inside the rsqrt: an all-zero (post-ReLU) feature vector gets a finite gradient
            feats = [t * torch.rsqrt(t.pow(2).sum(1, keepdim=True) + 1e-10) for t in feats]
        return feats

    def forward(self, recon: Tensor, target: Tensor) -> Tensor:
        """recon, target: (B, 3, T, H, W) -> scalar; gradients reach `recon` only."""
        with torch.no_grad():
            f_target = self._features(target)
        f_recon = self._features(recon)
        if self.normalize:
            return sum((a - b).pow(2).sum(1).mean() for a, b in zip(f_recon, f_target))
        return torch.stack([(a - b).pow(2).mean() for a, b in zip(f_recon, f_target)]).mean()


# ----------------------------------------------------------------------------- adversarial


def gan_generator_loss(logits_fake: Tensor, kind: GANLossType = "non_saturating") -> Tensor:
    """Generator adversarial loss on D's logits for reconstructions (B,) -> scalar.

    non_saturating: E[softplus(-D(G))] = -E[log sigmoid(D(G))]  (Goodfellow et al. 2014)
    hinge:          -E[D(G)]
    """
    if kind == "non_saturating":
        return F.softplus(-logits_fake).mean()
    if kind == "hinge":
        return -logits_fake.mean()
    raise ValueError(f"unknown GAN loss {kind!r}; use 'non_saturating' or 'hinge'")


def gan_discriminator_loss(logits_real: Tensor, logits_fake: Tensor, kind: GANLossType = "non_saturating") -> Tensor:
    """Discriminator loss (B,), (B,) -> scalar.

    non_saturating: E[softplus(-D(x))] + E[softplus(D(G))]  (logistic loss, real=1 / fake=0)
    hinge:          E[relu(1 - D(x))] + E[relu(1 + D(G))]
    """
    if kind == "non_saturating":
        return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()
    if kind == "hinge":
        return F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean()
    raise ValueError(f"unknown GAN loss {kind!r}; use 'non_saturating' or 'hinge'")


def r1_penalty(logits_real: Tensor, real: Tensor) -> Tensor:
    """R1 gradient penalty (Mescheder et al. 2018, eq. 9): E_x[ ||grad_x D(x)||^2 ].

    `real` must have requires_grad=True and `logits_real = D(real)`. The graph is kept
    (create_graph) so the penalty trains D. The gamma/2 factor of the paper is folded into
    the weight (MAGVIT-v2: 10). (B, ...) -> scalar.
    """
    (grad,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True, allow_unused=True)
    if grad is None:  # D ignores its input: the penalty is exactly zero
        return logits_real.new_zeros(())
    return grad.pow(2).flatten(1).sum(1).mean()


class LeCAM:
    """LeCAM regulariser (Tseng et al. 2021, eq. 3) with its EMA anchors as saved state.

    R_LC = E_x[ ||D(x) - a_F||^2 ] + E_z[ ||D(G(z)) - a_R||^2 ]

    where a_R, a_F are exponential moving averages of D's mean output on real and fake clips.
    It pulls D's real and fake predictions toward each other's running means, which keeps D
    from becoming over-confident with limited data. As in the authors' code, the anchors are
    updated with the current batch before the penalty is computed; the first update copies
    the batch means (no bias toward an arbitrary initial 0). `one_sided=True` uses the
    authors' code variant with relu(D(x) - a_F) and relu(a_R - D(G(z))).

    State is three JSON numbers (`state_dict` / `load_state_dict`), saved with checkpoints
    so a resumed run continues bit-identically. `reduce` (data-parallel training) maps the
    (2,) tensor of this rank's batch means to their mean over ranks, so every rank updates its
    anchors with the global batch means and all ranks keep the same anchors.
    """

    def __init__(self, decay: float = 0.99, one_sided: bool = False,
                 reduce: Callable[[Tensor], Tensor] | None = None):
        self.decay, self.one_sided, self.reduce = decay, one_sided, reduce
        self.ema_real = 0.0
        self.ema_fake = 0.0
        self.num_updates = 0

    def update(self, logits_real: Tensor, logits_fake: Tensor) -> None:
        means = torch.stack([logits_real.detach().float().mean(), logits_fake.detach().float().mean()])
        if self.reduce is not None:
            means = self.reduce(means)
        real, fake = (float(v) for v in means)
        if self.num_updates == 0:
            self.ema_real, self.ema_fake = real, fake
        else:
            self.ema_real = self.decay * self.ema_real + (1 - self.decay) * real
            self.ema_fake = self.decay * self.ema_fake + (1 - self.decay) * fake
        self.num_updates += 1

    def penalty(self, logits_real: Tensor, logits_fake: Tensor) -> Tensor:
        """The regulariser with the current anchors (no update)."""
        d_real = logits_real - self.ema_fake
        d_fake = self.ema_real - logits_fake
        if self.one_sided:
            d_real, d_fake = F.relu(d_real), F.relu(d_fake)
        return d_real.pow(2).mean() + d_fake.pow(2).mean()

    def __call__(self, logits_real: Tensor, logits_fake: Tensor) -> Tensor:
        self.update(logits_real, logits_fake)
        return self.penalty(logits_real, logits_fake)

    def state_dict(self) -> dict:
        return {"ema_real": self.ema_real, "ema_fake": self.ema_fake, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.ema_real = float(state["ema_real"])
        self.ema_fake = float(state["ema_fake"])
        self.num_updates = int(state["num_updates"])


# ----------------------------------------------------------------------------- combined


class VAELoss(nn.Module):
    """Both sides of the autoencoder objective, with their weights and schedules.

    `generator_loss(...)` is what the autoencoder minimises; `discriminator_loss(...)` is what
    the discriminator minimises. Each returns (total, logs) where logs holds detached floats.
    """

    def __init__(self, config: VAELossConfig | None = None, perceptual: nn.Module | None = None):
        """`perceptual`: a `PerceptualLoss`, or a frozen pretrained feature network to wrap in one."""
        super().__init__()
        self.config = config or VAELossConfig()
        if perceptual is not None and not isinstance(perceptual, PerceptualLoss):
            perceptual = PerceptualLoss(perceptual)
        self.perceptual = perceptual
        self.lecam = LeCAM(self.config.lecam_ema_decay)

    def generator_loss(
        self,
        x: Tensor,
        recon: Tensor,
        mean: Tensor | None,
        logvar: Tensor | None,
        discriminator: Callable[[Tensor], Tensor] | None,
        step: int,
    ) -> tuple[Tensor, dict[str, float]]:
        """x, recon: (B, 3, T, H, W); mean/logvar: posterior (B, c, t, h, w) or None."""
        cfg = self.config
        rec = reconstruction_loss(recon, x, cfg.recon_type)
        total = cfg.recon_weight * rec
        logs = {"recon": rec.item()}
        if logvar is not None and mean is not None and cfg.kl_weight > 0:
            kl = kl_divergence(mean, logvar)
            total = total + cfg.kl_weight * kl
            logs["kl"] = kl.item()
        if self.perceptual is not None and cfg.perceptual_weight > 0:
            p = self.perceptual(recon, x)
            total = total + cfg.perceptual_weight * p
            logs["perceptual"] = p.item()
        if discriminator is not None and cfg.adversarial_weight > 0 and step >= cfg.adversarial_start_step:
            g_adv = gan_generator_loss(discriminator(recon), cfg.gan_loss)
            total = total + cfg.adversarial_weight * g_adv
            logs["g_adv"] = g_adv.item()
        logs["g_total"] = total.item()
        return total, logs

    def discriminator_loss(
        self, x: Tensor, recon: Tensor, discriminator: Callable[[Tensor], Tensor], update_lecam: bool = True
    ) -> tuple[Tensor, dict[str, float]]:
        """x: real clips, recon: reconstructions (detached here), both (B, 3, T, H, W).

        `update_lecam=False`: LeCAM's anchors were already updated for this batch (gradient
        accumulation updates them once from the whole batch); only the penalty is computed.
        """
        cfg = self.config
        real = x.detach().requires_grad_(cfg.r1_weight > 0)
        fake = recon.detach()
        logits_real, logits_fake = discriminator(real), discriminator(fake)  # (B,), (B,)
        d = gan_discriminator_loss(logits_real, logits_fake, cfg.gan_loss)
        total = cfg.discriminator_weight * d
        logs = {"d_loss": d.item(), "logits_real": logits_real.mean().item(), "logits_fake": logits_fake.mean().item()}
        if cfg.r1_weight > 0:
            r1 = r1_penalty(logits_real, real)
            total = total + cfg.r1_weight * r1
            logs["r1"] = r1.item()
        if cfg.lecam_weight > 0:
            if update_lecam:
                self.lecam.update(logits_real, logits_fake)
            lc = self.lecam.penalty(logits_real, logits_fake)
            total = total + cfg.lecam_weight * lc
            logs["lecam"] = lc.item()
        logs["d_total"] = total.item()
        return total, logs


__all__: Sequence[str] = (
    "VAELossConfig", "VAELoss", "reconstruction_loss", "kl_divergence", "PerceptualLoss",
    "gan_generator_loss", "gan_discriminator_loss", "r1_penalty", "LeCAM",
)
