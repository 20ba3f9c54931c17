"""Scoring one row: per-clip numbers kept on disk, so intervals and paired differences come later.

    recon   the autoencoder on held-out set B: per-clip PSNR / SSIM, the common classifier's
            predictions and features of the reconstructions, their I3D features (rFVD)
    sample  class-conditional samples of one set of denoiser weights (final = equal wall-clock,
            a snapshot = equal steps): `seed_sets` x `samples_per_seed` clips with fixed seeds and
            labels (class i % K for sample i), so every row draws the same noise for the same
            label; classifier predictions and features of all, I3D features of the first
            `fvd_clips_per_seed` of each set

Each writes eval/<name>.npz in the row's folder and returns a small record; `walt.study.analysis`
turns the arrays into intervals and paired differences. Sampling is DDIM with `sample_steps` and
classifier-free guidance `guidance_scale` (the demo's), in the denoiser's training precision
(`walt.study.stages.sampling_precision`), decoded in fp32 by the row's autoencoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from walt.study.study_config import StudyConfig

__all__ = ["sample_seed", "reconstruction_stage", "sample_stage", "load_arrays", "BATCH"]

BATCH = 32  # clips per generate / decode / classifier call


def _nothing() -> None:
    return None


def sample_seed(cfg: StudyConfig, seed_set: int, i: int) -> int:
    """The noise seed of sample `i` of seed set `seed_set` (the same for every row and weights)."""
    return (cfg.seed * 16 + seed_set + 1) * 1_000_003 + i


def _save(folder: Path, name: str, **arrays: np.ndarray) -> str:
    from walt.io import atomic_write

    path = Path(folder) / "eval" / f"{name}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), **arrays))
    return str(path.relative_to(folder))


def load_arrays(folder: Path, record: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays a stage record points to (its "file" in the row's folder)."""
    with np.load(Path(folder) / record["file"]) as z:
        return {k: z[k] for k in z.files}


@torch.no_grad()
def reconstruction_stage(vae, real: torch.Tensor, labels: torch.Tensor, cfg: StudyConfig, clf, i3d, folder: Path,
                         device: torch.device, check: Callable[[], None] = _nothing) -> dict[str, Any]:
    """Reconstruct held-out clips `real` (N, 3, T, H, W) with `labels` (N,); per-clip scores -> eval/recon.npz."""
    from walt.eval.class_score import classify
    from walt.eval.metrics import psnr, ssim
    from walt.io import write_frame_grid_png
    from walt.study.fvd_features import features

    recon = []
    for i in range(0, len(real), BATCH):
        x = real[i:i + BATCH].to(device)
        recon.append(vae.decode(vae.encode(x)).float().clamp(-1, 1).cpu())
        check()
    recon = torch.cat(recon)  # (N, 3, T, H, W)
    clip_psnr = psnr(recon, real, per_frame=True)[1].mean(dim=1).numpy()  # (N,)
    clip_ssim = ssim(recon, real, per_frame=True)[1].mean(dim=1).numpy()
    pred, feats = classify(clf, recon)
    arrays = {"psnr": clip_psnr, "ssim": clip_ssim, "pred": pred.numpy(), "labels": labels.numpy(),
              "clf": feats.double().numpy()}
    if i3d is not None:
        arrays["i3d"] = features(i3d, recon[:cfg.fvd_clips], cfg)
    write_frame_grid_png(Path(folder) / "eval" / "reconstructions.png", torch.cat([real[:4], recon[:4]]))
    correct = arrays["pred"] == arrays["labels"]
    return {"file": _save(folder, "recon", **arrays), "clips": len(real), "psnr": float(np.mean(clip_psnr[np.isfinite(clip_psnr)])),
            "ssim": float(clip_ssim.mean()), "accuracy": float(correct.mean())}


@torch.no_grad()
def sample_stage(weights: Path, vae, cfg: StudyConfig, num_classes: int, clf, i3d, folder: Path, name: str,
                 device: torch.device, check: Callable[[], None] = _nothing) -> dict[str, Any]:
    """Sample, decode and score the denoiser `weights` (exported or a snapshot) -> eval/<name>.npz."""
    from walt.cascade.stage import Stage
    from walt.eval.class_score import classify
    from walt.io import write_frame_grid_png
    from walt.pipeline import generate
    from walt.study.fvd_features import features
    from walt.study.stages import sampling_precision

    stage = Stage.load(weights).to(device)
    net = stage.net
    shape = (net.config.in_channels, *net.config.input_size)
    autocast, precision = sampling_precision(cfg, device)
    asked, preds, feats, i3d_feats, shown = [], [], [], [], []
    for s in range(cfg.seed_sets):
        for lo in range(0, cfg.samples_per_seed, BATCH):
            ids = list(range(lo, min(cfg.samples_per_seed, lo + BATCH)))
            y = torch.tensor(ids) % num_classes
            with autocast:
                z = generate(net, stage.schedule, (len(ids), *shape), sampler="ddim", steps=cfg.sample_steps,
                             y=y.to(device), guidance_scale=cfg.guidance_scale,
                             seeds=[sample_seed(cfg, s, i) for i in ids], latent_stats=stage.latent_stats)
            x = vae.decode(z.float().to(device)).float().clamp(-1, 1).cpu()  # (b, 3, T, H, W)
            p, f = classify(clf, x)
            asked.append(y), preds.append(p), feats.append(f.double())
            n_fvd = max(0, min(len(ids), cfg.fvd_clips_per_seed - lo))
            if i3d is not None and n_fvd:
                i3d_feats.append(features(i3d, x[:n_fvd], cfg))
            if s == 0 and lo == 0:
                shown = x[:min(len(x), 2 * num_classes, 16)]
            check()
    arrays = {"asked": torch.cat(asked).numpy(), "pred": torch.cat(preds).numpy(), "clf": torch.cat(feats).numpy(),
              "seed_set": np.repeat(np.arange(cfg.seed_sets), cfg.samples_per_seed)}
    if i3d_feats:
        arrays["i3d"] = np.concatenate(i3d_feats)
        arrays["i3d_seed_set"] = np.repeat(np.arange(cfg.seed_sets), cfg.fvd_clips_per_seed)
    write_frame_grid_png(Path(folder) / "eval" / f"{name}.png", shown)
    step = int(stage.info.get("step", -1))
    return {"file": _save(folder, name, **arrays), "weights": str(weights), "step": step, "clips": len(arrays["pred"]),
            "accuracy": float((arrays["pred"] == arrays["asked"]).mean()), "precision": precision}
