"""Causal 3D convolution with a streaming cache (W.A.L.T Sec. 3.1, MAGVIT-v2 Sec. 3.2).

Causality: the k_t - 1 frames of temporal padding all go BEFORE the clip and none after, so an
output frame depends only on input frames at or before it and frame 0 is encoded on its own
(an image is a 1-frame video). A temporal stride s maps 1 + s*t frames to 1 + t: output i reads
input frames s*i - (k_t - 1) ... s*i.

Padding choice: we REPLICATE frame 0, not zeros. (1) Frame 0 then sees what any frame of a still
video sees, so there is no artificial "black before the clip" boundary whose statistics differ
from the rest, and a static video encodes to a static latent: every latent frame equals the
latent of the single image (with zero padding the first latent would differ). (2) It makes the image -> video inflation exact for any image kernel: on one
replicate-padded frame a (k_t, k, k) kernel acts like the 2D kernel W.sum(t) (see inflate.py).
Spatial padding is ordinary zero padding (k // 2 on each side).

Streaming: with a `StreamState`, each conv keeps the tail of its (padded) input that later
outputs still need, i.e. the frames after the last consumed stride step. Chunked and whole-clip
runs therefore read exactly the same windows. The state is created per `encode` / `decode` call,
never stored on the module, so nothing leaks between calls.
"""

from __future__ import annotations

import torch
from torch import nn


class StreamState:
    """Streaming state of one encode/decode call.

    `tails[layer]` holds the input frames a causal layer still needs for its next outputs;
    `first` is True while the chunk being processed is the one that starts the clip (layers pad or
    drop frames only there).
    """

    def __init__(self) -> None:
        self.tails: dict[nn.Module, torch.Tensor] = {}
        self.first = True


def activation_format(conv: "CausalConv3d") -> torch.memory_format:
    """The layout of a network's activations: channels-last 3D (NDHWC) when `conv`'s weights are
    (`module.to(memory_format=torch.channels_last_3d)`), else contiguous (NCDHW)."""
    w = conv.weight
    if w.is_contiguous(memory_format=torch.channels_last_3d) and not w.is_contiguous():
        return torch.channels_last_3d
    return torch.contiguous_format


class CausalConv3d(nn.Module):
    """Conv3d over (B, C, T, H, W) with causal (or, if `causal=False`, symmetric) temporal padding.

    Args:
        in_channels, out_channels: C_in, C_out.
        kernel_size: (k_t, k_h, k_w) or an int for all three; k_h, k_w odd.
        stride: (s_t, s_h, s_w) or an int; needs k_t >= s_t so no input frame is skipped.
        causal: pad k_t - 1 frames before (True) or (k_t - 1) / 2 on each side (False, k_t odd).

    Shapes: (B, C_in, T, H, W) -> (B, C_out, T', H / s_h, W / s_w) with T' = 1 + (T - 1) / s_t on a
    whole clip (T = 1 + s_t * t).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, causal: bool = True):
        super().__init__()
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        st, sh, sw = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        if kt < st:
            raise ValueError(f"temporal kernel {kt} must be >= temporal stride {st}")
        if not causal and kt % 2 == 0:
            raise ValueError(f"a non-causal conv needs an odd temporal kernel, got {kt}")
        self.kernel_t, self.stride_t, self.causal = kt, st, causal
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), stride=(st, sh, sw),
                              padding=(0, kh // 2, kw // 2))

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    @property
    def bias(self) -> torch.Tensor:
        return self.conv.bias

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        # x: (B, C_in, T, H, W)
        p = self.kernel_t - 1
        # Repeated slices, not an expanded view: cat keeps a channels-last input channels-last only
        # when every piece is laid out like it.
        if not self.causal:
            half = p // 2
            return self.conv(torch.cat([x[:, :, :1]] * half + [x] + [x[:, :, -1:]] * half, dim=2))
        if state is None or self not in state.tails:
            # Start of the clip: replicate frame 0 in front (see module docstring for why).
            x = torch.cat([x[:, :, :1]] * p + [x], dim=2)
        else:
            x = torch.cat([state.tails[self], x], dim=2)
        length = x.shape[2]
        n_out = (length - self.kernel_t) // self.stride_t + 1 if length >= self.kernel_t else 0
        if state is not None:
            # Keep every frame from the next output's window start on (k_t - s_t .. k_t - 1 frames);
            # clone so the cache does not pin the whole chunk's memory.
            state.tails[self] = x[:, :, n_out * self.stride_t:].clone()
        if n_out == 0:
            h, w = x.shape[-2:]
            sh, sw = self.conv.stride[1:]
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0, -(-h // sh), -(-w // sw))
        return self.conv(x)  # (B, C_out, n_out, H', W')
