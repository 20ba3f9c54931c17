"""The training stages of `walt demo` (stages 1-3; stage 4 is `walt.demo.report`).

    stage 1  train the causal 3D CNN autoencoder           (walt.train.train_vae,        SPEC §1)
    stage 2  encode the training clips into a latent cache  (walt.data.latent_cache,     SPEC §1-2)
    stage 3  train the W.A.L.T denoiser from the cache      (walt.train.denoiser,        SPEC §2-3),
             with FVD measured at step 0, at fractions of the run and at the end (walt.demo.fvd)

Each training stage runs to a wall-clock deadline (`walt.demo.budget.train_to_deadline`) and
returns a JSON-able dict of what it did (seconds, steps, throughput), kept in out/stages.json.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from walt.config import config_to_dict
from walt.demo.budget import _read_log, _say, _seconds_per_step, train_to_deadline
from walt.demo.config import DemoConfig

# ----------------------------------------------------------------------------- datasets


def train_dataset(cfg: DemoConfig, seed: int, num_frames: int | None = None):
    from walt.demo.data import demo_videos

    return demo_videos(cfg, cfg.train_clips, seed, num_frames)


def heldout_dataset(cfg: DemoConfig, seed: int):
    """Clips the autoencoder and the denoiser never see: same generator, another seed."""
    from walt.demo.data import demo_videos

    return demo_videos(cfg, cfg.heldout_clips, seed + 10_007)


def _vae_batch_fn(dataset, batch_size: int, seed: int) -> Callable[[int], torch.Tensor]:
    """`step -> (B, 3, T, H, W)`: clips drawn by a generator seeded with (seed, step), as train_vae requires."""

    def batch_fn(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        ids = torch.randint(len(dataset), (batch_size,), generator=g)
        return torch.stack([dataset[int(i)]["video"] for i in ids])  # (B, 3, T, H, W)

    return batch_fn


# ----------------------------------------------------------------------------- stage 1


class _StopHere(Exception):
    """Raised by the batch source to end a `train_vae` call at a checkpointed step."""


def train_vae_stage(cfg: DemoConfig, out: Path, device: torch.device, seed: int, deadline: float,
                    progress: bool) -> dict[str, Any]:
    """Train the autoencoder until `deadline` (>= vae_min_steps); returns stage info."""
    from walt.autoencoder import CausalVAE
    from walt.train.vae import VAETrainConfig, train_vae

    folder = out / "vae"
    shutil.rmtree(folder, ignore_errors=True)
    torch.manual_seed(seed)
    vae = CausalVAE.from_preset("tiny", **cfg.vae_kwargs()).to(device)
    data = train_dataset(cfg, seed, num_frames=cfg.vae_train_frames)
    clips = _vae_batch_fn(data, cfg.vae_batch_size, seed)
    every = 5  # checkpoint cadence = where a call can stop without losing steps
    stop = {"at": None}

    def batch_fn(step: int) -> torch.Tensor:
        # train_vae has no stop_at: the batch source ends the call at the step a checkpoint was
        # just written for (the run resumes from there with the re-planned total), and at the
        # deadline whatever the plan said (the machine may have slowed down mid-segment).
        if step % every == 0 and step > cfg.vae_warmup_steps:
            late = time.time() > deadline and step >= cfg.vae_min_steps
            if late or (stop["at"] is not None and step >= stop["at"]):
                raise _StopHere
        return clips(step)

    def tcfg(steps: int) -> VAETrainConfig:
        # Reconstruction + small KL only: no pretrained perceptual network exists offline, and an
        # adversarial loss needs far more steps than a demo has to pay off. Adam betas (0.9, 0.99)
        # and a 10x higher peak LR than MAGVIT-v2 (1e-4 for 100k+ steps): here there are ~100s.
        return VAETrainConfig(
            steps=steps, batch_size=cfg.vae_batch_size, lr=cfg.vae_lr, warmup_steps=cfg.vae_warmup_steps,
            betas=(0.9, 0.99), ema_decay=0.99, log_every=1, ckpt_every=every, keep_checkpoints=1, seed=seed,
            precision="bf16" if device.type == "cuda" else "fp32", discriminator=None,
            loss=cfg.vae_loss_config(),
        )

    def train_until(total: int, stop_at: int | None) -> int:
        if stop_at is not None and stop_at <= cfg.vae_warmup_steps:
            total = stop_at  # calibration: a short complete run (the schedule is still in warmup)
        stop["at"] = stop_at
        vae.zero_grad(set_to_none=True)
        try:
            return train_vae(tcfg(total), vae, batch_fn, folder, progress=progress).step
        except _StopHere:
            done = _last_step(folder / "log.csv")
        if stop_at is None:  # stopped by the deadline: export the weights as they are
            train_vae(tcfg(done), vae, batch_fn, folder, progress=False)
        return done

    def pace(since: int) -> float:
        rows = [r for r in _read_log(folder / "log.csv") if r["step"] > since]
        return _seconds_per_step(rows, cfg.vae_batch_size, "clips_per_s")

    t0 = time.time()
    steps = train_to_deadline(train_until, pace, deadline, cfg.calibration_steps, cfg.vae_min_steps, "autoencoder")
    rows = _read_log(folder / "log.csv")
    return {"seconds": time.time() - t0, "steps": steps, "params": sum(p.numel() for p in vae.parameters()),
            "clips_per_s": statistics.median([r["clips_per_s"] for r in rows[1:] or rows]),
            "final_train_psnr": statistics.mean(r["psnr"] for r in rows[-5:]) if rows else None,
            "loss": config_to_dict(tcfg(steps).loss)}  # what it trained with: the report reads it


def _last_step(log_csv: Path) -> int:
    rows = _read_log(log_csv)
    return int(rows[-1]["step"]) if rows else 0


def load_demo_vae(out: Path, device: torch.device):
    from walt.autoencoder import CausalVAE

    # The raw weights: the LR decays to zero, so the last iterate is already smooth, and with a
    # few hundred steps an EMA would still remember the random initialisation.
    return CausalVAE.load(out / "vae" / "vae.safetensors", map_location=device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------- stage 2


def encode_stage(cfg: DemoConfig, out: Path, vae, device: torch.device, seed: int, progress: bool) -> dict[str, Any]:
    from walt.data.latent_cache import encode_dataset

    folder = out / "cache"
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.time()
    info = encode_dataset(vae, train_dataset(cfg, seed), folder, shard_size=256, batch_size=16, device=device,
                          progress=progress, latent_dtype="float32")
    seconds = time.time() - t0
    return {"seconds": seconds, "clips": cfg.train_clips, "clips_per_s": cfg.train_clips / seconds,
            "latent_shape": info.index["latent_shape"]}


# ----------------------------------------------------------------------------- stage 3


def build_walt(cfg: DemoConfig, latent_shape) -> "torch.nn.Module":
    """The denoiser for latents (c, t, h, w): spatial windows = one latent frame, spatiotemporal
    windows = all frames x a quarter of the frame (the paper's 1x16x16 / 5x8x8 on 16x16 latents)."""
    from walt.denoiser import WALT

    c, t, h, w = latent_shape
    return WALT.from_preset(
        "tiny", input_size=(t, h, w), in_channels=c, num_classes=len(cfg.classes), frame_conditioning=True,
        spatial_window=(1, h, w), spatiotemporal_window=(t, max(1, h // 2), max(1, w // 2)), **cfg.walt_kwargs(),
    )


def load_denoiser(path: Path, device):
    """(EMA network, latent stats, diffusion schedule) of an exported `walt_ema.safetensors`."""
    from walt.autoencoder import LatentStats
    from walt.checkpoint import load_checkpoint
    from walt.config import config_from_dict
    from walt.denoiser import WALT
    from walt.diffusion import DiffusionConfig, DiffusionSchedule

    state = load_checkpoint(path)
    net = WALT.from_checkpoint_state(state).to(device).eval().requires_grad_(False)
    stats = LatentStats.from_dict(state["latent_stats"])
    schedule = DiffusionSchedule(config_from_dict(DiffusionConfig, state["diffusion_config"]))
    return net, stats, schedule


def _ema_of_checkpoint(net: torch.nn.Module, ckpt_dir: Path):
    """(EMA copy of `net`, its schedule) from the newest training checkpoint in `ckpt_dir`."""
    import copy

    from walt.config import config_from_dict
    from walt.diffusion import DiffusionConfig, DiffusionSchedule
    from walt.train.common import latest_checkpoint, load_training_state

    state = load_training_state(latest_checkpoint(ckpt_dir))
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    ema.load_state_dict(state["ema"]["shadow"])
    return ema, DiffusionSchedule(config_from_dict(DiffusionConfig, state["diffusion_config"]))


def train_walt_stage(cfg: DemoConfig, out: Path, device: torch.device, seed: int, deadline: float,
                     progress: bool, fvd=None) -> dict[str, Any]:
    """Train the denoiser until `deadline`; with `fvd` (a `walt.demo.fvd.DemoFVD`) also measure
    FVD at step 0, at `fvd.checkpoints` fractions of the run and at the end, inside the deadline."""
    from walt.data.latent_dataset import LatentDataset
    from walt.diffusion import DiffusionSchedule
    from walt.diffusion.loss import DiffusionLossConfig
    from walt.train.denoiser import DenoiserTrainConfig, train_denoiser

    folder = out / "walt"
    shutil.rmtree(folder, ignore_errors=True)
    ds = LatentDataset(out / "cache")
    torch.manual_seed(seed)
    net = build_walt(cfg, ds.latent_shape).to(device)
    t_lat = ds.latent_shape[1]
    contexts = tuple(k for k in (1, 2) if k < t_lat) or (1,)
    batch = min(cfg.walt_batch_size, len(ds))

    def segment(steps: int, log_every: int, stop_at: int | None = None):
        # Each call resumes from the previous one's checkpoint (train_denoiser clears stale grads).
        return train_denoiser(tcfg(steps, log_every), net, ds, folder, progress=progress, stop_at=stop_at)

    def tcfg(steps: int, log_every: int) -> DenoiserTrainConfig:
        return DenoiserTrainConfig(
            steps=steps, batch_size=batch, lr=cfg.walt_lr, warmup_steps=cfg.walt_warmup_steps,
            ema_decay=cfg.walt_ema_decay, log_every=log_every, ckpt_every=10**9, keep_checkpoints=1, seed=seed,
            tensorboard=False, loss=DiffusionLossConfig(p_frame_pred=cfg.p_frame_pred, context_frames=contexts),
            diffusion=cfg.diffusion_config(),
        )

    def train_until(total: int, stop_at: int | None) -> int:
        # Log every step while the pace is being measured, then every few steps.
        log_every = 1 if total >= 10**7 else max(1, min(10, total // 100))
        return segment(total, log_every, stop_at).step

    def pace(since: int) -> float:
        rows = [r for r in _read_log(folder / "log.csv") if r["step"] > since]
        return _seconds_per_step(rows, batch, "sec_per_step")

    t0 = time.time()
    hooks: dict[str, Any] = {}
    if fvd is not None:
        # Step 0: the untrained network is its own EMA. The schedule is the trainer's default.
        fvd.prepare()
        fvd.evaluate(net, DiffusionSchedule(tcfg(1, 1).diffusion), ds.stats, 0, "initial")
        fvd.plan(deadline)

        def on_checkpoint(step: int) -> None:
            ema, schedule = _ema_of_checkpoint(net, folder / "checkpoints")
            fvd.evaluate(ema, schedule, ds.stats, step, "EMA")

        hooks = {"checkpoints": fvd.checkpoints, "on_checkpoint": on_checkpoint,
                 "reserve": fvd.reserve if fvd.final else (lambda pending: 0.0)}
    result_step = train_to_deadline(train_until, pace, deadline, cfg.calibration_steps, cfg.walt_min_steps,
                                    "denoiser", **hooks)
    info: dict[str, Any] = {}
    if fvd is not None:
        if fvd.final:
            ema, stats, schedule = load_denoiser(folder / "walt_ema.safetensors", device)
            fvd.evaluate(ema, schedule, stats, result_step, "EMA (final)")
        info["fvd"] = fvd.summary()
    rows = _read_log(folder / "log.csv")
    tail = rows[len(rows) // 2:] or rows
    seconds = time.time() - t0
    return {"seconds": seconds, "training_seconds": seconds - (fvd.seconds if fvd is not None else 0.0),
            "steps": result_step, "params": sum(p.numel() for p in net.parameters()),
            "clips_per_s": statistics.median(r["clips_per_s"] for r in tail),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in tail),
            "final_loss": statistics.mean(r["loss"] for r in rows[-5:]), "batch_size": batch, **info}
