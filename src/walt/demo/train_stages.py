"""The training stages of `walt demo` (stages 1-3; the last one is `walt.demo.results`).

    stage 1  train the causal 3D CNN autoencoder           (walt.train.train_vae,        SPEC §1)
    stage 2  encode the training clips into a latent cache  (walt.data.latent_cache,     SPEC §1-2)
    stage 3  train the W.A.L.T denoiser from the cache      (walt.train.denoiser_loop,        SPEC §2-3),
             with FVD measured at step 0, at fractions of the run and at the end (walt.demo.fvd_curve)

Each training stage runs to a wall-clock deadline (`walt.experiment.recipes`) and returns a
JSON-able record of what it did (seconds, steps, throughput), kept in out/stages.json.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from walt.config import config_to_dict
from walt.demo.demo_config import DemoConfig
from walt.experiment import recipes
from walt.experiment.budget import read_log
from walt.experiment.runner import reporter

say = reporter("walt demo")


def train_dataset(cfg: DemoConfig, seed: int, num_frames: int | None = None):
    from walt.demo.clips import demo_videos

    return demo_videos(cfg, cfg.train_clips, seed, num_frames)


def heldout_dataset(cfg: DemoConfig, seed: int):
    """Clips the autoencoder and the denoiser never see: same generator, another seed."""
    from walt.demo.clips import demo_videos

    return demo_videos(cfg, cfg.heldout_clips, seed + 10_007)


# ----------------------------------------------------------------------------- stage 1


def _nothing(step: int) -> None:
    return None


def autoencoder_stage(cfg: DemoConfig, out: Path, device: torch.device, seed: int, deadline: float,
                      progress: bool, resume: bool = False, check: Callable[[int], None] = _nothing) -> dict[str, Any]:
    """Train the autoencoder until `deadline` (>= vae_min_steps); returns the stage record.

    `resume`: continue the run out/vae holds from its last checkpoint; `check(step)` runs after every
    training segment (it raises to stop the demo)."""
    vae = recipes.small_vae(seed, **cfg.vae_kwargs()).to(device)
    data = train_dataset(cfg, seed, num_frames=cfg.vae_train_frames)

    def tcfg(steps: int, ckpt_every: int):
        # A 10x higher peak LR than MAGVIT-v2 (1e-4 for 100k+ steps): here there are ~100s.
        return recipes.small_vae_config(steps, cfg.vae_batch_size, cfg.vae_lr, cfg.vae_warmup_steps, seed, device,
                                        cfg.vae_loss_config(), log_every=1, ckpt_every=ckpt_every,
                                        decoder_noise=cfg.vae_decoder_noise)

    t0 = time.time()
    steps = recipes.train_vae_to_deadline(vae, recipes.clip_batches(data, cfg.vae_batch_size, seed), out / "vae", tcfg,
                                          deadline, cfg.vae_warmup_steps, cfg.calibration_steps, cfg.vae_min_steps,
                                          progress, say, resume=resume, check=check)
    rows = read_log(out / "vae" / "log.csv")
    return {"seconds": time.time() - t0, "steps": steps, "params": sum(p.numel() for p in vae.parameters()),
            "clips_per_s": statistics.median([r["clips_per_s"] for r in rows[1:] or rows]),
            "final_train_psnr": statistics.mean(r["psnr"] for r in rows[-5:]) if rows else None,
            "loss": config_to_dict(tcfg(steps, 1).loss)}  # what it trained with: the report reads it


def load_demo_vae(out: Path, device: torch.device):
    return recipes.load_small_vae(out / "vae", device)


# ----------------------------------------------------------------------------- stage 2


def cache_stage(cfg: DemoConfig, out: Path, vae, device: torch.device, seed: int, progress: bool) -> dict[str, Any]:
    return recipes.cache_stage(vae, train_dataset(cfg, seed), out / "cache", device, progress, shard_size=256,
                               batch_size=16)


# ----------------------------------------------------------------------------- stage 3


def build_walt(cfg: DemoConfig, latent_shape, **overrides: Any) -> torch.nn.Module:
    """The denoiser for latents (c, t, h, w): spatial windows = one latent frame, spatiotemporal
    windows = all frames x (h/2, w/2) latent cells. Windows count patches and are clamped to the
    token grid, so at patch 2 that is the whole grid (the CPU preset's 4x4 tokens): its
    spatiotemporal layers attend over the whole clip, unlike `walt.study.stages.build_walt`."""
    _, t, h, w = latent_shape
    num_classes = overrides.pop("num_classes", len(cfg.classes))
    return recipes.small_walt(latent_shape, num_classes, (1, h, w), (t, max(1, h // 2), max(1, w // 2)),
                              **{"frame_conditioning": True, **cfg.walt_kwargs(), **overrides})


def walt_train_config(cfg: DemoConfig, seed: int, batch: int, loss):
    """`tcfg(steps, log_every)` of the demo's denoisers (the class-conditional one and the text one)."""
    return lambda steps, log_every: recipes.walt_config(
        steps, batch, cfg.walt_lr, cfg.walt_warmup_steps, cfg.walt_ema_decay, seed, loss, cfg.diffusion_config(),
        log_every=log_every, ckpt_every=10**9, precision=cfg.walt_precision)


def denoiser_stage(cfg: DemoConfig, out: Path, device: torch.device, seed: int, deadline: float,
                   progress: bool, fvd=None, resume: bool = False, check: Callable[[int], None] = _nothing) -> dict[str, Any]:
    """Train the denoiser until `deadline`; with `fvd` (a `walt.demo.fvd_curve.DemoFVD`) also measure
    FVD at step 0 (`cfg.fvd_at_start`), at `fvd.checkpoints` fractions of the run and at the end,
    inside the deadline. `resume`, `check`: as `autoencoder_stage` (a resumed run measures only
    the FVD points still ahead of it)."""
    from walt.cascade.stage import Stage
    from walt.data.latent_dataset import LatentDataset
    from walt.diffusion import DiffusionSchedule
    from walt.eval.label_influence import label_influence
    from walt.train.common import latest_checkpoint

    folder = out / "walt"
    ds = LatentDataset(out / "cache")
    torch.manual_seed(seed)
    net = build_walt(cfg, ds.latent_shape).to(device)
    contexts = tuple(k for k in (1, 2) if k < ds.latent_shape[1]) or (1,)
    batch = min(cfg.walt_batch_size, len(ds))
    tcfg = walt_train_config(cfg, seed, batch, cfg.walt_loss_config(contexts))
    t0 = time.time()
    hooks: dict[str, Any] = {}
    resuming = resume and latest_checkpoint(folder / "checkpoints") is not None
    if fvd is not None:
        fvd.prepare()
        if cfg.fvd_at_start and not resuming:
            # Step 0: the untrained network is its own EMA. The schedule is the trainer's default.
            fvd.evaluate(net, DiffusionSchedule(tcfg(1, 1).diffusion), ds.stats, 0, "initial")
        fvd.plan(deadline)

        def on_checkpoint(step: int) -> None:
            ema = Stage.load(latest_checkpoint(folder / "checkpoints")).to(device)
            fvd.evaluate(ema.net, ema.schedule, ds.stats, step, "EMA")

        hooks = {"checkpoints": fvd.checkpoints, "on_checkpoint": on_checkpoint,
                 "reserve": fvd.reserve if fvd.final else (lambda pending: 0.0)}
    influence: list[dict[str, float]] = []
    probe = torch.arange(min(64, len(ds)))
    z_probe, y_probe = ds.latents(probe).to(device), ds.labels[probe].to(device)  # normalised, as trained on

    def after_segment(step: int) -> None:
        # How much the label moves the x0 estimate: a denoiser that ignores it shows ~0 here.
        if net.config.num_classes < 2:
            return check(step)
        li = label_influence(net, DiffusionSchedule(tcfg(1, 1).diffusion), z_probe, y_probe)
        influence.append({"step": step, "swap": li["swap"], "null": li["null"]})
        say(f"  denoiser: step {step}, label influence {li['swap']:.3f} (label swapped), {li['null']:.3f} (null label)")
        check(step)

    steps = recipes.train_walt_to_deadline(net, ds, folder, tcfg, deadline, cfg.calibration_steps, cfg.walt_min_steps,
                                           progress, "denoiser", say, resume=resuming, check=after_segment, **hooks)
    info: dict[str, Any] = {}
    if fvd is not None:
        if fvd.final:
            ema = Stage.load(folder / "walt_ema.safetensors").to(device)
            fvd.evaluate(ema.net, ema.schedule, ema.latent_stats, steps, "EMA (final)")
        info["fvd"] = fvd.summary()
    rows = read_log(folder / "log.csv")
    tail = rows[len(rows) // 2:] or rows
    seconds = time.time() - t0
    return {"seconds": seconds, "training_seconds": seconds - (fvd.seconds if fvd is not None else 0.0),
            "steps": steps, "params": sum(p.numel() for p in net.parameters()),
            "clips_per_s": statistics.median(r["clips_per_s"] for r in tail),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in tail),
            "final_loss": statistics.mean(r["loss"] for r in rows[-5:]), "batch_size": batch,
            "label_influence": influence, **info}
