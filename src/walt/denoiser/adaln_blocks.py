"""Transformer blocks of W.A.L.T: DiT-style AdaLN blocks with window attention (SPEC §2).

Each block is pre-norm and residual, modulated by six vectors (shift/scale/gate for the attention
and the MLP sublayers) computed from the conditioning vector c = t_emb + y_emb (+ ...):

    x = x + gate_msa * Attn(modulate(LN(x), shift_msa, scale_msa))
    x = x + CrossAttn(LN'(x), text)                             (text layers only)
    x = x + gate_mlp * MLP(modulate(LN(x), shift_mlp, scale_mlp))

AdaLN-LoRA (paper §3.2, eq. for A^i): the six vectors of layer 1 come from an MLP of c shared by
the whole network, A^1 = Linear(SiLU(c)) (computed once in `WALT`), and every other layer i adds
a rank-r correction A^i = A^1 + W_b^i W_a^i c with W_a: r x D, W_b: 6D x r. With r = 0 every
layer owns a full SiLU + Linear(D, 6D) instead (DiT), ~6D^2 parameters per layer.
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange
from torch import nn

from walt.denoiser.attention import WindowAttention, WindowCrossAttention

BlockKind = Literal["spatial", "spatiotemporal"]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """DiT's adaptive LayerNorm modulation x * (1 + scale) + shift; shift / scale broadcast over the
    token axes. One fused pass over x (addcmul) instead of a multiply and an add."""
    return torch.addcmul(shift, x, 1 + scale)


class Mlp(nn.Module):
    """Linear(D, ratio*D), GELU, Linear(ratio*D, D). `gelu`: "tanh" (DiT's approximation) or "erf"
    (the exact GELU; on CPUs its kernel runs ~2.5x faster forward + backward)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, gelu: str = "tanh"):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh" if gelu == "tanh" else "none")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WALTBlock(nn.Module):
    """One spatial- or spatiotemporal-window transformer block.

    forward(x, c, base_mod=None, text=None, text_mask=None, class_tokens=None)
        x         (B, T, H, W, D) tokens
        c         (B, D) conditioning vector
        base_mod  (B, 6D) shared AdaLN output A^1 (required when the block uses AdaLN-LoRA)
        text      (B, L, D) projected text tokens or None; text_mask (B, L) bool or None
        class_tokens (B, K, D) label tokens the self-attention also reads (keys/values), or None
        -> (B, T, H, W, D)

    A spatiotemporal block returns an image (T == 1) unchanged (paper §3.2: images pass through
    the spatiotemporal layers as identity), so image and video batches share every weight.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kind: BlockKind,
        window: tuple[int, int, int],
        mlp_ratio: float = 4.0,
        qk_norm: str = "layernorm",
        rel_pos_bias: bool = True,
        adaln_lora_rank: int = 0,
        use_lora: bool = False,
        cross_attention: bool = False,
        mlp_gelu: str = "tanh",
    ):
        super().__init__()
        if kind not in ("spatial", "spatiotemporal"):
            raise ValueError(f"unknown block kind {kind!r}; use 'spatial' or 'spatiotemporal'")
        self.kind = kind
        self.adaln_lora_rank = adaln_lora_rank
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = WindowAttention(dim, num_heads, window, qk_norm=qk_norm, rel_pos_bias=rel_pos_bias)
        if cross_attention:
            self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
            self.cross_attn = WindowCrossAttention(dim, num_heads, window, qk_norm=qk_norm)
        else:
            self.norm_cross = self.cross_attn = None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio, mlp_gelu)
        # Exactly one of the two modulation paths exists (or neither, for AdaLN-LoRA's layer 1).
        self.adaLN_modulation = None
        self.adaLN_lora = None
        if adaln_lora_rank == 0:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        elif use_lora:
            self.adaLN_lora = nn.Sequential(
                nn.Linear(dim, adaln_lora_rank, bias=False),  # W_a: r x D
                nn.Linear(adaln_lora_rank, 6 * dim, bias=False),  # W_b: 6D x r
            )

    def modulation(self, c: torch.Tensor, base_mod: torch.Tensor | None) -> torch.Tensor:
        """(B, D) -> (B, 6D): this layer's shift/scale/gate vectors."""
        if self.adaLN_modulation is not None:
            return self.adaLN_modulation(c)
        if base_mod is None:
            raise ValueError("an AdaLN-LoRA block needs base_mod, the shared layer-1 modulation (B, 6D)")
        return base_mod if self.adaLN_lora is None else base_mod + self.adaLN_lora(c)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        base_mod: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        class_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.kind == "spatiotemporal" and x.shape[1] == 1:
            return x  # image: identity in spatiotemporal layers
        mod = rearrange(self.modulation(c, base_mod), "b d -> b 1 1 1 d")
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        extra = None
        if class_tokens is not None:  # (B, K, D): normalised and modulated like the clip's tokens
            extra = modulate(self.norm1(class_tokens), shift_msa[:, 0, 0], scale_msa[:, 0, 0])
        # Gated residuals x + gate * f(x) as one addcmul each.
        x = torch.addcmul(x, gate_msa, self.attn(modulate(self.norm1(x), shift_msa, scale_msa), extra))  # (B, T, H, W, D)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm_cross(x), text, text_mask)
        x = torch.addcmul(x, gate_mlp, self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)))
        return x


class FinalLayer(nn.Module):
    """AdaLN-modulated LayerNorm + Linear: (B, T, H, W, D) -> (B, T, H, W, p*p*C_out) (DiT)."""

    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = rearrange(self.adaLN_modulation(c), "b d -> b 1 1 1 d").chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))
