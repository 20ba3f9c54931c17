"""Building blocks of the causal autoencoder: per-frame (adaptive) GroupNorm, residual blocks,
strided-conv downsampling and depth-to-space upsampling (MAGVIT-v2 layout, SPEC §1).

Every op is either a causal conv (causal_conv.py) or acts on one frame at a time, so no frame
ever sees a later frame. In particular GroupNorm statistics are taken per frame (T folded into
the batch), never over the clip: clip statistics would leak future frames into the past and make
a chunk's output depend on the chunk boundaries.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from walt.autoencoder.causal_conv import CausalConv3d, StreamState


def frame_group_norm(x: torch.Tensor, groups: int, weight=None, bias=None, eps: float = 1e-6) -> torch.Tensor:
    """GroupNorm of each frame on its own: (B, C, T, H, W) -> (B, C, T, H, W).

    On a channels-last 3D x (NDHWC) the fold of T into the batch is a view (NHWC), which
    F.group_norm normalises in that layout: no copy on the way in or out.
    """
    b = x.shape[0]
    y = F.group_norm(rearrange(x, "b c t h w -> (b t) c h w"), groups, weight, bias, eps)
    return rearrange(y, "(b t) c h w -> b c t h w", b=b)


def swish(x: torch.Tensor) -> torch.Tensor:
    """SiLU of a freshly normalised activation, in place when no gradient is recorded (one buffer less)."""
    return F.silu(x, inplace=not torch.is_grad_enabled())


def num_groups(channels: int, max_groups: int) -> int:
    """The largest group count <= max_groups that divides `channels` (tiny widths still work)."""
    return math.gcd(channels, max_groups)


class FrameGroupNorm(nn.Module):
    """GroupNorm with learned affine, statistics per frame. The latent argument is ignored."""

    def __init__(self, channels: int, max_groups: int):
        super().__init__()
        self.groups = num_groups(channels, max_groups)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None, first: bool = True) -> torch.Tensor:
        return frame_group_norm(x, self.groups, self.weight, self.bias)


def latent_to_frames(z: torch.Tensor, ratio: int, first: bool) -> torch.Tensor:
    """Repeat latent frames onto the frames they decode into (the causal time mapping).

    Latent frame 0 -> output frame 0 (only at the start of a clip, `first=True`); every later
    latent frame j -> its `ratio` frames (j-1)*ratio+1 ... j*ratio.
    (B, c, t, h, w) -> (B, c, 1 + (t-1)*ratio, h, w) if first else (B, c, t*ratio, h, w).
    """
    if ratio == 1:
        return z
    if not first:
        return z.repeat_interleave(ratio, dim=2)
    return torch.cat([z[:, :, :1], z[:, :, 1:].repeat_interleave(ratio, dim=2)], dim=2)


class AdaptiveGroupNorm(nn.Module):
    """MAGVIT-v2 adaptive GroupNorm: per-frame GroupNorm whose scale/shift are computed from z.

    scale, shift = 1x1x1 conv(z) at latent resolution, then moved onto the activation's frames by
    the causal time mapping (`latent_to_frames`) and nearest-upsampled in space; per frame, so
    causality and streaming hold. The projection is zero-initialised: training starts from a plain
    (unit-scale) GroupNorm.

    Shapes: x (B, C, T, H, W), z (B, c, t, h, w) with T = 1 + (t-1)*time_ratio (first chunk) or
    t*time_ratio (later chunks), H = h * r.
    """

    def __init__(self, channels: int, z_channels: int, max_groups: int, time_ratio: int):
        super().__init__()
        self.groups = num_groups(channels, max_groups)
        self.time_ratio = time_ratio
        self.proj = nn.Conv3d(z_channels, 2 * channels, kernel_size=1)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None, first: bool = True) -> torch.Tensor:
        scale, shift = self.proj(z).chunk(2, dim=1)  # (B, C, t, h, w) each
        scale_shift = latent_to_frames(torch.cat([scale, shift], dim=1), self.time_ratio, first)
        if scale_shift.shape[2] != x.shape[2]:
            raise RuntimeError(
                f"adaptive GroupNorm: {z.shape[2]} latent frames map to {scale_shift.shape[2]} frames, "
                f"but the activation has {x.shape[2]}"
            )
        # Nearest upsampling in space as a broadcast over (h, rh, w, rw): never materialised.
        b, c, t, h, w = x.shape
        scale, shift = scale_shift[:, :, :, :, None, :, None].chunk(2, dim=1)  # (B, C, T, h_z, 1, w_z, 1)
        y = frame_group_norm(x, self.groups).view(b, c, t, z.shape[3], h // z.shape[3], z.shape[4], w // z.shape[4])
        y = y.mul_(1 + scale).add_(shift) if not torch.is_grad_enabled() else y * (1 + scale) + shift
        return y.view(b, c, t, h, w)


class ResBlock(nn.Module):
    """(Adaptive) GroupNorm + swish + causal conv, twice, plus a residual (1x1x1 conv if widths differ).

    `z_channels=None`: encoder block with plain per-frame GroupNorm; otherwise a decoder block whose
    norms are adaptive to the latent z (`time_ratio` = output frames per latent frame at this level).
    Shapes: (B, C_in, T, H, W) -> (B, C_out, T, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_t: int, causal: bool,
                 max_groups: int, z_channels: int | None = None, time_ratio: int = 1):
        super().__init__()

        def norm(c):
            if z_channels is None:
                return FrameGroupNorm(c, max_groups)
            return AdaptiveGroupNorm(c, z_channels, max_groups, time_ratio)

        self.norm1 = norm(in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, (kernel_t, 3, 3), causal=causal)
        self.norm2 = norm(out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, (kernel_t, 3, 3), causal=causal)
        self.shortcut = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, state: StreamState | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        first = state is None or state.first
        h = self.conv1(swish(self.norm1(x, z, first)), state)
        h = self.conv2(swish(self.norm2(h, z, first)), state)
        skip = x if self.shortcut is None else self.shortcut(x)
        return h + skip  # h first: the sum takes the 3x3x3 conv's layout (a 1x1x1 conv may return NCDHW)


