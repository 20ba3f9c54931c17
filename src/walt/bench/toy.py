"""A latent-space motion toy: does the denoiser learn to move things the way its label says?

The demo scores the denoiser through an autoencoder and a classifier; this benchmark scores it
alone, in minutes. Each clip is one smooth Gaussian blob on an 8-channel 5 x 8 x 8 latent that
moves 0.5 cells per frame in the direction its class names (right, left, down, up: 4 classes,
chance 0.25). Two amplitude variants:

  * positive: per-channel amplitude |N(0, 1)| + 0.5 on a zero background, so the label changes
    the class-conditional mean (E[x0 | y] moves the way y says);
  * random_sign: amplitude N(0, 1) on a per-channel background 0.5 N(0, 1), so E[x0 | y] is nearly
    the same for every y and only the motion (a second-order statistic) carries the label.

Latents are normalised per channel over the training set, as the project normalises real latents.
The denoiser (the demo's: `walt.experiment.recipes.DEMO_DENOISER` and `DEMO_FAST`) is trained by the project's
one training loop, then scored on its EMA weights:

  * motion_accuracy: class-conditional samples (DDIM, the demo's guidance) whose motion direction
    is the asked one. The direction of a clip is the one of the four whose 0.5-cell shift of frame
    t best predicts frame t + 1 (bilinear, summed over frames); real clips score 1.0;
  * frame_prediction_motion_accuracy: continuations of held-out clips from 2 clean context frames;
  * label_influence: `walt.eval.label_influence` at mid noise levels (label swapped for another).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["ToySettings", "toy_latents", "motion_direction", "run_variant", "run_toy", "markdown", "VARIANTS"]

VARIANTS = ("positive", "random_sign")
DIRECTIONS = torch.tensor([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0]])  # (dy, dx): right, left, down, up


@dataclass(frozen=True)
class ToySettings:
    """What the toy trains and how it is scored (defaults: the demo's denoiser and sampling)."""

    steps: int = 2000  # fits the 5-minute target on 2 cores (docs/demo/NOTES.md)
    train_clips: int = 512
    eval_clips: int = 64
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 50
    ema_decay: float = 0.995
    guidance_scale: float = 3.0
    sample_steps: int = 50
    speed: float = 0.5  # cells per frame
    blob_sigma: float = 1.2  # cells
    seed: int = 0
    precision: str = "fast"  # walt.train.precision: bf16 where the CPU runs it natively, as the demo trains
    denoiser: tuple[tuple[str, object], ...] = ()  # WALT overrides on top of the demo's size

    def __post_init__(self):
        if min(self.steps, self.train_clips, self.eval_clips, self.batch_size, self.sample_steps) < 1:
            raise ValueError(f"ToySettings: steps, clip counts, batch_size and sample_steps must be >= 1, got {self}")


def toy_latents(n: int, variant: str, seed: int, speed: float = 0.5, sigma: float = 1.2,
                channels: int = 8, frames: int = 5, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` unnormalised toy clips (n, channels, frames, size, size) and their direction labels (n,)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown toy variant {variant!r}; choose one of {VARIANTS}")
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    mid = 1.5 + (size - 3) * torch.rand(n, 2, generator=g)  # the blob's centre at the middle frame
    t = torch.arange(frames, dtype=torch.float32) - (frames - 1) / 2
    pos = mid[:, None, :] + speed * t[None, :, None] * DIRECTIONS[y][:, None, :]  # (n, T, 2)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    d2 = (yy - pos[..., 0, None, None]) ** 2 + (xx - pos[..., 1, None, None]) ** 2  # (n, T, S, S)
    blob = torch.exp(-d2 / (2 * sigma**2))
    if variant == "positive":
        amp, bg = torch.randn(n, channels, generator=g).abs() + 0.5, torch.zeros(n, channels)
    else:
        amp, bg = torch.randn(n, channels, generator=g), 0.5 * torch.randn(n, channels, generator=g)
    return amp[:, :, None, None, None] * blob[:, None] + bg[:, :, None, None, None], y


def _shift(frames: torch.Tensor, d: torch.Tensor, amount: float) -> torch.Tensor:
    """frames (N, C, H, W) moved by `amount` cells along d = (dy, dx): bilinear, border padding."""
    n, _, h, w = frames.shape
    gy, gx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    grid = torch.stack([gx - amount * float(d[1]) * 2 / (w - 1), gy - amount * float(d[0]) * 2 / (h - 1)], dim=-1)
    return F.grid_sample(frames, grid[None].expand(n, -1, -1, -1), align_corners=True, padding_mode="border")


def motion_direction(x: torch.Tensor, start: int = 0, speed: float = 0.5) -> torch.Tensor:
    """x (N, C, T, H, W) -> (N,) the direction index whose shift best explains frames t >= start."""
    x = x.float().cpu()
    errs = []
    for d in DIRECTIONS:
        errs.append(sum((_shift(x[:, :, t], d, speed) - x[:, :, t + 1]).pow(2).mean(dim=(1, 2, 3))
                        for t in range(start, x.shape[2] - 1)))
    return torch.stack(errs, dim=1).argmin(dim=1)


def _toy_net(s: ToySettings):
    from walt.experiment.recipes import DEMO_DENOISER, DEMO_FAST, small_walt

    kw = {**DEMO_DENOISER, **DEMO_FAST, **dict(s.denoiser)}
    return small_walt((8, 5, 8, 8), 4, (1, 8, 8), (5, 8, 8), seed=s.seed, frame_conditioning=True, **kw)


def run_variant(variant: str, s: ToySettings, device: torch.device, log: Callable[[str], None] = print) -> dict:
    """Train and score one variant -> its metrics (see the module docstring) and `seconds`."""
    from walt.diffusion import DiffusionSchedule
    from walt.diffusion.loss import DiffusionLossConfig
    from walt.eval.label_influence import label_influence
    from walt.pipeline import generate
    from walt.train.batches import TensorBatches
    from walt.train.denoiser_loop import train_denoiser
    from walt.train.denoiser_config import DenoiserTrainConfig

    t0 = time.perf_counter()
    x, y = toy_latents(s.train_clips, variant, s.seed + 1, s.speed, s.blob_sigma)
    mean, std = x.mean(dim=(0, 2, 3, 4), keepdim=True), x.std(dim=(0, 2, 3, 4), keepdim=True)
    xh, yh = toy_latents(s.eval_clips, variant, s.seed + 2, s.speed, s.blob_sigma)
    x, xh = (x - mean) / std, (xh - mean) / std
    net = _toy_net(s).to(device)
    cfg = DenoiserTrainConfig(steps=s.steps, batch_size=s.batch_size, lr=s.lr, warmup_steps=s.warmup_steps,
                              ema_decay=s.ema_decay, log_every=max(1, s.steps // 10), ckpt_every=10**9,
                              keep_checkpoints=1, seed=s.seed, tensorboard=False, precision=s.precision,
                              loss=DiffusionLossConfig(p_frame_pred=0.5, context_frames=(1, 2)))
    with tempfile.TemporaryDirectory(prefix="walt-toy-") as tmp:
        result = train_denoiser(cfg, net, TensorBatches(x, cfg, labels=y, name=f"toy {variant}"), tmp, progress=False)
        from walt.checkpoint import load_checkpoint

        net.load_state_dict(load_checkpoint(result.ema_path)["model"])
    train_s = time.perf_counter() - t0
    net.eval()
    schedule, n = DiffusionSchedule(cfg.diffusion), s.eval_clips
    asked = torch.arange(n) % 4
    z = generate(net, schedule, (n, 8, 5, 8, 8), steps=s.sample_steps, y=asked.to(device),
                 guidance_scale=s.guidance_scale, seeds=list(range(n)))
    sample_acc = float((motion_direction(z) == asked).float().mean())
    z = generate(net, schedule, (n, 8, 5, 8, 8), steps=s.sample_steps, y=yh.to(device), seeds=list(range(n)),
                 context=xh[:, :, :2].to(device))
    fp_acc = float((motion_direction(z, start=1) == yh).float().mean())
    influence = label_influence(net, schedule, xh.to(device), yh.to(device))
    out = {"motion_accuracy": sample_acc, "frame_prediction_motion_accuracy": fp_acc,
           "label_influence": influence["swap"], "label_influence_detail": influence,
           "real_motion_accuracy": float((motion_direction(xh) == yh).float().mean()),
           "steps": s.steps, "train_seconds": train_s, "seconds": time.perf_counter() - t0}
    log(f"toy {variant}: samples {sample_acc:.2f}, frame prediction {fp_acc:.2f}, label influence "
        f"{influence['swap']:.3f} ({s.steps} steps, {out['seconds']:.0f} s)")
    return out


def run_toy(s: ToySettings | None = None, device: torch.device | str = "cpu", log: Callable[[str], None] = print) -> dict:
    """Both variants -> the `toy` entry of bench.json: the positive variant's keys, `random_sign` beside them."""
    s, device = s or ToySettings(), torch.device(device)
    positive = run_variant("positive", s, device, log)
    return {**positive, "random_sign": run_variant("random_sign", s, device, log), "settings": asdict(s)}


def markdown(r: dict) -> list[str]:
    rows = [("positive", r), ("random_sign", r["random_sign"])]
    lines = ["| variant | samples: motion accuracy | frame prediction: motion accuracy | label influence | steps | seconds |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {v['motion_accuracy']:.2f} | {v['frame_prediction_motion_accuracy']:.2f} | "
              f"{v['label_influence']:.3f} | {v['steps']} | {v['seconds']:.0f} |" for name, v in rows]
    n = r["settings"]["eval_clips"]
    return lines + ["", f"Chance is 0.25; real clips score {r['real_motion_accuracy']:.2f}. Each accuracy is over {n} "
                        f"clips (95% interval about ±{1.96 * (0.25 / n) ** 0.5:.2f} at 0.5)."]


def quick(s: ToySettings) -> ToySettings:
    """Tiny settings for tests: every code path in seconds (the numbers mean nothing)."""
    return replace(s, steps=4, train_clips=16, eval_clips=8, batch_size=4, sample_steps=2, warmup_steps=1,
                   denoiser=(("hidden_size", 32), ("depth", 2), ("num_heads", 2)))
