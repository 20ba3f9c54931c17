"""The small-model pipeline stages the experiments share: autoencoder, latent cache, denoiser.

`walt demo` and `walt study` both train a small causal autoencoder (SPEC §1), encode a latent
cache, and train a small W.A.L.T on it (SPEC §2-3), many times and under a budget. The builders,
training settings and drivers live here once; each recipe picks its sizes and reports what it
needs from the trainers' logs (`walt.experiment.budget.read_log`).

Both recipes train the autoencoder on reconstruction (+ a small KL) only: no pretrained
perceptual network exists offline, and an adversarial loss needs far more steps than they have
to pay off. Adam betas (0.9, 0.99) and a short EMA (0.99) suit runs of a few hundred steps.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from walt.experiment.budget import read_log, seconds_per_step, train_to_deadline

__all__ = ["DEMO_DENOISER", "DEMO_FAST", "clip_batches", "small_vae", "small_vae_config", "load_small_vae",
           "cache_stage", "small_walt", "walt_config", "train_vae_to_deadline", "walt_trainer", "train_walt_to_deadline"]


# The demo's denoiser size (WALT "tiny" overrides), shared with the latent toy of `walt bench --only toy`
# so the toy always judges the network the demo trains.
DEMO_DENOISER: dict[str, Any] = {"hidden_size": 192, "depth": 4, "num_heads": 4, "patch_size": 2}
# What the demo and the toy train on top of that size, because it learns more per CPU-minute here
# (docs/demo/NOTES.md): no self-conditioning (~35% more steps per minute; the paper keeps it) and the
# exact GELU (~12% more). The study's rows keep the paper's network unless they say otherwise.
DEMO_FAST: dict[str, Any] = {"self_conditioning": False, "mlp_gelu": "erf"}


def clip_batches(dataset, batch_size: int, seed: int, frames: int | None = None) -> Callable[[int], torch.Tensor]:
    """`step -> (B, 3, T, H, W)`: clips drawn by a generator seeded with (seed, step), as `train_vae` requires
    (the first `frames` frames of each: the autoencoder is causal and fully convolutional)."""

    def batch_fn(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        ids = torch.randint(len(dataset), (batch_size,), generator=g)
        return torch.stack([dataset[int(i)]["video"] for i in ids])[:, :, :frames]  # (B, 3, T, H, W)

    return batch_fn


def small_vae(seed: int, **overrides: Any):
    """The `tiny` autoencoder preset with `overrides`, initialised from `seed` (every row the same)."""
    from walt.autoencoder import CausalVAE

    torch.manual_seed(seed)
    return CausalVAE.from_preset("tiny", **overrides)


def small_vae_config(steps: int, batch_size: int, lr: float, warmup_steps: int, seed: int, device: torch.device,
                     loss, log_every: int, ckpt_every: int, decoder_noise: float = 0.0):
    """`VAETrainConfig` of a short run: reconstruction (+ small KL) only, see the module docstring."""
    from walt.train.vae import VAETrainConfig

    return VAETrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, betas=(0.9, 0.99),
                          ema_decay=0.99, log_every=log_every, ckpt_every=ckpt_every, keep_checkpoints=1, seed=seed,
                          precision="bf16" if device.type == "cuda" else "fp32", discriminator=None, loss=loss,
                          decoder_noise=decoder_noise)


def load_small_vae(folder: Path, device: torch.device):
    """The trained autoencoder's raw weights: the LR decays to zero, so the last iterate is already
    smooth, and after a few hundred steps an EMA would still remember the random initialisation."""
    from walt.autoencoder import CausalVAE

    return CausalVAE.load(Path(folder) / "vae.safetensors", map_location=device).eval().requires_grad_(False)


def cache_stage(vae, data, folder: Path, device: torch.device, progress: bool, shard_size: int,
                batch_size: int) -> dict[str, Any]:
    """Encode `data` into a float32 latent cache in `folder` -> the stage record."""
    from walt.data.latent_cache import encode_dataset

    t0 = time.perf_counter()
    info = encode_dataset(vae, data, folder, shard_size=shard_size, batch_size=batch_size, device=device,
                          progress=progress, latent_dtype="float32")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "clips": len(data), "clips_per_s": len(data) / seconds,
            "latent_shape": info.index["latent_shape"], "encoded_shards": len(info.encoded_shards)}


def small_walt(latent_shape, num_classes: int, spatial_window, spatiotemporal_window, seed: int | None = None,
               **overrides: Any):
    """The `tiny` WALT preset for latents (c, t, h, w) with the given windows and `overrides`."""
    from walt.denoiser import WALT

    c, t, h, w = latent_shape
    if seed is not None:
        torch.manual_seed(seed)
    return WALT.from_preset("tiny", **{"input_size": (t, h, w), "in_channels": c, "num_classes": num_classes,
                                       "spatial_window": tuple(spatial_window),
                                       "spatiotemporal_window": tuple(spatiotemporal_window), **overrides})


def walt_config(steps: int, batch_size: int, lr: float, warmup_steps: int, ema_decay: float, seed: int, loss,
                diffusion, log_every: int, ckpt_every: int, precision: str = "auto"):
    """`DenoiserTrainConfig` of a short run: one checkpoint kept, no TensorBoard (`precision`: see
    `walt.train.precision`; "fast" = bf16 where this machine runs it natively)."""
    from walt.train.denoiser_config import DenoiserTrainConfig

    return DenoiserTrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                               ema_decay=ema_decay, log_every=log_every, ckpt_every=ckpt_every, keep_checkpoints=1,
                               seed=seed, tensorboard=False, loss=loss, diffusion=diffusion, precision=precision)


class _StopHere(Exception):
    """Raised by the batch source to end a `train_vae` call at a checkpointed step."""


def train_vae_to_deadline(vae, batch_fn, folder: Path, tcfg: Callable[[int, int], Any], deadline: float,
                          warmup_steps: int, calibration_steps: int, min_steps: int, progress: bool,
                          say: Callable[[str], None] = print, every: int = 5, resume: bool = False,
                          check: Callable[[int], None] = lambda step: None) -> int:
    """Train `vae` in `folder` until `deadline` (`walt.experiment.budget.train_to_deadline`) -> steps.

    `tcfg(total, ckpt_every)` is the run's `VAETrainConfig`. The batch source ends a call at a
    step a checkpoint was just written for (every `every` steps, after the warmup), at the
    segment's end and at the deadline whatever the plan said (the machine may slow down
    mid-segment); the run resumes from there with the re-planned total. `resume=True` continues a
    run `folder` holds from its newest checkpoint instead of starting over; `check` as in
    `train_to_deadline`.
    """
    from walt.train.vae import train_vae

    start = _resume_or_clear(folder, resume)
    stop: dict[str, int | None] = {"at": None}

    def batches(step: int) -> torch.Tensor:
        if step % every == 0 and step > warmup_steps:
            late = time.time() > deadline and step >= min_steps
            if late or (stop["at"] is not None and step >= stop["at"]):
                raise _StopHere
        return batch_fn(step)

    def train_until(total: int, stop_at: int | None) -> int:
        if stop_at is not None and stop_at <= warmup_steps:
            total = stop_at  # calibration: a short complete run (the schedule is still in warmup)
        stop["at"] = stop_at
        vae.zero_grad(set_to_none=True)
        try:
            return train_vae(tcfg(total, every), vae, batches, folder, progress=progress).step
        except _StopHere:
            rows = read_log(folder / "log.csv")
            done = int(rows[-1]["step"]) if rows else 0
        if stop_at is None:  # stopped by the deadline: export the weights as they are
            train_vae(tcfg(done, every), vae, batches, folder, progress=False)
        return done

    def pace(since: int) -> float:
        rows = [r for r in read_log(folder / "log.csv") if r["step"] > since]
        return seconds_per_step(rows, tcfg(1, every).batch_size, "clips_per_s")

    return train_to_deadline(train_until, pace, deadline, calibration_steps, min_steps, "autoencoder", say=say,
                             check=check, start=start)


def walt_trainer(net, ds, folder: Path, tcfg: Callable[[int, int], Any], progress: bool, resume: bool = False,
                 text=None, snapshot_every: int = 0, on_snapshot: Callable[[int], None] | None = None):
    """(steps already done, `train_until(total, stop_at) -> step`): resumable calls of `train_denoiser`.

    `tcfg(total, log_every)` is the run's `DenoiserTrainConfig`; a call logs every step while the
    pace is being measured (total >= 10**7), then every few steps. `resume=True` continues the run
    `folder` holds from its newest checkpoint (else the folder is cleared). `on_snapshot(step)`
    runs at every multiple of `snapshot_every` the run reaches, with the checkpoint of that step
    the newest in folder/checkpoints (a study keeps its EMA weights, to compare runs at equal steps).
    """
    from walt.train.denoiser_loop import train_denoiser

    at = {"step": _resume_or_clear(folder, resume)}

    def call(total: int, stop_at: int | None, log_every: int) -> int:
        at["step"] = train_denoiser(tcfg(total, log_every), net, ds, folder, progress=progress, stop_at=stop_at,
                                    text_embeddings=text).step
        if on_snapshot is not None and snapshot_every and at["step"] % snapshot_every == 0:
            on_snapshot(at["step"])
        return at["step"]

    def train_until(total: int, stop_at: int | None) -> int:
        net.zero_grad(set_to_none=True)
        log_every = 1 if total >= 10**7 else max(1, min(10, total // 100))
        end = total if stop_at is None else min(stop_at, total)
        while on_snapshot is not None and snapshot_every:  # end a call at every snapshot step on the way
            nxt = (at["step"] // snapshot_every + 1) * snapshot_every
            if nxt >= end:
                break
            if call(total, nxt, log_every) < nxt:
                return at["step"]  # a stop signal ended the call early
        return call(total, stop_at, log_every)

    return at["step"], train_until


def train_walt_to_deadline(net, ds, folder: Path, tcfg: Callable[[int, int], Any], deadline: float,
                           calibration_steps: int, min_steps: int, progress: bool, name: str = "denoiser",
                           say: Callable[[str], None] = print, text=None, resume: bool = False,
                           snapshot_every: int = 0, on_snapshot: Callable[[int], None] | None = None,
                           **hooks: Any) -> int:
    """Train `net` on the cache `ds` in `folder` until `deadline` -> steps (`hooks`: FVD checkpoints and
    `check`, see `train_to_deadline`; `tcfg`, `resume`, the snapshots: see `walt_trainer`)."""
    start, train_until = walt_trainer(net, ds, folder, tcfg, progress, resume, text, snapshot_every, on_snapshot)

    def pace(since: int) -> float:
        rows = [r for r in read_log(folder / "log.csv") if r["step"] > since]
        return seconds_per_step(rows, tcfg(1, 1).batch_size, "sec_per_step")

    return train_to_deadline(train_until, pace, deadline, calibration_steps, min_steps, name, say=say, start=start,
                             **hooks)


def _resume_or_clear(folder: Path, resume: bool) -> int:
    """Steps done by the run in `folder` when resuming it (0 if it has no checkpoint); else clear it."""
    from walt.train.common import list_checkpoints

    if resume:
        ckpts = list_checkpoints(Path(folder) / "checkpoints")
        if ckpts:
            return int(ckpts[-1][0])
    shutil.rmtree(folder, ignore_errors=True)
    return 0
