"""Model-function wrappers used at sampling time: classifier-free guidance and context frames.

Both take a model function `model_fn(x_t, t, self_cond=None, **cond) -> v` and return a new
`ModelFn` (`(x_t, t, self_cond=None) -> v`) for the samplers of `samplers.py`.

Guidance is applied to v. Because x0 = sqrt(a) x_t - sqrt(1-a) v and eps = sqrt(1-a) x_t +
sqrt(a) v are affine in v with the same x_t, guiding v is identical to guiding x0 or eps
(Ho & Salimans 2022, eq. 6) -- there is no choice to make here.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from walt.diffusion.schedule import DiffusionSchedule, v_from_x0, x0_from_v

__all__ = ["cfg_model_fn", "combine_guidance", "replace_context_fn"]


def _cat_cond(cond: Mapping[str, Any], uncond: Mapping[str, Any]) -> dict[str, Any]:
    """Concatenate two kwarg dicts along the batch: [cond; uncond]."""
    if set(cond) != set(uncond):
        raise ValueError(
            f"cond and uncond must have the same keys, got {sorted(cond)} and {sorted(uncond)}"
        )
    out = {}
    for k in cond:
        c, u = cond[k], uncond[k]
        if c is None and u is None:
            out[k] = None
        elif isinstance(c, Tensor) and isinstance(u, Tensor):
            out[k] = torch.cat([c, u.to(c.device)], dim=0)
        else:
            raise ValueError(f"cond[{k!r}] and uncond[{k!r}] must both be tensors or both None")
    return out


def cfg_model_fn(
    model_fn: Callable[..., Tensor],
    scale: float,
    cond: Mapping[str, Any],
    uncond: Mapping[str, Any],
    batched: bool = True,
    shortcut: bool = True,
) -> Callable[..., Tensor]:
    """Classifier-free guidance (Ho & Salimans 2022): v = v_u + scale * (v_c - v_u).

    Args:
        model_fn: `model_fn(x_t, t, self_cond=None, **kwargs) -> v`.
        scale: guidance scale w >= 0. w = 1 is the conditional model exactly (one call, no
            unconditional pass); w = 0 the unconditional model exactly. The paper uses no
            guidance (w = 1) for its class-conditional and frame-prediction numbers.
        cond / uncond: keyword arguments of the conditional and unconditional calls, e.g.
            {"y": labels} and {"y": full(null_class)}; tensors are batched like x_t (B, ...).
        batched: one network call on the [cond; uncond] batch of 2B (default), or two calls.
        shortcut: at w = 1 (w = 0) call only the conditional (unconditional) branch, whose
            output the combination equals up to rounding. False always runs both branches and
            combines them (tests check through it that the combination at w = 1 is the
            conditional prediction, with the batched [cond; uncond] call).
    Returns: `fn(x_t, t, self_cond=None) -> v`. The same `self_cond` (the previous guided x0
        estimate) goes to both branches.
    """
    scale = float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"guidance scale must be a finite number >= 0, got {scale}")
    cond, uncond = dict(cond), dict(uncond)
    if shortcut and scale == 1.0:
        return lambda x_t, t, self_cond=None: model_fn(x_t, t, self_cond=self_cond, **cond)
    if shortcut and scale == 0.0:
        return lambda x_t, t, self_cond=None: model_fn(x_t, t, self_cond=self_cond, **uncond)
    both = _cat_cond(cond, uncond)

    def guided(x_t: Tensor, t: Tensor, self_cond: Tensor | None = None) -> Tensor:
        if batched:
            sc2 = None if self_cond is None else torch.cat([self_cond, self_cond])
            v_c, v_u = model_fn(torch.cat([x_t, x_t]), torch.cat([t, t]), self_cond=sc2, **both).chunk(2)
        else:
            v_c = model_fn(x_t, t, self_cond=self_cond, **cond)
            v_u = model_fn(x_t, t, self_cond=self_cond, **uncond)
        return combine_guidance(v_c, v_u, scale)

    return guided


def combine_guidance(v_cond: Tensor, v_uncond: Tensor, scale: float) -> Tensor:
    """v = v_u + w (v_c - v_u) (Ho & Salimans 2022, eq. 6), in >= float32.

    With bf16 network outputs (v_c - v_u) is a small difference of large numbers, so the
    combination is promoted to at least float32.
    """
    dt = torch.promote_types(v_cond.dtype, torch.float32)
    return v_uncond.to(dt) + scale * (v_cond.to(dt) - v_uncond.to(dt))


def replace_context_fn(
    model_fn: Callable[..., Tensor],
    schedule: DiffusionSchedule,
    context: Tensor,
    mask: Tensor,
) -> Callable[..., Tensor]:
    """Frame prediction at sampling time: pin the x0 estimate of the context frames to the clean latents.

    The network is conditioned on the context through its c_fp input (SPEC §2); on top of that,
    the x0 estimate at the context frames is replaced by the clean latents and converted back
    to v. With DDIM this keeps the noisy context frames on the forward-process marginal
    sqrt(a) x0 + sqrt(1-a) z (as during training) and makes the sample end exactly at the
    context there; the loss ignores those frames (loss.py), so nothing is lost.

    Args:
        model_fn: `(x_t, t, self_cond=None) -> v` (conditioning already bound).
        context: (B, C, T, H, W) clean latents (any values where mask is 0).
        mask: (B, T) in {0, 1}, 1 on context frames.
    """
    if context.ndim != 5 or mask.shape != (context.shape[0], context.shape[2]):
        raise ValueError(
            f"context must be (B, C, T, H, W) and mask (B, T); got {tuple(context.shape)} and {tuple(mask.shape)}"
        )
    m = mask.to(context.dtype)[:, None, :, None, None]  # (B, 1, T, 1, 1)

    def fn(x_t: Tensor, t: Tensor, self_cond: Tensor | None = None) -> Tensor:
        v = model_fn(x_t, t, self_cond=self_cond)
        a = schedule.alpha_bar(t, x_t.device)  # (B,) float64
        x0 = x0_from_v(x_t.double(), v.double(), a)
        x0 = m.double() * context.double() + (1.0 - m.double()) * x0
        return v_from_x0(x_t.double(), x0, a).to(v.dtype)

    return fn
