"""What the transformer training loop writes besides checkpoints: the metrics log and periodic samples.

`TrainLog` (rank 0): `walt.train.metrics_log.MetricsLog` (the autoencoder loop's log too) with the
columns `LOG_COLUMNS`: an append-only `log.csv` (on resume, the rows after the resumed step are
dropped, so every step appears once) plus TensorBoard scalars when `tensorboard` is installed.
`write_samples`: DDIM samples of the EMA model with fixed seeds and labels (SPEC §3: 50 DDIM
steps by default) so a run can be watched over time.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from walt.autoencoder.latent_stats import LatentStats
from walt.diffusion.schedule import DiffusionSchedule
from walt.io import atomic_write
from walt.train.denoiser_config import DenoiserTrainConfig
from walt.train.distributed import barrier, is_main
from walt.train.metrics_log import MetricsLog

__all__ = ["LOG_COLUMNS", "TrainLog", "write_samples"]

LOG_COLUMNS = (
    "step", "epoch", "lr", "loss", "loss_video", "loss_image", "grad_norm", "frac_self_cond", "frac_uncond",
    "frac_frame_pred", "tokens_per_s", "clips_per_s", "sec_per_step", "frac_uncond_text", "noise_level",
)


class TrainLog(MetricsLog):
    """Rank-0 metrics of the transformer loop: `MetricsLog` with the columns `LOG_COLUMNS`."""

    def __init__(self, out_dir: Path, resume_step: int | None, tensorboard: bool):
        super().__init__(out_dir, LOG_COLUMNS, resume_step, tensorboard)


@torch.no_grad()
def write_samples(ema_net: nn.Module, schedule: DiffusionSchedule, stats: LatentStats, folder: Path, step: int,
                   cfg: DenoiserTrainConfig, vae: nn.Module | None, sample_on_all_ranks: bool,
                   text_embeddings=None) -> None:
    """DDIM samples of the EMA model (fixed seeds and labels, so runs are comparable over time).

    Writes samples/step_XXXXXXXX.safetensors (raw-space latents) and, with a VAE, a frame-grid
    PNG and a GIF per clip. Under FSDP every rank runs the (collective) sampling; rank 0 writes.
    """
    from safetensors.torch import save_file

    from walt.io import write_frame_grid_png, write_gif
    from walt.pipeline import generate

    if not (is_main() or sample_on_all_ranks):
        barrier()
        return
    c = ema_net.config
    n = cfg.sample_clips
    device = next(ema_net.parameters()).device
    y = torch.arange(n, device=device) % c.num_classes if c.num_classes > 0 else None
    text = {}
    if text_embeddings is not None:  # the captions of the first n cache items
        tok, msk = text_embeddings.batch(torch.arange(n) % len(text_embeddings))
        text = {"text": tok.to(device), "text_mask": msk.to(device)}
    z = generate(ema_net, schedule, (n, c.in_channels, *c.input_size), sampler="ddim", steps=cfg.sample_steps,
                 y=y, seeds=list(range(n)), latent_stats=stats, **text)  # (n, c, T, h, w) raw VAE space
    if is_main():
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"step_{step:08d}"
        latents = z.detach().float().cpu().contiguous()
        atomic_write(stem.with_suffix(".safetensors"), lambda tmp: save_file({"latents": latents}, tmp))
        if vae is not None:
            vae_p = next(vae.parameters())
            video = vae.decode(z.to(vae_p.device, vae_p.dtype)).float().clamp(-1, 1).cpu()  # (n, 3, T, H, W)
            write_frame_grid_png(stem.with_suffix(".png"), video)
            for i in range(n):
                write_gif(folder / f"step_{step:08d}_{i}.gif", video[i])
    barrier()
