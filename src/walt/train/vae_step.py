"""One optimizer step of each player of the autoencoder GAN, with gradient accumulation.

SPEC Sec. 1 (MAGVIT-v2 recipe), per step:
  1. generator (autoencoder): minimise 5 * L1 + kl_w * KL [+ 0.1 * perceptual] [+ 0.1 * adversarial]
     with the discriminator frozen (gradients flow through it into the reconstruction only);
  2. discriminator: non-saturating GAN loss + 10 * R1 + 0.001 * LeCAM on the real clips and the
     detached reconstructions of step 1.
Each player accumulates gradients over `k` micro-batches (loss / k each, the DDP all-reduce
skipped on all but the last), so k micro-batches of B/k clips give the gradient of one batch of
B clips. LeCAM's anchors are updated once per step with the mean logits of the whole global
batch (all-reduced over ranks), so the step does not depend on world size or k either. The returned logs are this rank's means over the micro-batches; the caller averages
them over ranks, checks them and only then clips and steps (so every rank stops together on a
non-finite value, before any optimizer step).

The generator pass calls the discriminator's *plain* module: its parameters are frozen there,
and going through the DDP wrapper would leave DDP waiting for gradients that never come.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Callable

import torch
import torch.nn as nn
from torch import Tensor

from walt.autoencoder.losses import VAELoss
from walt.eval.metrics import psnr
from walt.train.parallelize import no_grad_sync

__all__ = ["generator_pass", "discriminator_pass", "micro_batch"]


def micro_batch(x: Tensor | None, m: int, k: int) -> Tensor | None:
    """The m-th of k equal slices of `x` along the batch axis."""
    if x is None:
        return None
    n = x.shape[0] // k
    return x[m * n:(m + 1) * n]


def _scorer(disc: nn.Module, autocast) -> Callable[[Tensor], Tensor]:
    def d_forward(v: Tensor) -> Tensor:
        with autocast:
            return disc(v).float()  # (B,) logits, losses in fp32

    return d_forward


def generator_pass(
    step: int, x: Tensor, noise: Tensor | None, model: nn.Module, disc_raw: nn.Module | None, loss_fn: VAELoss,
    k: int, autocast=contextlib.nullcontext(), decoder_noise: float = 0.0,
) -> tuple[list[Tensor], dict[str, float]]:
    """Forward + backward of the autoencoder loss over k micro-batches (gradients in `.grad`, no step).

    x: (B_rank, 3, T, H, W) on the device; noise: (B_rank, c, t, h, w) posterior eps or None.
    Returns the detached reconstructions per micro-batch (for the discriminator) and the logs.
    """
    model.train()
    if disc_raw is not None:
        disc_raw.requires_grad_(False)
    d_forward = _scorer(disc_raw, autocast) if disc_raw is not None else None
    recons, sums = [], defaultdict(float)
    for m in range(k):
        xm, nm = micro_batch(x, m, k), micro_batch(noise, m, k)
        with no_grad_sync(model, enabled=m < k - 1):
            with autocast:
                recon, mean, logvar = model(xm, sample_posterior=True, noise=nm,
                                            decoder_noise=decoder_noise)  # (b, 3, T, H, W), (b, c, t, h, w)
            recon = recon.float()  # losses in fp32
            mean = mean.float() if mean is not None else None
            logvar = logvar.float() if logvar is not None else None
            total, logs = loss_fn.generator_loss(xm, recon, mean, logvar, d_forward, step)
            (total / k).backward()
        recon = recon.detach()
        logs["psnr"] = float(psnr(recon.clamp(-1, 1), xm))
        recons.append(recon)
        for name, v in logs.items():
            sums[name] += v / k
    return recons, dict(sums)


def discriminator_pass(
    x: Tensor, recons: list[Tensor], model: nn.Module, disc_raw: nn.Module, loss_fn: VAELoss, k: int,
    autocast=contextlib.nullcontext(),
) -> dict[str, float]:
    """Forward + backward of the discriminator loss (GAN + R1 + LeCAM) over the k micro-batches."""
    model.train()
    disc_raw.requires_grad_(True)
    update_lecam = True
    if k > 1 and loss_fn.config.lecam_weight > 0:
        # LeCAM's anchors move once per step with the whole batch's mean logits, as with k = 1
        # (the authors update them with the current batch before the penalty): a no-grad pass first.
        score = _scorer(disc_raw, autocast)
        with torch.no_grad():
            real = torch.cat([score(micro_batch(x, m, k)) for m in range(k)])
            fake = torch.cat([score(r) for r in recons])
        loss_fn.lecam.update(real, fake)
        update_lecam = False
    d_forward = _scorer(model, autocast)
    sums = defaultdict(float)
    for m in range(k):
        with no_grad_sync(model, enabled=m < k - 1):
            total, logs = loss_fn.discriminator_loss(micro_batch(x, m, k), recons[m], d_forward,
                                                     update_lecam=update_lecam)
            (total / k).backward()
        for name, v in logs.items():
            sums[name] += v / k
    return dict(sums)
