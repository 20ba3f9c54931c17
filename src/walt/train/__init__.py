"""Training loops (the only place that knows about devices, precision and checkpoint cadence).

    from walt.train import VAETrainConfig, train_vae
    train_vae(VAETrainConfig(steps=..., batch_size=...), vae, batch_fn, "runs/vae")

`walt.train.common` holds what both stages share: EMA, warmup + cosine LR, gradient clipping,
non-finite loss detection, RNG capture/restore and atomic training-state checkpoints.
"""

from walt.train.common import (
    EMA,
    NonFiniteLossError,
    capture_rng_state,
    check_finite,
    clip_gradients,
    latest_checkpoint,
    load_training_state,
    restore_rng_state,
    save_training_state,
    warmup_cosine_lr,
    warmup_cosine_scheduler,
)
from walt.train.vae import VAETrainConfig, VAETrainResult, train_vae

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
