"""Frame-count rules of the causal autoencoder: valid clip lengths, `fit_frames`, chunk plans.

A causal autoencoder with temporal factor f maps 1 + f*k frames to 1 + k latent frames (SPEC §1):
frame 0 is encoded on its own, every later group of f frames becomes one latent frame.
"""

from __future__ import annotations

from typing import Sequence

import torch


def valid_frame_count(frames: int, temporal_factor: int) -> bool:
    return frames >= 1 and (frames - 1) % temporal_factor == 0


def check_frame_count(frames: int, temporal_factor: int) -> None:
    """ValueError naming the nearest valid counts unless `frames` = 1 + temporal_factor * k."""
    if valid_frame_count(frames, temporal_factor):
        return
    f = temporal_factor
    below = 1 + max(0, (frames - 1) // f) * f
    above = below + f
    raise ValueError(
        f"got {frames} frames; temporal_factor={f} needs 1+{f}k frames, e.g. {below} or {above}; "
        f"use walt.autoencoder.fit_frames(...) to pad or crop"
    )


def fit_frames(x: torch.Tensor, temporal_factor: int, mode: str = "crop") -> torch.Tensor:
    """Crop or pad the time axis of a video to the nearest valid length 1 + temporal_factor * k.

    Args:
        x: (B, C, T, H, W) video (or (C, T, H, W)); time is axis -3.
        mode: "crop" keeps the first 1 + f*floor((T-1)/f) frames; "pad" repeats the last frame
            up to 1 + f*ceil((T-1)/f).
    Returns the video with a valid frame count (unchanged if already valid).
    """
    if mode not in ("crop", "pad"):
        raise ValueError(f"fit_frames mode must be 'crop' or 'pad', got {mode!r}")
    if x.dim() < 4:
        raise ValueError(f"fit_frames expects a (B, C, T, H, W) or (C, T, H, W) video, got shape {tuple(x.shape)}")
    t = x.shape[-3]
    if t < 1:
        raise ValueError("fit_frames needs at least one frame")
    f = temporal_factor
    if mode == "crop":
        return x.narrow(-3, 0, 1 + (t - 1) // f * f)
    extra = (-(t - 1)) % f
    if extra == 0:
        return x
    last = x.narrow(-3, t - 1, 1)
    return torch.cat([x, last.expand(*last.shape[:-3], extra, *last.shape[-2:])], dim=-3)


def chunk_plan(frames: int, chunk_frames: int | Sequence[int], factor: int, what: str = "frames") -> list[int]:
    """Split `frames` input frames into streaming chunks and validate the plan.

    Args:
        frames: input length along time (pixel frames for encode, latent frames for decode).
        chunk_frames: an int N (a multiple of `factor`): chunks 1+N, N, N, ..., the last one shorter
            if needed; the first chunk also carries frame 0. Or an explicit list of chunk lengths:
            the first 1 + factor*a (a >= 0), the others positive multiples of `factor`, summing
            to `frames`.
        factor: `temporal_factor` for encode, 1 for decode (every latent frame stands alone).
    Returns the list of chunk lengths.
    """
    f = factor
    if isinstance(chunk_frames, int) and not isinstance(chunk_frames, bool):
        n = chunk_frames
        if n < 1 or n % f:
            raise ValueError(
                f"chunk_frames={n} must be a positive multiple of {f} (chunks are 1+{n}, {n}, {n}, ... "
                f"{what}); or pass an explicit list such as [{1 + 4 * f}, {4 * f}, ...]"
            )
        plan = [min(frames, 1 + n)]
        while sum(plan) < frames:
            plan.append(min(n, frames - sum(plan)))
        return plan
    plan = [int(c) for c in chunk_frames]
    if not plan or any(c < 1 for c in plan):
        raise ValueError(f"chunk_frames={list(chunk_frames)} must be a non-empty list of positive sizes")
    if (plan[0] - 1) % f or any(c % f for c in plan[1:]):
        raise ValueError(
            f"chunk plan {plan} is invalid: the first chunk must have 1+{f}k {what} and every later "
            f"chunk a multiple of {f}"
        )
    if sum(plan) != frames:
        raise ValueError(f"chunk plan {plan} covers {sum(plan)} {what} but the input has {frames}")
    return plan
