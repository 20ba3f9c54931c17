"""Transformer (stage 2) training on cached latents, from one CPU process to many GPUs.

Each optimizer step (SPEC §3; paper §5.1): a global batch of normalised latents, v-prediction
unweighted MSE with self-conditioning (p 0.9), optional frame prediction and label dropout
(`walt.diffusion.diffusion_loss`), AdamW with warmup + cosine learning rate, gradient clipping,
an EMA of the weights. Joint image-video training (SPEC §2) alternates video batches with
batches of 1-frame image latents from a second cache (`image_ratio` of the steps).

Same design as the autoencoder loop (`walt.train.vae`, reusing `walt.train.common`):
  - the data position is explicit: a seeded permutation per epoch split across ranks
    (`ResumableBatchSampler`), stored as (epoch, batch in epoch) in every checkpoint;
  - the loss's random draws (t, noise, coin flips) come from a generator seeded by
    (seed, step, rank, micro-batch), so they do not depend on how the run was split;
  - hence a run interrupted at step k and resumed reproduces the uninterrupted run exactly
    (same device, thread count and world size);
  - checkpoints hold model, EMA, optimiser, scheduler, data position, RNG states and every config
    (train, WALT, diffusion, latent stats), are written atomically by rank 0 every `ckpt_every`
    steps AND when SIGTERM / SIGINT arrives (the handler only sets a flag; the current step
    finishes, a checkpoint is written, the function returns with `interrupted=True`);
  - a non-finite loss or gradient raises `NonFiniteLossError` before the optimizer step and
    before any save, so the newest checkpoint on disk is the last good state.

Parallelism / compile / activation checkpointing are applied from outside the model
(`walt.train.distributed.apply_training_wrappers`); launch with torchrun for DDP / FSDP2.

Outputs in `out_dir` (rank 0 only):
  log.csv, tb/ (TensorBoard, if installed), checkpoints/step_XXXXXXXX.safetensors,
  samples/step_XXXXXXXX.{safetensors,png,gif} (EMA model, DDIM), walt.safetensors, walt_ema.safetensors
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from walt.autoencoder.latent_stats import LatentStats
from walt.checkpoint import atomic_write, save_checkpoint
from walt.config import config_to_dict
from walt.diffusion.loss import DiffusionLossConfig, diffusion_loss
from walt.diffusion.schedule import DiffusionConfig, DiffusionSchedule
from walt.train.common import (
    EMA,
    NonFiniteLossError,
    capture_rng_state,
    check_finite,
    checkpoint_path,
    latest_checkpoint,
    load_training_state,
    restore_rng_state,
    save_training_state,
    warmup_cosine_scheduler,
)
from walt.train.distributed import (
    GracefulStop,
    ResumableBatchSampler,
    all_reduce_mean,
    apply_training_wrappers,
    barrier,
    clip_grad_norm,
    gather_model_state,
    gather_optimizer_state,
    get_rank,
    get_world_size,
    is_main,
    load_model_state,
    load_optimizer_state,
    no_grad_sync,
    wrap_model,
)

__all__ = ["DenoiserTrainConfig", "DenoiserTrainResult", "NonFiniteLossError", "train_denoiser", "is_image_step"]

# Settings that may change when a run is resumed without changing what a step computes
# (`steps` re-shapes the cosine tail: that is how a run is extended).
_RESUMABLE_CHANGES = {
    "steps", "log_every", "ckpt_every", "keep_checkpoints", "sample_every", "sample_clips", "sample_steps",
    "tensorboard", "compile", "activation_checkpointing", "parallel",
}

LOG_COLUMNS = (
    "step", "epoch", "lr", "loss", "loss_video", "loss_image", "grad_norm", "frac_self_cond", "frac_uncond",
    "frac_frame_pred", "tokens_per_s", "clips_per_s", "sec_per_step", "frac_uncond_text",
)


@dataclass(frozen=True)
class DenoiserTrainConfig:
    """Transformer training hyper-parameters. Defaults: W.A.L.T-XL on UCF-101 (SPEC §3) where stated.

    `batch_size` is the GLOBAL batch per optimizer step (paper: 256), split evenly over
    ranks and then over `grad_accum` micro-batches: batch_size % (world_size * grad_accum) == 0.
    `precision`: "auto" = bf16 autocast on CUDA, fp32 on CPU.
    `image_ratio`: fraction of steps that take an image batch from the image cache (joint
    image-video training; 0.5 alternates); ignored without an image cache.
    """

    steps: int = 60_000  # paper: 60k (ablations 35k)
    batch_size: int = 256  # global; paper: 256
    grad_accum: int = 1
    lr: float = 5e-4  # paper: AdamW 5e-4, cosine
    min_lr: float = 0.0
    warmup_steps: int = 1_000  # *choice*: not stated
    betas: tuple[float, float] = (0.9, 0.999)  # *choice*: not stated (AdamW defaults)
    weight_decay: float = 0.0  # *choice* (DiT)
    eps: float = 1e-8
    grad_clip: float = 1.0  # global L2 norm; <= 0 disables clipping
    ema_decay: float = 0.9999  # *choice* (DiT); the paper says only "EMA"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    activation_checkpointing: bool = False
    compile: bool = False
    parallel: Literal["none", "ddp", "fsdp"] = "none"
    image_ratio: float = 0.0
    image_batch_size: Optional[int] = None  # global; None: batch_size
    log_every: int = 50
    ckpt_every: int = 1_000
    keep_checkpoints: int = 2
    sample_every: int = 0  # 0: no periodic samples
    sample_clips: int = 4
    sample_steps: int = 50  # DDIM steps (paper: 50)
    seed: int = 0
    tensorboard: bool = True  # also log to TensorBoard when it is installed
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    loss: DiffusionLossConfig = field(default_factory=DiffusionLossConfig)

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "log_every", "ckpt_every", "keep_checkpoints",
                     "sample_clips", "sample_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"DenoiserTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.min_lr < 0 or self.warmup_steps < 0 or self.sample_every < 0:
            raise ValueError("DenoiserTrainConfig: lr must be > 0; min_lr, warmup_steps, sample_every >= 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"DenoiserTrainConfig.betas must be in [0, 1), got {self.betas}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"DenoiserTrainConfig.precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.parallel not in ("none", "ddp", "fsdp"):
            raise ValueError(f"DenoiserTrainConfig.parallel must be 'none', 'ddp' or 'fsdp', got {self.parallel!r}")
        if not 0.0 <= self.image_ratio <= 1.0:
            raise ValueError(f"DenoiserTrainConfig.image_ratio must be in [0, 1], got {self.image_ratio}")
        if self.image_batch_size is not None and self.image_batch_size < 1:
            raise ValueError(f"DenoiserTrainConfig.image_batch_size must be >= 1, got {self.image_batch_size}")


@dataclass
class DenoiserTrainResult:
    step: int  # completed steps
    metrics: dict[str, float]  # the last logged row
    checkpoint: Path | None  # newest training-state checkpoint
    model_path: Path | None  # final raw weights (only when the run reached cfg.steps)
    ema_path: Path | None  # final EMA weights
    interrupted: bool = False  # stopped early by SIGTERM / SIGINT or `stop_at` (a checkpoint was written)


# ----------------------------------------------------------------------------- helpers


def is_image_step(step: int, ratio: float) -> bool:
    """Step `step` takes an image batch: exactly round(ratio * n) of any n first steps do (0.5 alternates)."""
    return ratio > 0 and math.floor((step + 1) * ratio + 1e-9) > math.floor(step * ratio + 1e-9)


def _loss_seed(seed: int, step: int, rank: int, micro: int) -> int:
    return (((seed * 1_000_003 + step) * 1_009 + rank) * 101 + micro) % (2**63)


class _Logger:
    """Rank-0 metrics: append-only CSV (rows past a resumed checkpoint are dropped) + optional TensorBoard."""

    def __init__(self, out_dir: Path, resume_step: int | None, tensorboard: bool):
        self.path = out_dir / "log.csv"
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS)
            w.writeheader()
            w.writerows(rows)
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(buf.getvalue()))
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.path.write_text(",".join(LOG_COLUMNS) + "\n")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the optional `tensorboard` package

                self.tb = SummaryWriter(str(out_dir / "tb"))
            except ImportError:
                self.tb = None

    def write(self, row: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, int(row["step"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class _LossView:
    """What `diffusion_loss` needs from the network (config, null_class, call) over a DDP/FSDP wrapper.

    With `sync_calls` (FSDP2 on several ranks) every forward is a collective (parameter
    all-gathers), but `diffusion_loss` runs its extra no-grad self-conditioning pass only on ranks
    whose coin flips asked for it. Before each call the ranks agree (all-reduce MIN of
    "grad enabled"): a rank about to run its grad pass while another runs a no-grad pass first
    runs a discarded no-grad pass, so every rank issues the same collectives in the same order.
    """

    def __init__(self, wrapped: nn.Module, raw: nn.Module, sync_calls: bool = False):
        self.wrapped, self.config, self.sync_calls = wrapped, raw.config, sync_calls
        self.null_class = getattr(raw, "null_class", getattr(raw.config, "num_classes", 0))

    def __call__(self, *args, **kwargs):
        if self.sync_calls:
            import torch.distributed as dist

            device = next(self.wrapped.parameters()).device
            while True:
                kind = torch.tensor(float(torch.is_grad_enabled()), device=device)
                dist.all_reduce(kind, op=dist.ReduceOp.MIN)
                if kind.item() > 0 or not torch.is_grad_enabled():
                    break
                with torch.no_grad():  # match another rank's self-conditioning pass
                    self.wrapped(*args, **kwargs)
        return self.wrapped(*args, **kwargs)


def _check_data(ds, net: nn.Module, what: str) -> None:
    cfg = net.config
    c, t, h, w = ds.latent_shape
    t_max, h_cfg, w_cfg = cfg.input_size
    if c != cfg.in_channels or (h, w) != (h_cfg, w_cfg) or not 1 <= t <= t_max:
        raise ValueError(f"{what} latents are (c, t, h, w) = {(c, t, h, w)} but the network takes "
                         f"{cfg.in_channels} channels, up to {t_max} frames of {h_cfg}x{w_cfg}; build it with "
                         f"in_channels={c}, input_size=({max(t, t_max)}, {h}, {w})")
    if cfg.num_classes > 0:
        lo, hi = int(ds.labels.min()), int(ds.labels.max())
        if lo < 0 or hi >= cfg.num_classes:
            raise ValueError(f"{what} labels span [{lo}, {hi}] but the network has num_classes={cfg.num_classes}; "
                             "use a class-conditional cache with labels in range, or num_classes=0")


def _check_text(text_embeddings, ds, net: nn.Module) -> dict | None:
    """The text features must fit the network (text_dim) and the latent cache (items, VAE); returns their info."""
    text_dim = getattr(net.config, "text_dim", 0)
    if text_embeddings is None:
        return None
    if text_dim <= 0:
        raise ValueError("text embeddings were given but the network has text_dim=0; build it with "
                         f"text_dim={text_embeddings.dim}")
    if text_embeddings.dim != text_dim:
        raise ValueError(f"the text features are {text_embeddings.dim}-d but the network has text_dim={text_dim}; "
                         f"build it with text_dim={text_embeddings.dim}")
    if len(text_embeddings) != len(ds) or text_embeddings.vae_sha256 != ds.vae_sha256:
        raise ValueError("the text embeddings belong to another latent cache (item count or VAE differ); "
                         "cache them again for this one")
    return dict(text_embeddings.encoder_info)


def _check_resumable(state: dict, cfg: DenoiserTrainConfig, walt_config: dict, vae_hash: str, ckpt: Path) -> None:
    if state.get("walt_config") != walt_config:
        raise ValueError(f"{ckpt} was trained with a different WALT config; use a new out_dir or the same preset")
    if state.get("cache", {}).get("vae_sha256") != vae_hash:
        raise ValueError(f"{ckpt} was trained on latents of a different VAE; use a new out_dir or the original cache")
    old, new = state["train_config"], config_to_dict(cfg)
    diff = sorted(k for k in set(old) | set(new) if k not in _RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if diff:
        k = diff[0]
        raise ValueError(f"{ckpt} was trained with {k}={old.get(k)!r}, now {k}={new.get(k)!r}; "
                         "use a new out_dir (or resume=False there) to start a different run")


# ----------------------------------------------------------------------------- training loop


def train_denoiser(
    cfg: DenoiserTrainConfig,
    net: nn.Module,
    latent_dataset,
    out_dir: str | Path,
    image_dataset=None,
    vae: nn.Module | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_at: int | None = None,
    text_embeddings=None,
) -> DenoiserTrainResult:
    """Train the WALT denoiser `net` (on its current device) on a latent cache for `cfg.steps` steps.

    Args:
        cfg: training hyper-parameters.
        net: a plain `WALT` (not wrapped); trained in place. Under torchrun call
            `init_distributed()` first and pass the same freshly built network on every rank.
        latent_dataset: `walt.data.latent_cache.LatentDataset` of video latents (its stats
            normalise every batch, video and image alike).
        out_dir: log, checkpoints, samples and final weights go here (rank 0 writes).
        image_dataset: optional `LatentDataset` of 1-frame image latents from the same VAE
            (joint image-video training, `cfg.image_ratio`).
        vae: optional autoencoder of the cache (checked by weights hash): periodic samples are
            decoded to PNG / GIF.
        resume: continue from the newest checkpoint in `out_dir/checkpoints` if any; with
            resume=False an out_dir that already holds checkpoints is refused.
        progress: tqdm bar on rank 0 (loss, tokens/s).
        stop_at: end this call (with a checkpoint) once this many steps are done, keeping the
            schedule of `cfg.steps` (time-limited jobs; the next call resumes).
        text_embeddings: optional `walt.text.TextEmbeddings` of `latent_dataset` (its caption
            features, same item order) for a text-conditioned network (config.text_dim > 0):
            video batches get text / text_mask, dropped with cfg.loss.p_uncond_text for
            classifier-free guidance. Image batches (joint training) get no text.
    Returns:
        `DenoiserTrainResult`.
    Raises:
        NonFiniteLossError: the loss or gradient norm became NaN/inf (on every rank; nothing saved).
    """
    from walt.denoiser.model import CHECKPOINT_KIND

    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    device = next(net.parameters()).device
    rank, world = get_rank(), get_world_size()
    walt_config = config_to_dict(net.config)
    stats: LatentStats = latent_dataset.stats
    vae_hash = latent_dataset.vae_sha256
    _check_data(latent_dataset, net, "video cache")
    use_images = image_dataset is not None and cfg.image_ratio > 0
    if use_images:
        _check_data(image_dataset, net, "image cache")
        if image_dataset.vae_sha256 != vae_hash:
            raise ValueError("the image cache was encoded by a different VAE than the video cache; re-encode it")
    text_info = _check_text(text_embeddings, latent_dataset, net)
    if vae is not None:
        from walt.data.latent_cache import vae_fingerprint

        if vae_fingerprint(vae) != vae_hash:
            raise ValueError("the given vae is not the autoencoder that made the latent cache; pass that one or none")
    if cfg.parallel == "none" and world > 1:
        raise ValueError(f"parallel='none' with {world} processes would train unsynchronised copies; "
                         "set parallel='ddp' (or 'fsdp'), or launch a single process")
    if cfg.parallel != "none" and world == 1 and is_main():
        print(f"note: parallel={cfg.parallel!r} in a single process: training unwrapped (launch with torchrun)")

    # ---- batches: global -> ranks -> micro-batches ----
    def sampler_for(ds, global_batch: int, salt: int) -> ResumableBatchSampler:
        if global_batch % (world * cfg.grad_accum):
            raise ValueError(f"batch size {global_batch} must be divisible by world_size x grad_accum = "
                             f"{world} x {cfg.grad_accum}")
        return ResumableBatchSampler(len(ds), global_batch, seed=cfg.seed + salt, rank=rank, world_size=world)

    video_sampler = sampler_for(latent_dataset, cfg.batch_size, 0)
    image_batch = cfg.image_batch_size or cfg.batch_size
    image_sampler = sampler_for(image_dataset, image_batch, 7919) if use_images else None

    # ---- resume, part 1: read and check the checkpoint before anything is built or wrapped ----
    start, last_ckpt, state = 0, latest_checkpoint(ckpt_dir), None
    if last_ckpt is not None:
        if not resume:
            raise ValueError(f"{ckpt_dir} already holds checkpoints; pass resume=True or choose an empty out_dir")
        state = load_training_state(last_ckpt)
        _check_resumable(state, cfg, walt_config, vae_hash, last_ckpt)
        if (state.get("text_encoder") or {}).get("weights_id") != (text_info or {}).get("weights_id"):
            raise ValueError(f"{last_ckpt} was trained with other text features (or with/without text); "
                             "use a new out_dir or the same text embeddings")
        video_sampler.load_state_dict(state["data"]["video"])
        if image_sampler is not None and state["data"].get("image") is not None:
            image_sampler.load_state_dict(state["data"]["image"])
        start = int(state["step"])

    # ---- model, EMA (copied before any wrapper), optimiser, schedule ----
    ema = EMA(net, cfg.ema_decay)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    model = apply_training_wrappers(net, cfg.parallel, compile=cfg.compile,
                                    activation_checkpointing=cfg.activation_checkpointing, device=device,
                                    find_unused_parameters=use_images)
    if cfg.parallel == "fsdp":
        wrap_model(ema.module, "fsdp")  # the EMA shadow sharded like the model: update stays local
    elif world > 1:
        ema.module.load_state_dict(net.state_dict())  # DDP broadcast rank 0's weights: start the EMA there too
    loss_net = _LossView(model, net, sync_calls=cfg.parallel == "fsdp" and world > 1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                            weight_decay=cfg.weight_decay)
    sched = warmup_cosine_scheduler(opt, cfg.warmup_steps, cfg.steps, cfg.min_lr / cfg.lr)
    schedule = DiffusionSchedule(cfg.diffusion)
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext())

    # ---- resume, part 2: weights, EMA, optimiser, scheduler, RNG (FSDP: each rank loads its shards) ----
    if state is not None:
        load_model_state(model, state["model"])
        load_model_state(ema.module, state["ema"]["shadow"])
        ema.num_updates = int(state["ema"]["num_updates"])
        # Stale .grad tensors from a caller's earlier run make the DCP optimiser loader skip its
        # lazy state initialisation; a resumed step starts from no gradients anyway.
        model.zero_grad(set_to_none=True)
        load_optimizer_state(model, opt, state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"])
        state = None  # free the host copy
    logger = _Logger(out_dir, start if last_ckpt is not None else None, cfg.tensorboard) if is_main() else None

    def save(step: int) -> Path:
        # Gathering is collective under FSDP: every rank takes part, rank 0 writes.
        state = {
            "step": step,
            "data": {"video": video_sampler.state_dict(),
                     "image": image_sampler.state_dict() if image_sampler is not None else None},
            "train_config": config_to_dict(cfg),
            "walt_config": walt_config,
            "diffusion_config": config_to_dict(cfg.diffusion),
            "latent_stats": stats.to_dict(),
            "cache": {"vae_sha256": vae_hash, "dir": str(latent_dataset.cache_dir),
                      "image_dir": str(image_dataset.cache_dir) if use_images else None},
            "world_size": world,
            "text_encoder": text_info,
            "model": gather_model_state(model),
            "ema": {"decay": ema.decay, "num_updates": ema.num_updates, "shadow": gather_model_state(ema.module)},
            "optimizer": gather_optimizer_state(model, opt),
            "scheduler": sched.state_dict(),
            "rng": capture_rng_state(),
        }
        path = checkpoint_path(ckpt_dir, step)
        if is_main():
            save_training_state(path, state, keep_last=cfg.keep_checkpoints)
        barrier()
        return path

    # ---- loop ----
    window: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    last_row: dict[str, float] = {}
    t_window, n_window, clips_window, tokens_window = time.perf_counter(), 0, 0, 0
    p = net.config.patch_size
    use_labels = net.config.num_classes > 0
    end = cfg.steps if stop_at is None else min(cfg.steps, max(stop_at, start))
    interrupted, completed = False, start
    pbar = tqdm(total=cfg.steps, initial=start, disable=not (progress and is_main()), desc="train",
                unit="step", dynamic_ncols=True)
    try:
        with GracefulStop() as stop:
            for step in range(start, end):
                image_step = use_images and is_image_step(step, cfg.image_ratio)
                ds, sampler = (image_dataset, image_sampler) if image_step else (latent_dataset, video_sampler)
                ids = sampler.next_indices()  # (B_rank,) this rank's share of the global batch
                epoch = sampler.epoch
                z = stats.normalize(ds.latents(ids, raw=True))  # (B_rank, c, t, h, w), video stats for both
                y = ds.labels[ids] if use_labels else None
                txt = msk = None
                if text_embeddings is not None and not image_step:
                    txt, msk = text_embeddings.batch(ids)  # (B_rank, L, D), (B_rank, L)
                micro = len(ids) // cfg.grad_accum
                lr_now = opt.param_groups[0]["lr"]

                model.train()
                opt.zero_grad(set_to_none=True)
                loss_sum = torch.zeros((), device=device)
                step_stats: dict[str, float] = {}
                for m in range(cfg.grad_accum):
                    zb = z[m * micro:(m + 1) * micro].to(device)
                    yb = y[m * micro:(m + 1) * micro].to(device) if y is not None else None
                    text_kw = {} if txt is None else {"text": txt[m * micro:(m + 1) * micro].to(device),
                                                      "text_mask": msk[m * micro:(m + 1) * micro].to(device)}
                    gen = torch.Generator(device=device).manual_seed(_loss_seed(cfg.seed, step, rank, m))
                    with no_grad_sync(model, enabled=m < cfg.grad_accum - 1):
                        with autocast:
                            loss, st = diffusion_loss(loss_net, zb, schedule, cfg.loss, y=yb, generator=gen,
                                                      **text_kw)
                        (loss / cfg.grad_accum).backward()
                    loss_sum += loss.detach().float()
                    for k, v in st.items():
                        if k != "loss":
                            step_stats[k] = step_stats.get(k, 0.0) + float(v) / cfg.grad_accum
                # One collective: the mean loss over ranks and whether any rank got a stop signal.
                flags = torch.stack([loss_sum / cfg.grad_accum, torch.tensor(float(stop.flag.is_set()), device=device)])
                flags = all_reduce_mean(flags)
                loss_mean, stop_now = float(flags[0]), float(flags[1]) > 0
                check_finite(loss_mean, step, "diffusion loss")  # same value on every rank: all stop together
                grad_norm = clip_grad_norm(model.parameters(), cfg.grad_clip)
                check_finite(grad_norm, step, "gradient norm")
                opt.step()
                sched.step()
                ema.update(net)

                kind = "loss_image" if image_step else "loss_video"
                step_stats.update({"loss": loss_mean, kind: loss_mean, "grad_norm": grad_norm, "lr": lr_now})
                for k, v in step_stats.items():
                    window[k] += v
                    counts[k] += 1
                n_window += 1
                clips_window += len(ids) * world
                tokens_window += len(ids) * world * z.shape[2] * (z.shape[3] // p) * (z.shape[4] // p)
                done = step + 1

                if done % cfg.log_every == 0 or done == cfg.steps:
                    elapsed = max(time.perf_counter() - t_window, 1e-9)
                    last_row = {k: window[k] / counts[k] for k in window}
                    last_row.update(step=done, epoch=epoch, tokens_per_s=tokens_window / elapsed,
                                    clips_per_s=clips_window / elapsed, sec_per_step=elapsed / n_window)
                    if logger is not None:
                        logger.write(last_row)
                    pbar.set_postfix(loss=f"{last_row['loss']:.4f}", tok_s=f"{last_row['tokens_per_s']:.0f}")
                    window.clear()
                    counts.clear()
                    t_window, n_window, clips_window, tokens_window = time.perf_counter(), 0, 0, 0
                interrupted = stop_now or (done == end and end < cfg.steps)
                if done % cfg.ckpt_every == 0 or done == cfg.steps or interrupted:
                    last_ckpt = save(done)
                if cfg.sample_every and done % cfg.sample_every == 0:
                    _write_samples(ema.module, schedule, stats, out_dir / "samples", done, cfg, vae,
                                   sample_on_all_ranks=cfg.parallel == "fsdp" and world > 1,
                                   text_embeddings=text_embeddings)
                pbar.update(1)
                completed = done
                if interrupted:
                    break
    finally:
        pbar.close()
        if logger is not None:
            logger.close()

    if completed < cfg.steps:
        return DenoiserTrainResult(completed, last_row, last_ckpt, None, None, interrupted=True)

    # ---- export the final networks (raw and EMA), in the WALT.save format ----
    extra = {"step": cfg.steps, "train_config": config_to_dict(cfg), "diffusion_config": config_to_dict(cfg.diffusion),
             "latent_stats": stats.to_dict(), "vae_sha256": vae_hash}
    if text_info is not None:
        extra["text_encoder"] = text_info
    model_path, ema_path = out_dir / "walt.safetensors", out_dir / "walt_ema.safetensors"
    raw_state, ema_state = gather_model_state(model), gather_model_state(ema.module)
    if is_main():
        save_checkpoint(model_path, {"kind": CHECKPOINT_KIND, "config": walt_config, "model": raw_state, **extra})
        save_checkpoint(ema_path, {"kind": CHECKPOINT_KIND, "config": walt_config, "model": ema_state, "ema": True,
                                   **extra})
    barrier()
    return DenoiserTrainResult(cfg.steps, last_row, last_ckpt, model_path, ema_path)


@torch.no_grad()
def _write_samples(ema_net: nn.Module, schedule: DiffusionSchedule, stats: LatentStats, folder: Path, step: int,
                   cfg: DenoiserTrainConfig, vae: nn.Module | None, sample_on_all_ranks: bool,
                   text_embeddings=None) -> None:
    """DDIM samples of the EMA model (fixed seeds and labels, so runs are comparable over time).

    Writes samples/step_XXXXXXXX.safetensors (raw-space latents) and, with a VAE, a frame-grid
    PNG and a GIF per clip. Under FSDP every rank runs the (collective) sampling; rank 0 writes.
    """
    from safetensors.torch import save_file

    from walt.data.video_io import write_frame_grid_png, write_gif
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