class Downsample(nn.Module):
    """Strided causal conv: (B, C, 1 + s_t*t, H, W) -> (B, C, 1 + t, H / s_s, W / s_s)."""

    def __init__(self, channels: int, stride_t: int, stride_s: int, *, kernel_t: int, causal: bool):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, (kernel_t, 3, 3), stride=(stride_t, stride_s, stride_s),
                                 causal=causal)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        return self.conv(x, state)


class Upsample(nn.Module):
    """Depth-to-space upsampling: causal conv to C * s_t * s_s^2 channels, then rearrange.

    (B, C, 1 + t, H, W) -> (B, C, 1 + s_t*t, H*s_s, W*s_s): depth-to-space gives s_t*(1+t) frames and
    the s_t - 1 extra leading frames (all made from latent frame 0) are dropped, which only happens
    at the start of a clip when streaming (`state.first`).
    """

    def __init__(self, channels: int, stride_t: int, stride_s: int, *, kernel_t: int, causal: bool):
        super().__init__()
        self.stride_t, self.stride_s = stride_t, stride_s
        self.conv = CausalConv3d(channels, channels * stride_t * stride_s**2, (kernel_t, 3, 3), causal=causal)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        x = self.conv(x, state)  # (B, C*st*ss*ss, T, H, W)
        factors = dict(st=self.stride_t, sh=self.stride_s, sw=self.stride_s)
        channels_last = x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
        if channels_last:
            # Rearrange in the NDHWC storage order, so the result is channels-last too.
            x = rearrange(x.permute(0, 2, 3, 4, 1), "b t h w (c st sh sw) -> b (t st) (h sh) (w sw) c", **factors)
            x = x.permute(0, 4, 1, 2, 3)
        else:
            x = rearrange(x, "b (c st sh sw) t h w -> b c (t st) (h sh) (w sw)", **factors)
        if self.stride_t > 1 and (state is None or state.first):
            # A view for one clip; with B > 1 the cut frames leave gaps, packed once here.
            fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
            x = x[:, :, self.stride_t - 1:].contiguous(memory_format=fmt)
        return x  # (B, C, T', H*ss, W*ss)
