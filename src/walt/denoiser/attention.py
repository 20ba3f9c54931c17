"""Non-overlapping window attention over (B, T, H, W, D) token grids (W.A.L.T §3.2, SPEC §2).

A window layer partitions the token grid into non-overlapping (wt, wh, ww) windows (no shifting),
folds the windows into the batch and runs ONE `F.scaled_dot_product_attention` call over
(B * nW, heads, N, head_dim) with N = wt * wh * ww. That costs O(nW * N^2) instead of the
O((nW * N)^2) of masked full attention, and lets SDPA pick its fused kernels.

Kernel note: with the relative position bias on, the bias is passed to SDPA as a float
`attn_mask`, which rules out the flash kernel on GPU (the memory-efficient kernel still runs).
Set `rel_pos_bias=False` in the config to make the bias-free path flash-eligible.

Windows are given in tokens (after patchify), clamped to the grid at run time (a 1-frame image
in a 5-frame window becomes a 1-frame window), and must then divide the grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from walt.denoiser.embeddings import RelativePositionBias


def resolve_window(window: tuple[int, int, int], grid: tuple[int, int, int]) -> tuple[int, int, int]:
    """Clamp `window` to `grid` (both (T, H, W) in tokens); raise ValueError if it does not divide it."""
    clamped = tuple(min(int(w), int(g)) for w, g in zip(window, grid))
    if any(g % w for w, g in zip(clamped, grid)):
        raise ValueError(
            f"latent token grid (T, H, W)={tuple(grid)} is not divisible by the window {clamped} "
            f"(configured {tuple(window)}, clamped to the grid); choose window sizes that divide "
            "the latent size, or change the latent size"
        )
    return clamped  # type: ignore[return-value]


def window_partition(x: torch.Tensor, window: tuple[int, int, int]) -> torch.Tensor:
    """(B, T, H, W, D) -> (B * nW, wt * wh * ww, D); windows ordered batch-major, then t, h, w."""
    wt, wh, ww = window
    return rearrange(
        x, "b (nt wt) (nh wh) (nw ww) d -> (b nt nh nw) (wt wh ww) d", wt=wt, wh=wh, ww=ww
    )


def window_reverse(windows: torch.Tensor, window: tuple[int, int, int], grid: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nW, N, D) -> (B, T, H, W, D) for a (T, H, W) grid."""
    wt, wh, ww = window
    t, h, w = grid
    return rearrange(
        windows,
        "(b nt nh nw) (wt wh ww) d -> b (nt wt) (nh wh) (nw ww) d",
        nt=t // wt, nh=h // wh, nw=w // ww, wt=wt, wh=wh, ww=ww,
    )


def make_qk_norm(kind: str, head_dim: int) -> nn.Module:
    """Query-key normalisation over each head's features (paper §3.2; ViT-22B)."""
    if kind == "layernorm":
        return nn.LayerNorm(head_dim, eps=1e-6)
    if kind == "rmsnorm":
        return nn.RMSNorm(head_dim, eps=1e-6)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown qk_norm {kind!r}; use 'layernorm', 'rmsnorm' or 'none'")


