"""The one training loop of the W.A.L.T denoiser: base models, SR stages, joint image-video steps.

    train_denoiser(cfg, net, LatentDataset("cache"), "runs/walt")                  # base (SPEC §3)
    train_denoiser(cfg, net, videos, "runs/walt", image_dataset=images)             # joint image-video (SPEC §2)
    train_denoiser(cfg, net, PairBatches(hi, lo, cfg), "runs/sr1", objective=SuperResolution(SRConfig()))  # SPEC §4

What a step trains on and what it minimises are plugged in:
  - the batch source (`walt.train.batches`): `LatentBatches` (video latents, image latents on
    image steps, captions), `PairBatches` (high- and low-res latents of the same clips), or any
    object with their methods; a `LatentDataset` given as `data` becomes a `LatentBatches`;
  - the objective: `denoise` (`walt.diffusion.diffusion_loss`: v-prediction, unweighted MSE,
    self-conditioning, frame prediction, label / caption dropout), `SuperResolution`
    (`walt.cascade.sr.sr_loss`), or any `objective(net, batch, schedule, loss_cfg, generator)
    -> (loss, stats)`; an objective's `checkpoint_extras` are stored with the weights.

Each optimizer step (paper §5.1): the global batch split over ranks and `grad_accum`
micro-batches, AdamW with warmup + cosine learning rate, gradient clipping, an EMA of the weights.
The loss's random draws come from a generator seeded by (seed, step, rank, micro-batch), and the
data position is part of every checkpoint, so a run interrupted at step k and resumed reproduces
the uninterrupted run exactly (same device, thread count and world size). Checkpoints (model, EMA,
optimiser, scheduler, data position, RNG states, configs) are written atomically by rank 0 every
`ckpt_every` steps AND when SIGTERM / SIGINT arrives (the current step finishes first); a
non-finite loss or gradient raises `NonFiniteLossError` before the optimizer step and any save.
Parallelism, compile and activation checkpointing are applied from outside the model
(`walt.train.parallelize`); launch with torchrun for DDP / FSDP2.

Outputs in `out_dir` (rank 0): log.csv, tb/ (TensorBoard, if installed), checkpoints/, samples/
(`sample_every`), and walt.safetensors / walt_ema.safetensors (the `WALT.save` format, read by
`walt.cascade.Stage`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from walt.cascade.sr import SRConfig, sr_loss
from walt.checkpoint import save_checkpoint
from walt.config import config_to_dict
from walt.diffusion.loss import diffusion_loss
from walt.diffusion.schedule import DiffusionSchedule
from walt.train.batches import LatentBatches
from walt.train.precision import autocast_for, resolve_precision
from walt.train.common import (EMA, capture_rng_state, check_finite, check_parallel, checkpoint_path,
                               restore_rng_state, resume_point, run_steps, save_training_state, warmup_cosine_scheduler)
from walt.train.denoiser_config import DenoiserTrainConfig, DenoiserTrainResult, check_resumable
from walt.train.denoiser_outputs import TrainLog, write_samples
from walt.train.distributed import all_reduce_mean, barrier, get_rank, get_world_size, is_main
from walt.train.parallelize import (
    apply_training_wrappers,
    clip_grad_norm,
    gather_model_state,
    gather_optimizer_state,
    load_model_state,
    load_optimizer_state,
    no_grad_sync,
    wrap_model,
)

__all__ = ["DenoiserTrainConfig", "DenoiserTrainResult", "train_denoiser", "denoise", "SuperResolution"]

Objective = Callable[..., "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


# ----------------------------------------------------------------------------- objectives


def _text(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in ("text", "text_mask") if k in batch}


def denoise(net, batch, schedule, loss_cfg, generator):
    """The denoiser's loss (SPEC §3): `diffusion_loss` on batch["z"] with its labels and captions."""
    return diffusion_loss(net, batch["z"], schedule, loss_cfg, y=batch.get("y"), generator=generator, **_text(batch))


