"""Memory-bounded decoding of large latents: causal streaming in time, overlapping tiles in space.

A 512x896x17 video (the cascade's output, SPEC §4) decodes from a (8, 5, 64, 112) latent. The
autoencoder already streams in time (`CausalVAE.decode(z, chunk_frames=k)`: chunks of k latent
frames through the causal cache, equal to the whole-clip decode), which bounds activations by one
chunk. Where even one chunk of full frames does not fit, `tiled_decode` also cuts the latent into
overlapping spatial tiles, decodes each (streamed) on its own and blends the pixel tiles:

    weight of a tile along one axis (interior edges only; frame borders keep weight 1):

        0 ... 0   ramp up   1 1 1 ... 1   ramp down   0 ... 0
        <- pad ->  <ramp>                  <ramp>     <- pad ->

    out = sum_tiles w * decode(tile) / sum_tiles w      (pixel units: pad, ramp x f_s)

The `pad` margin is decoded but never used: a tile's pixels next to its own cut edge see zero
padding instead of the neighbouring latents, so they are the least accurate. Linear ramps over the
rest of the overlap hide the remaining seam (diffusers' tiled VAE decode uses ramps alone, pad=0).

Exactness: for a decoder whose receptive field is at most `pad` latent pixels, tiled == untiled
(up to float rounding; tested). The W.A.L.T decoder (SPEC §1) has a larger receptive field AND
per-frame GroupNorm, whose statistics are taken over the whole frame, so a tile sees slightly
different normalisation statistics than the full frame: tiling is then an approximation
(measured in tests/test_cascade.py; prefer the largest tile that fits).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["tile_spans", "blend_ramp", "tiled_decode", "decode_video", "AUTO_TILE", "AUTO_TILE_AREA"]

# Measured (`walt.bench.cascade_speed`, ucf101-size autoencoder, fp32, 1 latent frame per chunk): decoding
# whole 512x896 frames peaks at ~18 GB RSS, tiles bound it by one tile's activations. So frames
# whose latent is larger than AUTO_TILE_AREA pixels (32x56 = 256x448 pixels) are decoded streamed
# AND tiled by default, in AUTO_TILE x AUTO_TILE latent tiles (a 64x112 latent -> 2 blended tiles).
AUTO_TILE_AREA = 32 * 56
AUTO_TILE = 64


def tile_spans(size: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Cover [0, size) with tiles of length `tile` overlapping by at least `overlap`.

    The starts are spread evenly, so the last tile ends exactly at `size` and every overlap is
    >= `overlap`. One tile [(0, size)] when size <= tile.
    """
    if tile < 1 or overlap < 0:
        raise ValueError(f"tile must be >= 1 and overlap >= 0, got tile={tile}, overlap={overlap}")
    if size <= tile:
        return [(0, size)]
    if overlap >= tile:
        raise ValueError(f"overlap={overlap} must be smaller than the tile size {tile}")
    n = math.ceil((size - overlap) / (tile - overlap))
    starts = [round(i * (size - tile) / (n - 1)) for i in range(n)]
    return [(s, s + tile) for s in starts]


def blend_ramp(length: int, lead: bool, trail: bool, pad: int, ramp: int) -> Tensor:
    """(length,) float32 weights of one tile along one axis (see the module docstring).

    lead / trail: whether the tile's start / end is an interior cut (a frame border keeps 1).
    The ramp takes the values (i + 0.5) / ramp, so every weight inside it is > 0.
    """
    up = (torch.arange(ramp, dtype=torch.float32) + 0.5) / ramp
    edge = torch.ones(length)  # profile of a cut at index 0
    edge[:pad] = 0.0
    n = max(0, min(ramp, length - pad))
    edge[pad:pad + n] = up[:n]
    w = torch.ones(length)
    if lead:
        w = torch.minimum(w, edge)
    if trail:
        w = torch.minimum(w, edge.flip(0))
    return w


