"""Periodic reconstruction samples of the autoencoder loop: fixed held-out clips vs their reconstructions.

Every `sample_every` steps rank 0 reconstructs the same held-out clips with the EMA autoencoder
(the model that is exported and used downstream), posterior mean, and writes
`samples/step_XXXXXXXX.png`: for each clip a row of its frames followed by a row of the
reconstruction's frames. The clips never change, so the PNGs of a run show its progress, and
their PSNR is logged as `val_psnr` (a held-out number next to the training-batch `psnr`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn as nn
from einops import rearrange
from torch import Tensor

from walt.eval.metrics import psnr

__all__ = ["write_reconstructions", "sample_path"]


def sample_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step_{step:08d}.png"


@torch.no_grad()
def write_reconstructions(model: nn.Module, clips: Tensor, path: Path, autocast=contextlib.nullcontext(),
                          max_frames: int = 9) -> float:
    """Reconstruct `clips` (N, 3, T, H, W) in [-1, 1] with `model`, write the PNG grid, return the PSNR (dB)."""
    from walt.io import write_frame_grid_png

    was_training = model.training
    model.eval()
    p = next(model.parameters())
    x = clips.to(p.device, torch.float32)
    with autocast:
        recon = model(x, sample_posterior=False)[0]
    recon = recon.float().clamp(-1, 1)  # (N, 3, T, H, W)
    model.train(was_training)
    rows = rearrange(torch.stack([x, recon]), "two n c t h w -> (n two) c t h w")  # original, reconstruction, ...
    write_frame_grid_png(path, rows.cpu(), max_frames=max_frames)
    return float(psnr(recon, x))
