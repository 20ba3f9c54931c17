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
    (seed, step, rank, micro-batch), so they do not depend on where the run was interrupted
    (they do depend on grad_accum and world size: k micro-batches draw from k streams);
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

The configuration and the pre-flight checks live in `walt.train.denoiser_config`, the metrics log
and periodic samples in `walt.train.denoiser_outputs`; every name is re-exported here.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from walt.autoencoder.latent_stats import LatentStats
from walt.checkpoint import save_checkpoint
from walt.config import config_to_dict
from walt.diffusion.loss import diffusion_loss
from walt.diffusion.schedule import DiffusionSchedule
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
from walt.train.denoiser_config import (  # noqa: F401  (re-exported: walt.commands.train uses the checks)
    _RESUMABLE_CHANGES,
    DenoiserTrainConfig,
    DenoiserTrainResult,
    _check_data,
    _check_resumable,
    _check_text,
    is_image_step,
)
from walt.train.denoiser_outputs import LOG_COLUMNS, TrainLog, write_samples  # noqa: F401
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

_Logger, _write_samples = TrainLog, write_samples  # the names before the split


def _loss_seed(seed: int, step: int, rank: int, micro: int) -> int:
    return (((seed * 1_000_003 + step) * 1_009 + rank) * 101 + micro) % (2**63)


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
        progress: tqdm bar on rank 0 (loss, tokens/s, clips/s).
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
        from walt.data.latent_dataset import vae_fingerprint

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
    logger = TrainLog(out_dir, start if last_ckpt is not None else None, cfg.tensorboard) if is_main() else None

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
                    pbar.set_postfix(loss=f"{last_row['loss']:.4f}", tok_s=f"{last_row['tokens_per_s']:.0f}",
                                     clips_s=f"{last_row['clips_per_s']:.1f}")
                    window.clear()
                    counts.clear()
                    t_window, n_window, clips_window, tokens_window = time.perf_counter(), 0, 0, 0
                interrupted = stop_now or (done == end and end < cfg.steps)
                if done % cfg.ckpt_every == 0 or done == cfg.steps or interrupted:
                    last_ckpt = save(done)
                if cfg.sample_every and done % cfg.sample_every == 0:
                    write_samples(ema.module, schedule, stats, out_dir / "samples", done, cfg, vae,
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