def _check_tiling(tile: int, overlap: int, pad: int) -> int:
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    ramp = overlap - 2 * pad
    if ramp < 1:
        raise ValueError(
            f"overlap={overlap} must exceed 2 * pad = {2 * pad} (the unused margins of both tiles) so that "
            "every pixel keeps a positive blending weight; raise overlap or lower pad"
        )
    if tile <= overlap:
        raise ValueError(f"tile={tile} must be larger than overlap={overlap}")
    return ramp


@torch.no_grad()
def tiled_decode(
    vae: nn.Module,
    z: Tensor,
    tile: int | tuple[int, int] = 32,
    overlap: int = 8,
    pad: int = 2,
    chunk_frames: int | None = 1,
    out_dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Decode (B, c, t, h, w) latents tile by tile -> (B, 3, 1 + f_t (t-1), f_s h, f_s w).

    Args:
        vae: anything with `decode(z, chunk_frames=...)` and `config.spatial_factor`
            (`walt.autoencoder.CausalVAE`).
        tile: tile size in LATENT pixels, an int or (tile_h, tile_w); an axis no longer than its
            tile is not cut.
        overlap: latent pixels shared by neighbouring tiles (>= 2 pad + 1).
        pad: latent pixels at each interior cut that are decoded but get weight 0.
        chunk_frames: temporal streaming of each tile's decode (latent frames per chunk; None =
            the whole clip at once).
        out_dtype: dtype of the assembled video (the blending accumulates in it).
    Returns: the blended video; pixels are NOT clamped.
    """
    if z.ndim != 5:
        raise ValueError(f"expected latents (B, c, t, h, w), got shape {tuple(z.shape)}")
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    f = int(vae.config.spatial_factor)
    spans_h, spans_w = tile_spans(z.shape[3], th, overlap), tile_spans(z.shape[4], tw, overlap)
    ramp = _check_tiling(min(th, tw), overlap, pad) if len(spans_h) * len(spans_w) > 1 else 1
    out = wsum = None
    for i, (h0, h1) in enumerate(spans_h):
        wy = blend_ramp((h1 - h0) * f, i > 0, i < len(spans_h) - 1, pad * f, ramp * f)
        for j, (w0, w1) in enumerate(spans_w):
            wx = blend_ramp((w1 - w0) * f, j > 0, j < len(spans_w) - 1, pad * f, ramp * f)
            x = vae.decode(z[:, :, :, h0:h1, w0:w1], chunk_frames=chunk_frames)  # (B, 3, F, th*f, tw*f)
            if out is None:
                b, c, frames = x.shape[:3]
                out = torch.zeros(b, c, frames, z.shape[3] * f, z.shape[4] * f, dtype=out_dtype, device=x.device)
                wsum = torch.zeros(z.shape[3] * f, z.shape[4] * f, dtype=out_dtype, device=x.device)
            w = (wy[:, None] * wx[None, :]).to(out.device, out_dtype)  # (th*f, tw*f)
            out[:, :, :, h0 * f:h1 * f, w0 * f:w1 * f] += x.to(out_dtype) * w
            wsum[h0 * f:h1 * f, w0 * f:w1 * f] += w
            del x
    return out / wsum


@torch.no_grad()
def decode_video(
    vae: nn.Module,
    z: Tensor,
    chunk_frames: int | None = 1,
    tile: int | tuple[int, int] | None = None,
    overlap: int = 8,
    pad: int = 2,
) -> Tensor:
    """Decode latents with temporal streaming and, when `tile` is given and smaller than the latent,
    spatial tiling; returns (B, 3, F, H, W) float32 clamped to [-1, 1]."""
    th, tw = (tile, tile) if isinstance(tile, int) else (tile or (z.shape[3], z.shape[4]))
    if tile is None or (z.shape[3] <= th and z.shape[4] <= tw):
        x = vae.decode(z, chunk_frames=chunk_frames)
    else:
        x = tiled_decode(vae, z, (th, tw), overlap, pad, chunk_frames)
    return x.float().clamp_(-1, 1)