@dataclass(frozen=True)
class SuperResolution:
    """An SR stage's loss (SPEC §4): `sr_loss` on batch["z"] conditioned on batch["lowres"]."""

    sr: SRConfig = SRConfig()

    def __call__(self, net, batch, schedule, loss_cfg, generator):
        return sr_loss(net, batch["z"], batch["lowres"], schedule, loss_cfg, self.sr, generator=generator,
                       **_text(batch))

    @property
    def checkpoint_extras(self) -> dict[str, Any]:
        return {"sr_config": config_to_dict(self.sr), "stage": "sr"}


def _loss_seed(seed: int, step: int, rank: int, micro: int) -> int:
    return (((seed * 1_000_003 + step) * 1_009 + rank) * 101 + micro) % (2**63)


class _LossView:
    """What the objective needs from the network (config, null_class, call) over a DDP/FSDP wrapper.

    With `sync_calls` (FSDP2 on several ranks) every forward is a collective (parameter
    all-gathers), but `diffusion_loss` runs its extra no-grad self-conditioning pass only on ranks
    whose coin flips asked for it. Before each call the ranks agree (all-reduce MIN of
    "grad enabled"): a rank about to run its grad pass while another runs a no-grad pass first
    runs a discarded no-grad pass, so every rank makes the same collective calls in the same order.
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


# ----------------------------------------------------------------------------- the loop


def train_denoiser(
    cfg: DenoiserTrainConfig,
    net: nn.Module,
    data,
    out_dir: str | Path,
    image_dataset=None,
    vae: nn.Module | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_at: int | None = None,
    text_embeddings=None,
    objective: Objective = denoise,
    extras: dict[str, Any] | None = None,
) -> DenoiserTrainResult:
    """Train the WALT `net` (in place, on its current device) for `cfg.steps` steps.

    Args:
        net: a plain `WALT` (not wrapped). Under torchrun call `init_distributed()` first and pass
            the same freshly built network on every rank.
        data: a batch source (`walt.train.batches`) or a `LatentDataset` of video latents, read
            with `image_dataset` (1-frame image latents of the same VAE, `cfg.image_ratio` of the
            steps) and `text_embeddings` (its caption features, dropped with
            `cfg.loss.p_uncond_text`) by a `LatentBatches`.
        out_dir: log, checkpoints, samples and final weights go here (rank 0 writes).
        vae: optional autoencoder of the cache (checked by weights hash): periodic samples are
            decoded to PNG / GIF.
        resume: continue from the newest checkpoint in `out_dir/checkpoints` if any; with
            resume=False an out_dir that already holds checkpoints is refused.
        stop_at: end this call (with a checkpoint) once this many steps are done, keeping the
            schedule of `cfg.steps` (time-limited jobs; the next call resumes).
        objective: what a step minimises (`denoise`, `SuperResolution(sr)`, or your own).
        extras: more JSON entries for the exported weights (e.g. fps, class names).
    Returns:
        `DenoiserTrainResult`.
    Raises:
        NonFiniteLossError: the loss or gradient norm became NaN/inf (on every rank; nothing saved).
    """
    source = data if hasattr(data, "next_batch") else LatentBatches(
        data, cfg, labels=net.config.num_classes > 0, image_dataset=image_dataset, text=text_embeddings)
    run = _Run(cfg, net, source, objective, Path(out_dir), vae, resume)
    logger = TrainLog(run.out_dir, run.start if run.last_ckpt is not None else None, cfg.tensorboard) if is_main() else None
    completed, row, last_ckpt = run_steps(run, cfg, stop_at, logger, progress, "train", lambda r: dict(
        loss=f"{r['loss']:.4f}", tok_s=f"{r['tokens_per_s']:.0f}", clips_s=f"{r['clips_per_s']:.1f}"))
    if completed < cfg.steps:
        return DenoiserTrainResult(completed, row, last_ckpt, None, None, interrupted=True)
    model_path, ema_path = run.export(extras or {})
    return DenoiserTrainResult(cfg.steps, row, last_ckpt, model_path, ema_path)


class _Run:
    """One call's training state: the wrapped model, EMA, optimiser, schedule, batch source."""

    def __init__(self, cfg, net, source, objective, out_dir: Path, vae, resume: bool):
        self.cfg, self.net, self.source, self.objective, self.out_dir, self.vae = cfg, net, source, objective, out_dir, vae
        self.device = next(net.parameters()).device
        self.rank, self.world = get_rank(), get_world_size()
        self.walt_config = config_to_dict(net.config)
        self.objective_extras = dict(getattr(objective, "checkpoint_extras", {}))
        source.check(net.config)
        if vae is not None:
            from walt.data.latent_dataset import vae_fingerprint

            if vae_fingerprint(vae) != source.vae_sha256:
                raise ValueError("the given vae is not the autoencoder that made the latent cache; pass that one or none")
        check_parallel(cfg.parallel, self.world, is_main())
        # Resume, part 1: read and check the checkpoint before anything is built or wrapped.
        state, self.last_ckpt = resume_point(out_dir / "checkpoints", resume)
        self.start, self.epoch = 0, None
        if state is not None:
            check_resumable(state, cfg, self.walt_config, source.vae_sha256, self.last_ckpt, self.objective_extras,
                            source.text_info)
            source.load_state_dict(state["data"])
            self.start = int(state["step"])
        self._build()
        if state is not None:
            self._restore(state)

    def _build(self) -> None:
        """EMA (copied before any wrapper), wrappers, optimiser, LR schedule, diffusion schedule."""
        cfg, net = self.cfg, self.net
        self.ema = EMA(net, cfg.ema_decay)
        self.model = apply_training_wrappers(net, cfg.parallel, compile=cfg.compile,
                                             activation_checkpointing=cfg.activation_checkpointing, device=self.device,
                                             find_unused_parameters=self.source.uses_images)
        if cfg.parallel == "fsdp":
            wrap_model(self.ema.module, "fsdp")  # the EMA shadow sharded like the model: update stays local
        elif self.world > 1:
            self.ema.module.load_state_dict(net.state_dict())  # DDP broadcast rank 0's weights: start the EMA there too
        self.loss_net = _LossView(self.model, net, sync_calls=cfg.parallel == "fsdp" and self.world > 1)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                     weight_decay=cfg.weight_decay)
        self.sched = warmup_cosine_scheduler(self.opt, cfg.warmup_steps, cfg.steps, cfg.min_lr / cfg.lr)
        self.schedule = DiffusionSchedule(cfg.diffusion)
        self.autocast = autocast_for(resolve_precision(cfg.precision, self.device), self.device)

    def _restore(self, state: dict[str, Any]) -> None:
        """Resume, part 2: weights, EMA, optimiser, scheduler, RNG (FSDP: each rank loads its shards)."""
        load_model_state(self.model, state["model"])
        load_model_state(self.ema.module, state["ema"]["shadow"])
        self.ema.num_updates = int(state["ema"]["num_updates"])
        # Stale .grad tensors from a caller's earlier run make the DCP optimiser loader skip its
        # lazy state initialisation; a resumed step starts from no gradients anyway.
        self.model.zero_grad(set_to_none=True)
        load_optimizer_state(self.model, self.opt, state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"])

    def step(self, step: int, stop_flag) -> tuple[dict[str, float], bool, dict[str, int]]:
        """One optimizer step -> (logs, whether any rank got a stop signal, throughput counts).

        `stop_flag` (a threading.Event) is read after the forward passes: a signal during the step still stops here.
        """
        cfg, device = self.cfg, self.device
        batch = self.source.next_batch(step)
        kind, self.epoch = batch.pop("kind", "video"), batch.pop("epoch", None)
        z = batch["z"]  # (B_rank, c, t, h, w)
        micro = z.shape[0] // cfg.grad_accum
        lr_now = self.opt.param_groups[0]["lr"]
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=device)
        logs: dict[str, float] = {}
        for m in range(cfg.grad_accum):
            mb = {k: v[m * micro:(m + 1) * micro].to(device) for k, v in batch.items()}
            gen = torch.Generator(device=device).manual_seed(_loss_seed(cfg.seed, step, self.rank, m))
            with no_grad_sync(self.model, enabled=m < cfg.grad_accum - 1):
                with self.autocast:
                    loss, st = self.objective(self.loss_net, mb, self.schedule, cfg.loss, gen)
                (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach().float()
            for k, v in st.items():
                if k != "loss":
                    logs[k] = logs.get(k, 0.0) + float(v) / cfg.grad_accum
        # One collective: the mean loss over ranks and whether any rank got a stop signal.
        flags = all_reduce_mean(torch.stack([loss_sum / cfg.grad_accum, torch.tensor(float(stop_flag.is_set()), device=device)]))
        loss_mean, stop_now = float(flags[0]), float(flags[1]) > 0
        check_finite(loss_mean, step, "diffusion loss")  # same value on every rank: all stop together
        grad_norm = clip_grad_norm(self.model.parameters(), cfg.grad_clip)
        check_finite(grad_norm, step, "gradient norm")
        self.opt.step()
        self.sched.step()
        self.ema.update(self.net)
        logs.update({"loss": loss_mean, f"loss_{kind}": loss_mean, "grad_norm": grad_norm, "lr": lr_now})
        p = self.net.config.patch_size
        clips = z.shape[0] * self.world
        return logs, stop_now, {"clips": clips, "tokens": clips * z.shape[2] * (z.shape[3] // p) * (z.shape[4] // p)}

    def _weights_extras(self) -> dict[str, Any]:
        return {"train_config": config_to_dict(self.cfg), "diffusion_config": config_to_dict(self.cfg.diffusion)}

    def save(self, step: int) -> Path:
        """A training-state checkpoint; gathering is collective under FSDP (every rank takes part, rank 0 writes)."""
        state = {
            "step": step, "data": self.source.state_dict(), **self._weights_extras(), "walt_config": self.walt_config,
            "latent_stats": self.source.stats.to_dict(), "cache": self.source.describe(), "world_size": self.world,
            "text_encoder": self.source.text_info, "objective": self.objective_extras,
            "model": gather_model_state(self.model),
            "ema": {"decay": self.ema.decay, "num_updates": self.ema.num_updates,
                    "shadow": gather_model_state(self.ema.module)},
            "optimizer": gather_optimizer_state(self.model, self.opt), "scheduler": self.sched.state_dict(),
            "rng": capture_rng_state(),
        }
        path = checkpoint_path(self.out_dir / "checkpoints", step)
        if is_main():
            save_training_state(path, state, keep_last=self.cfg.keep_checkpoints)
        barrier()
        return path

    def after_step(self, step: int) -> None:
        """Periodic DDIM samples of the EMA model (`cfg.sample_every`)."""
        if not (self.cfg.sample_every and step % self.cfg.sample_every == 0):
            return
        write_samples(self.ema.module, self.schedule, self.source.stats, self.out_dir / "samples", step, self.cfg,
                      self.vae, sample_on_all_ranks=self.cfg.parallel == "fsdp" and self.world > 1,
                      text_embeddings=getattr(self.source, "text", None))

    def export(self, extras: dict[str, Any]) -> tuple[Path, Path]:
        """The final networks (raw and EMA) in the `WALT.save` format, with what `Stage` reads back."""
        from walt.denoiser.transformer import CHECKPOINT_KIND

        extra = {"step": self.cfg.steps, **self._weights_extras(), **self.source.export_extras(),
                 **self.objective_extras, **extras}
        model_path, ema_path = self.out_dir / "walt.safetensors", self.out_dir / "walt_ema.safetensors"
        raw_state, ema_state = gather_model_state(self.model), gather_model_state(self.ema.module)
        if is_main():
            head = {"kind": CHECKPOINT_KIND, "config": self.walt_config}
            save_checkpoint(model_path, {**head, "model": raw_state, **extra})
            save_checkpoint(ema_path, {**head, "model": ema_state, "ema": True, **extra})
        barrier()
        return model_path, ema_path
