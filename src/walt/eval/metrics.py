"""Reconstruction metrics for videos: PSNR and SSIM, computed per frame then averaged.

Both metrics are image metrics; for a video `(B, C, T, H, W)` we score every frame of every
clip independently and average over the `B * T` frames (the convention of MAGVIT / W.A.L.T
reconstruction tables, and what `skimage.metrics` gives when called frame by frame). Pass
`per_frame=True` to also get the `(B, T)` table, e.g. to see how quality changes along the
causal time axis (the first frame is encoded alone and is usually the best one).

Pixels are in [-1, 1] throughout the project, hence the default `data_range=2.0`.
An image `(B, C, H, W)` is treated as a one-frame video.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def _as_video_pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if x.shape != y.shape:
        raise ValueError(f"metric inputs must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim == 4:  # (B, C, H, W) image -> (B, C, 1, H, W)
        x, y = x.unsqueeze(2), y.unsqueeze(2)
    if x.ndim != 5:
        raise ValueError(f"expected a video (B, C, T, H, W) or an image (B, C, H, W), got shape {tuple(x.shape)}")
    # Metrics are computed in float64: PSNR of near-identical clips and SSIM's variance terms
    # (E[x^2] - E[x]^2) lose digits in float32.
    return x.detach().double(), y.detach().double()


def psnr(
    x: Tensor, y: Tensor, data_range: float = 2.0, per_frame: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Peak signal-to-noise ratio in dB, per frame, averaged over all frames.

    PSNR = 10 log10(data_range^2 / MSE), MSE over (C, H, W) of one frame.

    Args:
        x, y: videos `(B, C, T, H, W)` (or images `(B, C, H, W)`), same shape.
        data_range: max - min of the pixel range (2.0 for [-1, 1]).
        per_frame: also return the `(B, T)` per-frame values.
    Returns:
        the mean PSNR (0-dim float64 tensor; `inf` if some frame is reproduced exactly), and the
        `(B, T)` table when `per_frame`.
    """
    x, y = _as_video_pair(x, y)
    mse = (x - y).pow(2).mean(dim=(1, 3, 4))  # (B, T)
    frames = 10.0 * torch.log10(data_range**2 / mse)  # mse == 0 -> +inf, honestly
    mean = frames.mean()
    return (mean, frames) if per_frame else mean


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """Normalised 1D Gaussian of `size` taps (float64), the separable SSIM window."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 2.0,
    per_frame: bool = False,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor | tuple[Tensor, Tensor]:
    """Structural similarity (Wang et al. 2004, eq. 13), per frame, averaged over all frames.

    Local statistics use the standard 11x11 Gaussian window (sigma 1.5) with population
    (not sample) covariances; C1 = (K1 L)^2, C2 = (K2 L)^2 with L = `data_range`. The SSIM map
    is evaluated only where the window fits inside the frame ("valid" positions) and averaged
    over positions and channels; this equals scikit-image's `structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=0)`, which
    crops the same border before averaging.

    Args:
        x, y: videos `(B, C, T, H, W)` (or images `(B, C, H, W)`), same shape; H, W >= window_size.
    Returns:
        mean SSIM (0-dim float64 tensor), and the `(B, T)` table when `per_frame`.
    """
    x, y = _as_video_pair(x, y)
    b, c, t, h, w = x.shape
    if h < window_size or w < window_size:
        raise ValueError(f"SSIM needs frames of at least {window_size}x{window_size}, got {h}x{w}; upsample or use psnr")
    # Every (clip, channel, frame) is an independent 2D image.
    x = rearrange(x, "b c t h w -> (b t c) 1 h w")
    y = rearrange(y, "b c t h w -> (b t c) 1 h w")

    g = gaussian_window(window_size, sigma).to(x.device)

    def blur(z: Tensor) -> Tensor:  # separable valid Gaussian filtering
        z = F.conv2d(z, g.view(1, 1, -1, 1))
        return F.conv2d(z, g.view(1, 1, 1, -1))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y

    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))

    per_channel = ssim_map.mean(dim=(1, 2, 3))  # ((B T C),)
    frames = rearrange(per_channel, "(b t c) -> b t c", b=b, t=t, c=c).mean(-1)  # (B, T)
    mean = frames.mean()
    return (mean, frames) if per_frame else mean


def psnr_from_mse(mse: float, data_range: float = 2.0) -> float:
    """PSNR in dB of one mean squared error (for logging running averages)."""
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)
