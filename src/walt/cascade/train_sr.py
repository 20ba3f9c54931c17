"""Training a super-resolution stage of the cascade (W.A.L.T §4 / SPEC §4) on two latent caches.

    walt encode --data builtin --resolution 256x448 --out cache/hi --vae runs/vae [--text-encoder minilm]
    walt encode --data builtin --resolution 128x224 --downsample-from 256x448 --out cache/lo --vae runs/vae
    walt train --stage sr --preset sr1-tiny --cache cache/hi --lowres-cache cache/lo [--text] --out runs/sr1

Training pairs (the issue: "pairs made by downsampling the same videos"): the SAME clips encoded
at both resolutions by the SAME autoencoder, the low-res side made by downsampling the high-res
clip's pixels (box filter by default) before encoding: `walt encode --downsample-from HxW`
(`walt.cascade.pairs.Downsampled`), the documented recipe. The caches are checked item by item
(count, source indices, captions, VAE hash, latent sizes differing by the SR factor, and, when the
low-res cache records the size it was downsampled from, that it is the high-res cache's size).
A low-res cache encoded without `--downsample-from` still pairs up: for the built-in dataset its
clips are the same scenes re-rendered at the low resolution (geometry is resolution-independent,
with analytic anti-aliasing), for video folders the same files resized. Each cache's latents are
normalised with its own statistics, and both statistics are stored with the stage
(`lowres_latent_stats` is what `walt.cascade.sr.super_resolve` normalises the previous stage's
output with).

Windows: unless `--set` gives them, the preset's windows are fitted to the cache's token grid
(each side the largest divisor of the grid not above the preset's window, `fit_window`), so an
sr preset trains on a square or smaller cache too.

Loss: `walt.cascade.sr.sr_loss` = the denoiser loss (v-prediction, self-conditioning, frame
prediction, text dropout) with the noise-augmented, upsampled low-res latent as conditioning,
t_sr ~ U{0..t_max} per sample. The loop is deliberately small: one process, AdamW + warmup/cosine,
gradient clipping, EMA, a weights checkpoint every `ckpt_every` steps and at the end (no DDP and
no exact resume; the base-stage loop `walt.train.denoiser` has those).

Outputs in `out_dir`: log.csv, walt.safetensors (raw) and walt_ema.safetensors (EMA; use this) in
the `WALT.save` format plus {"sr_config", "latent_stats", "lowres_latent_stats", "diffusion_config",
"vae_sha256", "text_encoder", "fps", "stage": "sr"}: `walt.cascade.CascadeStage.load` reads them.
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from walt.cascade.sr import SRConfig, sr_loss
from walt.checkpoint import save_checkpoint
from walt.config import config_to_dict
from walt.diffusion.loss import DiffusionLossConfig
from walt.diffusion.schedule import DiffusionConfig, DiffusionSchedule

__all__ = ["SRTrainConfig", "SRTrainResult", "check_pair_caches", "fit_window", "train_sr_stage", "run_cli"]


@dataclass(frozen=True)
class SRTrainConfig:
    """Hyper-parameters of an SR-stage run (*choices*: the paper gives none for its SR stages)."""

    steps: int = 10_000
    batch_size: int = 8
    lr: float = 1e-4
    min_lr: float = 0.0
    warmup_steps: int = 500
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    log_every: int = 50
    ckpt_every: int = 0  # 0: weights written at the end only
    seed: int = 0
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    loss: DiffusionLossConfig = field(default_factory=DiffusionLossConfig)
    sr: SRConfig = field(default_factory=SRConfig)

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"SRTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.ckpt_every < 0:
            raise ValueError("SRTrainConfig: lr must be > 0, warmup_steps and ckpt_every >= 0")


@dataclass
class SRTrainResult:
    step: int
    losses: list[float]  # the loss of every step
    model_path: Path
    ema_path: Path


def check_pair_caches(hi, lo, scale: int = 2) -> None:
    """ValueError unless `lo` holds the same clips as `hi` at 1/scale the latent resolution (same VAE)."""
    if len(hi) != len(lo):
        raise ValueError(f"the caches hold {len(hi)} (high-res) and {len(lo)} (low-res) clips; encode the same dataset twice")
    if hi.vae_sha256 != lo.vae_sha256:
        raise ValueError("the two caches were made by different autoencoders; encode both with the same VAE")
    if not torch.equal(hi.indices, lo.indices) or list(hi.captions) != list(lo.captions):
        raise ValueError("the caches hold different clips (source indices or captions differ); "
                         "encode the same dataset, same order, at both resolutions")
    c, t, h, w = hi.latent_shape
    want = (c, t, h // scale, w // scale)
    if tuple(lo.latent_shape) != want or h % scale or w % scale:
        raise ValueError(f"low-res latents are {tuple(lo.latent_shape)} (c, t, h, w) but the high-res {tuple(hi.latent_shape)} "
                         f"need {want} for a {scale}x SR stage; encode the low-res cache at 1/{scale} the resolution")
    # A low-res cache made by downsampling must come from the high-res clips' pixels, or from the same
    # source as they do (box filters compose: 4x from 512 == 2x of the 2x-downsampled 256).
    src = (lo.index.get("dataset") or {}).get("downsampled_from")
    hi_ds = hi.index.get("dataset") or {}
    hi_res = [hi_ds.get("height"), hi_ds.get("width")]
    if src is not None and None not in hi_res and list(src) not in (hi_res, hi_ds.get("downsampled_from")):
        raise ValueError(f"the low-res cache was downsampled from {src[0]}x{src[1]} clips but the high-res cache holds "
                         f"{hi_res[0]}x{hi_res[1]} clips; encode it with --downsample-from {hi_res[0]}x{hi_res[1]}")


def fit_window(window: tuple[int, int, int], grid: tuple[int, int, int]) -> tuple[int, int, int]:
    """Each side: the largest divisor of the token grid's side that is <= the window's (5x8x7 on 5x8x8 -> 5x8x4)."""
    return tuple(max(d for d in range(1, min(wd, g) + 1) if g % d == 0) for wd, g in zip(window, grid))


def train_sr_stage(
    cfg: SRTrainConfig,
    net: nn.Module,
    hi,
    lo,
    out_dir: str | Path,
    text=None,
    extras: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> SRTrainResult:
    """Train the SR `net` (in place, on its device) on paired caches `hi` / `lo` (`LatentDataset`s).

    Args:
        text: optional `walt.text.TextEmbeddings` of `hi` (caption features by item).
        extras: more JSON entries for the exported checkpoints (e.g. fps, text_encoder).
    """
    from tqdm.auto import tqdm

    from walt.denoiser.model import CHECKPOINT_KIND
    from walt.train.common import EMA, check_finite, clip_gradients, warmup_cosine_scheduler

    check_pair_caches(hi, lo, cfg.sr.scale)
    ncfg = net.config
    if ncfg.lowres_channels != lo.latent_shape[0]:
        raise ValueError(f"the network takes {ncfg.lowres_channels} low-res channels, the cache has {lo.latent_shape[0]}")
    if (ncfg.text_dim > 0) != (text is not None):
        raise ValueError("text features must be given exactly when the network has text_dim > 0")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = next(net.parameters()).device
    ema = EMA(net, cfg.ema_decay)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    sched = warmup_cosine_scheduler(opt, cfg.warmup_steps, cfg.steps, cfg.min_lr / cfg.lr)
    schedule = DiffusionSchedule(cfg.diffusion)
    gen = torch.Generator().manual_seed(cfg.seed)
    meta = {"diffusion_config": config_to_dict(cfg.diffusion), "sr_config": config_to_dict(cfg.sr),
            "train_config": config_to_dict(cfg), "latent_stats": hi.stats.to_dict(),
            "lowres_latent_stats": lo.stats.to_dict(), "vae_sha256": hi.vae_sha256, "stage": "sr",
            **(extras or {})}
    if text is not None:
        meta["text_encoder"] = dict(text.encoder_info)

    def export(step: int) -> tuple[Path, Path]:
        paths = out_dir / "walt.safetensors", out_dir / "walt_ema.safetensors"
        for path, module, is_ema in ((paths[0], net, False), (paths[1], ema.module, True)):
            save_checkpoint(path, {"kind": CHECKPOINT_KIND, "config": config_to_dict(ncfg), "model": module.state_dict(),
                                   "ema": is_ema, "step": step, **meta})
        return paths

    losses: list[float] = []
    log_path = out_dir / "log.csv"
    t0 = time.perf_counter()
    with open(log_path, "w", newline="") as f_log:
        writer = csv.writer(f_log)
        writer.writerow(["step", "loss", "lr", "grad_norm", "noise_level", "sec_per_step"])
        bar = tqdm(range(cfg.steps), desc="train sr", disable=not progress, dynamic_ncols=True)
        for step in bar:
            ids = torch.randint(len(hi), (cfg.batch_size,), generator=gen)
            z_hi = hi.latents(ids).to(device)  # (B, c, t, H, W) normalised (hi stats)
            z_lo = lo.latents(ids).to(device)  # (B, c, t, H/2, W/2) normalised (lo stats)
            kw = {}
            if text is not None:
                tok, mask = text.batch(ids)
                kw = {"text": tok.to(device, torch.float32), "text_mask": mask.to(device)}
            net.train()
            loss, stats = sr_loss(net, z_hi, z_lo, schedule, cfg.loss, cfg.sr, generator=gen, **kw)
            check_finite(loss, step, "SR loss")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = clip_gradients(net.parameters(), cfg.grad_clip)
            check_finite(grad_norm, step, "gradient norm")
            lr_now = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            ema.update(net)
            losses.append(float(loss.detach()))
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                window = losses[-cfg.log_every:]
                sec = (time.perf_counter() - t0) / done
                writer.writerow([done, sum(window) / len(window), lr_now, grad_norm, float(stats["noise_level"]), sec])
                f_log.flush()
                bar.set_postfix(loss=f"{sum(window) / len(window):.4f}")
            if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < cfg.steps:
                export(done)
    model_path, ema_path = export(cfg.steps)
    return SRTrainResult(cfg.steps, losses, model_path, ema_path)


def run_cli(args: argparse.Namespace) -> int:
    """`walt train --stage sr ...` (the arguments of `walt.commands.train`)."""
    from walt.errors import UserError
    from walt.commands import args as A, files as F
    from walt.config import config_from_dict
    from walt.data.latent_dataset import LatentDataset
    from walt.denoiser import WALT, get_preset

    if args.lowres_cache is None:
        raise UserError("--stage sr needs --lowres-cache: the same clips encoded at half the resolution")
    unsupported = [flag for flag, on in (("--image-cache", args.image_cache is not None), ("--resume", args.resume),
                                         ("--parallel", args.parallel != "none"), ("--compile", args.compile),
                                         ("--grad-accum", args.grad_accum != 1), ("--bf16", args.bf16),
                                         ("--sample-every", args.sample_every > 0)) if on]
    if unsupported:
        raise UserError(f"{', '.join(unsupported)} is not supported with --stage sr (a single-process loop); drop it")
    steps = A.positive_int(args.steps, "--steps")
    batch = A.positive_int(args.batch_size, "--batch-size")
    A.finite_float(args.lr, "--lr", 0.0, strict=True)
    warmup = args.warmup_steps if args.warmup_steps is not None else min(500, steps // 10)
    sets = A.parse_sets(args.set)
    train_sets, model_sets = A.split_sets(sets, "train")

    with A.user_errors("--cache: "):
        hi = LatentDataset(args.cache)
    with A.user_errors("--lowres-cache: "):
        lo = LatentDataset(args.lowres_cache)
    text = None
    if args.text:
        from walt.text import TextEmbeddings

        with A.user_errors("--text: "):
            text = TextEmbeddings(args.cache)
        if len(text) != len(hi) or text.vae_sha256 != hi.vae_sha256:
            raise UserError(f"--text: the caption features in {args.cache} belong to another latent cache; re-encode it")
    with A.user_errors("--preset: "):
        net_cfg = get_preset(args.preset)
    if net_cfg.lowres_channels <= 0:
        raise UserError(f"--preset {args.preset} is not a super-resolution network; use sr1, sr2, sr1-tiny or sr2-tiny")
    c, t, h, w = hi.latent_shape
    fit = {"in_channels": c, "lowres_channels": lo.latent_shape[0], "input_size": (t, h, w),
           "text_dim": text.dim if text is not None else 0}
    # The cache sizes and the --set values are applied together (a window may only fit the new size).
    merged = {**config_to_dict(net_cfg), **{k: v for k, v in fit.items() if k not in model_sets}, **model_sets}
    p = int(merged.get("patch_size", 1))
    if merged["input_size"][1] % p == 0 and merged["input_size"][2] % p == 0:
        grid = (int(merged["input_size"][0]), int(merged["input_size"][1]) // p, int(merged["input_size"][2]) // p)
        for key in ("spatial_window", "spatiotemporal_window"):
            if key not in model_sets:
                merged[key] = fit_window(tuple(merged[key]), grid)
    with A.user_errors("the caches / --set values do not fit the preset: "):
        net_cfg = config_from_dict(type(net_cfg), {k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()})
    with A.user_errors():
        cfg = SRTrainConfig(steps=steps, batch_size=batch, lr=args.lr, warmup_steps=warmup, seed=args.seed,
                            log_every=args.log_every, ckpt_every=args.ckpt_every)
    cfg = A.apply_sets(cfg, train_sets)
    with A.user_errors("the caches do not pair up: "):
        check_pair_caches(hi, lo, cfg.sr.scale)
    out = F.check_out_not_file(args.out)
    if (out / "walt_ema.safetensors").exists():
        raise UserError(f"--out {out} already holds a trained stage; choose an empty folder")
    device = F.pick_device(args.device)
    existed = out.is_dir()
    F.writable_dir(out)
    torch.manual_seed(args.seed)
    with F.cleanup_if_empty(out, existed):
        with A.user_errors("the network does not fit the caches: "):
            net = WALT(net_cfg).to(device)
        n = sum(p.numel() for p in net.parameters())
        print(f"walt train --stage sr: WALT-{args.preset} ({n / 1e6:.2f}M params) on {len(hi)} clip pairs, latents "
              f"{tuple(lo.latent_shape)} -> {tuple(hi.latent_shape)}, text {'on' if text is not None else 'off'}, "
              f"{steps} steps x {batch}, device {device}, out {out}")
        res = train_sr_stage(cfg, net, hi, lo, out, text=text, extras={"fps": float(args.fps)},
                             progress=not args.no_progress)
    tail = res.losses[-min(50, len(res.losses)):]
    print(f"walt train --stage sr: done at step {res.step}, loss {sum(tail) / len(tail):.4f} (mean of the last "
          f"{len(tail)}); wrote {res.ema_path} (EMA, use this one) and {res.model_path}")
    return 0
