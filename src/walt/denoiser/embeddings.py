"""Input and conditioning embeddings of the W.A.L.T transformer (SPEC §2).

* `patchify` / `unpatchify` and `PatchEmbed`: per-frame p x p patches + linear projection (no
                      temporal patching); the final layer's output is unpatchified back.
* `PositionEmbedding` learned absolute embedding = spatial table + temporal table; an image
                      (T = 1) uses the first temporal entry.
* `RelativePositionBias` Swin-style learned bias per head, indexed by the 3D offset of two
                      tokens inside a window.
* `TimestepEmbedder`  sinusoidal features + MLP (DiT); also used for the SR noise level.
* `LabelEmbedder`     class table with one extra row: the null class for classifier-free guidance.
* `TextProjection`    text-encoder token features -> model width (PixArt-style caption MLP).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, T, H/p, W/p, p*p*C): p x p patches of each frame, never across frames."""
    return rearrange(x, "b c t (h p1) (w p2) -> b t h w (p1 p2 c)", p1=p, p2=p)


def unpatchify(tokens: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of `patchify`: (B, T, H', W', p*p*C) -> (B, C, T, H'p, W'p)."""
    return rearrange(tokens, "b t h w (p1 p2 c) -> b c t (h p1) (w p2)", p1=p, p2=p)


class PatchEmbed(nn.Module):
    """(B, C, T, H, W) -> (B, T, H/p, W/p, D): every frame is patchified on its own (paper §3.2).

    A Linear over flattened p x p x C patches is the same map as a stride-p Conv2d per frame
    (tests/test_denoiser.py checks this against `F.conv2d`).
    """

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_channels * patch_size**2, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(patchify(x, self.patch_size))  # (B, T, H', W', D)


class PositionEmbedding(nn.Module):
    """Learned absolute position: spatial (H'*W', D) table + temporal (T_max, D) table (paper §3.2)."""

    def __init__(self, grid: tuple[int, int, int], hidden_size: int):
        super().__init__()
        t, h, w = grid
        self.grid = grid
        self.spatial = nn.Parameter(torch.zeros(h * w, hidden_size))
        self.temporal = nn.Parameter(torch.zeros(t, hidden_size))

    def forward(self, num_frames: int) -> torch.Tensor:
        """-> (T, H', W', D) for the first `num_frames` frames (an image takes temporal[0])."""
        _, h, w = self.grid
        spatial = rearrange(self.spatial, "(h w) d -> 1 h w d", h=h, w=w)
        return self.temporal[:num_frames, None, None, :] + spatial


def relative_position_index(window: tuple[int, int, int], table_window: tuple[int, int, int]) -> torch.Tensor:
    """(N, N) long index into a (2Wt-1)(2Wh-1)(2Ww-1) table for the N = wt*wh*ww tokens of `window`.

    `window` may be smaller than `table_window` (a window clamped to a short clip): its offsets are a
    subset of the table's, so the same learned entries are reused.
    """
    coords = torch.stack(torch.meshgrid(*[torch.arange(n) for n in window], indexing="ij")).flatten(1)  # (3, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (3, N, N), offsets in [-(w-1), w-1]
    rel = rel + torch.tensor([n - 1 for n in table_window])[:, None, None]  # shift to >= 0
    _, th, tw = (2 * n - 1 for n in table_window)
    return (rel[0] * th + rel[1]) * tw + rel[2]


class RelativePositionBias(nn.Module):
    """Swin-style learned relative position bias inside a 3D window, one table per layer.

    The table has (2Wt-1)(2Wh-1)(2Ww-1) rows and one column per head. `forward(window)` returns
    the (heads, N, N) additive attention bias for a (possibly clamped) window.
    """

    def __init__(self, window: tuple[int, int, int], num_heads: int):
        super().__init__()
        self.window = tuple(window)
        size = math.prod(2 * n - 1 for n in self.window)
        self.table = nn.Parameter(torch.zeros(size, num_heads))
        self._index_cache: dict[tuple, torch.Tensor] = {}  # not state: recomputed on demand

    def forward(self, window: tuple[int, int, int]) -> torch.Tensor:
        key = (tuple(window), self.table.device)
        if key not in self._index_cache:
            if any(w > tw for w, tw in zip(window, self.window)):
                raise ValueError(f"window {window} is larger than the bias table's window {self.window}")
            idx = relative_position_index(tuple(window), self.window)
            self._index_cache[key] = idx.flatten().to(self.table.device)
        n = math.prod(window)
        # Contiguous (heads, N, N): SDPA's CPU kernel reads the mask row by row, and a permuted view of
        # the (N*N, heads) gather would make every read stride over the heads.
        bias = self.table[self._index_cache[key]].t().contiguous()  # (heads, N*N)
        return bias.view(-1, n, n)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (B,) timesteps (float or int) -> (B, dim) float32 (DiT / ADM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """(B,) timesteps in [0, 1000) -> (B, D): sinusoidal features, Linear, SiLU, Linear (DiT)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """(B,) labels in [0, num_classes] -> (B, D); row `num_classes` is the null (unconditional) class.

    Label dropout for classifier-free guidance is the training loop's job: it replaces labels
    with `num_classes`. Keeping it out of the module keeps the forward pass deterministic.
    """

    def __init__(self, num_classes: int, hidden_size: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.table(y)


class TextProjection(nn.Module):
    """(B, L, D_text) text-encoder features -> (B, L, D) tokens for cross-attention."""

    def __init__(self, text_dim: int, hidden_size: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(text_dim, hidden_size),
            nn.GELU(approximate="tanh"),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.mlp(text)
