"""Pictures of a demo run: labelled frame grids (Pillow) and training curves (matplotlib).

Frames of a 32x32 demo are tiny, so grids are upscaled with nearest-neighbour (pixels stay
honest: no smoothing hides what the model produced) and every row carries its label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from walt.io import atomic_write
from walt.io import frame_grid


def labelled_grid(videos: torch.Tensor, labels: Sequence[str], scale: int = 3, pad: int = 2,
                  max_frames: int | None = None, label_width: int = 110) -> Image.Image:
    """Tile videos (N, 3, T, H, W) in [-1, 1] into rows (samples) x columns (frames), label each row.

    Returns a Pillow RGB image: a white label column on the left, then the frame grid upscaled
    `scale` times (nearest), rows in the order given.
    """
    if len(labels) != videos.shape[0]:
        raise ValueError(f"got {len(labels)} labels for {videos.shape[0]} videos")
    grid = frame_grid(videos.float().cpu(), max_frames=max_frames, pad=pad)  # (rows, cols, 3) uint8
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    h = videos.shape[3]
    canvas = Image.new("RGB", (label_width + grid.shape[1], grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r, text in enumerate(labels):
        y = (pad + r * (h + pad)) * scale + (h * scale) // 2 - 6
        draw.text((4, y), str(text), fill=(0, 0, 0), font=font)
    return canvas


def save_labelled_grid(path: str | Path, videos: torch.Tensor, labels: Sequence[str], **kwargs) -> Path:
    """`labelled_grid(...)` written as a PNG (atomic)."""
    img = labelled_grid(videos, labels, **kwargs)
    path = Path(path)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
    return path


def side_by_side(a: torch.Tensor, b: torch.Tensor, gap: int = 2) -> torch.Tensor:
    """Two videos (3, T, H, W) next to each other with a white gap -> (3, T, H, W_a + gap + W_b)."""
    white = torch.ones(a.shape[0], a.shape[1], a.shape[2], gap, dtype=a.dtype)
    return torch.cat([a, white, b.to(a.dtype)], dim=-1)


def save_training_curves(path: str | Path, vae_rows: list[dict], walt_rows: list[dict], recon: str = "L1",
                         recon_weight: float = 5.0) -> Path:
    """One PNG with three panels: autoencoder losses, autoencoder PSNR, denoiser loss (log scales).

    `recon` names the reconstruction term in the legend ("L1", "L2", "L1+L2"), `recon_weight`
    its weight in the total (the run's `VAELossConfig.recon_weight`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    ax = axes[0]
    if vae_rows:
        steps = [r["step"] for r in vae_rows]
        ax.plot(steps, [r["g_total"] for r in vae_rows], label=f"total ({recon_weight:g} {recon}" + (" + KL)" if any(r.get("kl") for r in vae_rows) else ")"))
        ax.plot(steps, [r["recon"] for r in vae_rows], label=f"{recon} reconstruction")
        if any(r.get("kl") for r in vae_rows):
            ax.plot(steps, [r.get("kl", float("nan")) * 1e-3 for r in vae_rows], label="KL / 1000", alpha=0.6)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set(title="autoencoder loss", xlabel="step")
    ax.grid(alpha=0.3, which="both")

    ax = axes[1]
    if vae_rows:
        ax.plot([r["step"] for r in vae_rows], [r["psnr"] for r in vae_rows], color="tab:green")
    ax.set(title="autoencoder training PSNR (dB)", xlabel="step")
    ax.grid(alpha=0.3)

    ax = axes[2]
    if walt_rows:
        steps = [r["step"] for r in walt_rows]
        ax.plot(steps, [r["loss"] for r in walt_rows], label="v-prediction MSE", alpha=0.5)
        k = max(1, len(walt_rows) // 20)  # running mean: the per-batch loss is noisy (random t)
        smooth = np.convolve([r["loss"] for r in walt_rows], np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, label=f"running mean ({k} logs)", color="tab:red")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        lr_ax = ax.twinx()
        lr_ax.plot(steps, [r["lr"] for r in walt_rows], color="grey", lw=0.8, ls="--")
        lr_ax.set_ylabel("learning rate (dashed)", fontsize=8)
        lr_ax.tick_params(labelsize=7)
    ax.set(title="W.A.L.T denoiser loss", xlabel="step")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path


def save_fvd_curve(path: str | Path, fvd: dict) -> Path:
    """FVD against denoiser step (`walt.demo.fvd_curve.DemoFVD.summary()`), with the real-vs-real floor
    and the autoencoder's reconstruction FVD as horizontal lines (log y: FVD spans decades)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = fvd["points"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot([p["step"] for p in pts], [p["fvd"] for p in pts], "o-", color="tab:blue",
            label=f"denoiser samples ({fvd['clips']['generated']} clips)")
    for p in pts:
        ax.annotate(f"{p['fvd']:.0f}", (p["step"], p["fvd"]), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.axhline(fvd["reconstruction_fvd"], color="tab:green", ls="--", label="autoencoder reconstructions (rFVD)")
    ax.axhline(fvd["real_vs_real"], color="grey", ls=":", label="real vs real (floor)")
    ax.set_yscale("log")
    proto = fvd["protocol"]
    ax.set(xlabel="denoiser training step", ylabel="FVD (lower is better)",
           title=f"FVD during training: protocol {proto['name']}{'*' if proto.get('overrides') else ''} "
                 f"[{proto['hash']}], I3D {proto['i3d_weights_sha256'][:12]}")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path


def save_minutes_curve(path: str | Path, runs: Sequence[dict]) -> Path:
    """Class accuracy (left) and final FVD (right) against the demo's --minutes: what more time buys.

    `runs`: the `metrics.json` of demo runs of one machine and preset at different budgets.
    Accuracy is drawn with its ceiling (held-out reconstructions) and chance; FVD with its floor.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(runs, key=lambda r: r["minutes_budget"])
    minutes = [r["minutes_budget"] for r in runs]
    acc = [r["class_accuracy"]["generated"] for r in runs]
    ceiling = [r["class_accuracy"]["reconstructed"] for r in runs]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    a.plot(minutes, acc, "o-", color="tab:blue", label="class-conditional samples")
    a.plot(minutes, ceiling, "s--", color="tab:green", label="held-out reconstructions (ceiling)")
    a.axhline(runs[0]["class_accuracy"]["chance"], color="grey", ls=":", label="chance")
    for m, v in zip(minutes, acc):
        a.annotate(f"{v:.2f}", (m, v), textcoords="offset points", xytext=(4, -12), fontsize=8)
    a.set(xlabel="--minutes", ylabel="motion-class accuracy", ylim=(0, 1), title="class score")
    fvd = [(r["minutes_budget"], r.get("fvd") or {}) for r in runs]
    fvd = [(m, f) for m, f in fvd if f.get("points")]
    if fvd:
        b.plot([m for m, _ in fvd], [f["points"][-1]["fvd"] for _, f in fvd], "o-", color="tab:blue",
               label="samples, end of training")
        b.plot([m for m, _ in fvd], [f["real_vs_real"] for _, f in fvd], ":", color="grey", label="real vs real (floor)")
        b.set_yscale("log")
    b.set(xlabel="--minutes", ylabel="FVD (smoke protocol)", title="FVD")
    for ax in (a, b):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"walt demo on {(runs[0].get('machine') or {}).get('cpu') or 'this machine'}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path