def _beside_each_window(window: torch.Tensor, text: torch.Tensor, n_win: int) -> torch.Tensor:
    """(B*nW, heads, N, hd) window keys + (B, heads, L, hd) text keys -> (B*nW, heads, N + L, hd).

    The text enters the concatenation as a broadcast over the windows, so it is copied once, into
    the result, never repeated first.
    """
    window = window.unflatten(0, (text.shape[0], n_win))  # (B, nW, heads, N, hd)
    both = torch.cat([window, text[:, None].expand(-1, n_win, -1, -1, -1)], dim=3)
    return both.flatten(0, 1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping 3D windows, with q/k norm and relative bias.

    forward: x (B, T, H, W, D) -> (B, T, H, W, D). `window` is the configured (wt, wh, ww); the
    relative-bias table is sized for it, and a clamped window reuses a subset of its entries.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: tuple[int, int, int],
        qk_norm: str = "layernorm",
        rel_pos_bias: bool = True,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.window = tuple(window)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = make_qk_norm(qk_norm, dim // num_heads)
        self.k_norm = make_qk_norm(qk_norm, dim // num_heads)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos = RelativePositionBias(self.window, num_heads) if rel_pos_bias else None

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """`extra` (B, K, D): tokens every window also attends to (keys/values only), e.g. class tokens."""
        grid = tuple(x.shape[1:4])
        window = resolve_window(self.window, grid)
        tokens = window_partition(x, window)  # (B*nW, N, D)
        q, k, v = rearrange(self.qkv(tokens), "n l (three h d) -> three n h l d", three=3, h=self.num_heads)
        q, k = self.q_norm(q), self.k_norm(k)
        bias = None
        if self.rel_pos is not None:
            # Broadcast to (B*nW, heads, N, N) as a stride-0 view: CPU SDPA takes a slow path for a
            # (heads, N, N) mask it must broadcast itself (measured 3-4x slower forward on 2 cores).
            bias = self.rel_pos(window).to(q.dtype).expand(q.shape[0], -1, -1, -1)
        if extra is not None:
            n_win = tokens.shape[0] // extra.shape[0]
            _, ke, ve = rearrange(self.qkv(extra), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
            k, v = _beside_each_window(k, self.k_norm(ke), n_win), _beside_each_window(v, ve, n_win)
            if bias is not None:  # no relative position to the extra tokens: bias 0
                bias = F.pad(bias, (0, extra.shape[1]))  # (B*nW, heads, N, N + K)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B*nW, heads, N, hd)
        out = self.proj(rearrange(out, "n h l d -> n l (h d)"))
        return window_reverse(out, window, grid)  # (B, T, H, W, D)


class WindowCrossAttention(nn.Module):
    """Text conditioning: queries from a window, keys/values = concat(window tokens, text tokens).

    W.A.L.T §3.3 / SPEC §2: the same K/V projection is applied to the query-window tokens and to
    the (already projected) text tokens, so each window attends jointly to itself and the prompt.
    `text=None` (unconditional) attends to the window tokens only, which is the same function as
    an all-False `text_mask`.

    forward: x (B, T, H, W, D), text (B, L, D) or None, text_mask (B, L) bool (True = keep)
             -> (B, T, H, W, D)
    """

    def __init__(self, dim: int, num_heads: int, window: tuple[int, int, int], qk_norm: str = "layernorm"):
        super().__init__()
        self.num_heads = num_heads
        self.window = tuple(window)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = make_qk_norm(qk_norm, dim // num_heads)
        self.k_norm = make_qk_norm(qk_norm, dim // num_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        b = x.shape[0]
        grid = tuple(x.shape[1:4])
        window = resolve_window(self.window, grid)
        tokens = window_partition(x, window)  # (B*nW, N, D)
        n_win = tokens.shape[0] // b
        q = self.q_norm(rearrange(self.q(tokens), "n l (h d) -> n h l d", h=self.num_heads))
        k, v = rearrange(self.kv(tokens), "n l (two h d) -> two n h l d", two=2, h=self.num_heads)
        k = self.k_norm(k)
        mask = None
        if text is not None:
            # Project and normalise the text once per sample, then share it across that sample's windows.
            kt, vt = rearrange(self.kv(text), "b l (two h d) -> two b h l d", two=2, h=self.num_heads)
            k, v = _beside_each_window(k, self.k_norm(kt), n_win), _beside_each_window(v, vt, n_win)
            if text_mask is not None:
                keep_window = text_mask.new_ones(b, tokens.shape[1])
                mask = torch.cat([keep_window, text_mask], dim=1)  # (B, N + L); window keys always kept
                mask = repeat(mask, "b l -> (b n) 1 1 l", n=n_win)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B*nW, heads, N, hd)
        out = self.proj(rearrange(out, "n h l d -> n l (h d)"))
        return window_reverse(out, window, grid)  # (B, T, H, W, D)
