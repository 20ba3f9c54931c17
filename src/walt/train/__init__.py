"""Training loops (the only place that knows about devices, precision and checkpoint cadence).

    from walt.train import VAETrainConfig, train_vae
    train_vae(VAETrainConfig(steps=..., batch_size=...), vae, batch_fn, "runs/vae")      # stage 1
    from walt.train.denoiser_loop import DenoiserTrainConfig, train_denoiser
    train_denoiser(DenoiserTrainConfig(...), net, LatentDataset("cache"), "runs/walt")   # stage 2, SR stages

`walt.train.common` holds what both loops share (EMA, warmup + cosine LR, non-finite loss
detection, RNG capture/restore, atomic training-state checkpoints, log windows);
`walt.train.parallelize` the DDP / FSDP2 / compile wrappers; `walt.train.batches` the batch sources.
"""

from walt.train.common import (
    EMA,
    NonFiniteLossError,
    capture_rng_state,
    check_finite,
    latest_checkpoint,
    load_training_state,
    restore_rng_state,
    save_training_state,
    warmup_cosine_lr,
    warmup_cosine_scheduler,
)
from walt.train.parallelize import clip_grad_norm
from walt.train.vae import VAETrainConfig, VAETrainResult, train_vae

clip_gradients = clip_grad_norm  # deprecated name

__all__ = [
    "EMA",
    "NonFiniteLossError",
    "capture_rng_state",
    "check_finite",
    "clip_gradients",
    "latest_checkpoint",
    "load_training_state",
    "restore_rng_state",
    "save_training_state",
    "warmup_cosine_lr",
    "warmup_cosine_scheduler",
    "VAETrainConfig",
    "VAETrainResult",
    "train_vae",
]
