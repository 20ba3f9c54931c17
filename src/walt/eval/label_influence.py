"""Label influence: how much a class-conditional denoiser's x0 estimate depends on its label.

A denoiser that ignores its label still lowers its loss (it learns the data's appearance), and its
class-conditional samples then show any class. This diagnostic measures the label's effect
directly: noise clean latents to a mid noise level, estimate x0 with the true label, with another
class and with the null class, and compare the change to the estimate's error,

    influence_swap(t) = ||x0(y) - x0(y')|| / ||x0(y) - x0||,   y' != y drawn uniformly,
    influence_null(t) = ||x0(y) - x0(null)|| / ||x0(y) - x0||,

with the same noise for every label (norms over the whole batch). 0 means the label changes
nothing; a few percent is what a barely conditioned network shows.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from walt.diffusion.schedule import DiffusionSchedule, x0_from_v

__all__ = ["label_influence", "MID_NOISE_STEPS"]

MID_NOISE_STEPS = (300, 500, 700)  # of 1000: where the label decides layout and motion, not texture


@torch.no_grad()
def label_influence(
    net: nn.Module,
    schedule: DiffusionSchedule,
    x0: Tensor,
    y: Tensor,
    steps: Sequence[int] = MID_NOISE_STEPS,
    seed: int = 0,
    **cond,
) -> dict[str, float]:
    """{"swap", "null"}: the mean influence over `steps`, plus per-step entries "swap@t" / "null@t".

    Args:
        net: a class-conditional denoiser (v-prediction, `net.null_class`); run in eval mode here.
        x0: (B, C, T, H, W) clean normalised latents; y: (B,) their labels.
        **cond: more network inputs for every call (e.g. zero `self_cond`).
    """
    num_classes = int(net.config.num_classes)
    if num_classes < 2:
        raise ValueError("label influence needs a class-conditional network with >= 2 classes")
    g = torch.Generator().manual_seed(seed)
    dev = x0.device
    y = y.to(dev).long()
    other = (y + torch.randint(1, num_classes, y.shape, generator=g).to(dev)) % num_classes
    null = torch.full_like(y, int(net.null_class))
    was_training = net.training
    net.eval()
    out: dict[str, float] = {}
    try:
        for step in steps:
            t = torch.full((x0.shape[0],), int(step), device=dev, dtype=torch.long)
            noise = torch.randn(x0.shape, generator=g).to(dev, x0.dtype)
            x_t = schedule.q_sample(x0, t, noise)
            a = schedule.alpha_bar(t, dev)

            def estimate(labels: Tensor) -> Tensor:
                return x0_from_v(x_t, net(x_t, t, y=labels, **cond).to(x_t.dtype), a)

            own = estimate(y)
            err = (own - x0).norm().clamp(min=1e-12)
            out[f"swap@{step}"] = float((own - estimate(other)).norm() / err)
            out[f"null@{step}"] = float((own - estimate(null)).norm() / err)
    finally:
        net.train(was_training)
    out["swap"] = sum(out[f"swap@{s}"] for s in steps) / len(steps)
    out["null"] = sum(out[f"null@{s}"] for s in steps) / len(steps)
    return out
