"""`walt train-vae`: train the causal 3D CNN autoencoder (stage 1, SPEC §1) on a dataset.

    walt train-vae --data builtin --preset tiny --out runs/vae --steps 2000 --frames 17 --resolution 64
    walt train-vae --data /data/UCF-101 --preset ucf101 --set latent_channels=16 --out runs/vae16 --resume
    torchrun --nproc_per_node=8 -m walt train-vae --data /data/UCF-101 --preset ucf101 --out runs/vae \
        --parallel ddp --batch-size 256 --grad-accum 4 --grad-checkpointing --sample-every 1000

`--set key=value` overrides the autoencoder config (`CausalVAEConfig` fields); `--set train.key=value`
overrides the training config (`VAETrainConfig`, nested: `train.loss.kl_weight=1e-5`). `--batch-size`
is the global batch, split over the torchrun processes and then `--grad-accum` micro-batches.
Under torchrun every rank runs this same command; `walt.train.distributed` joins the process group
and only rank 0 prints and writes. Writes `RUN_DIR/checkpoints/` (resumable with --resume;
SIGTERM / Ctrl-C save a checkpoint first), `log.csv` (+ `tb/` when TensorBoard is installed),
`samples/step_*.png` (held-out clips vs reconstructions, `--sample-every`), and the final
`vae.safetensors` / `vae_ema.safetensors` (the EMA one is what `walt encode` picks from a run folder),
each with the per-channel latent statistics measured on `--stats-batches` batches.
"""

from __future__ import annotations

import argparse

HELP = "train the causal 3D autoencoder (stage 1) on the built-in dataset or a video folder"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="'builtin' (procedural moving shapes) or a video folder / .csv / UCF-101 root")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.csv, vae.safetensors)")
    p.add_argument("--preset", default="tiny", help="autoencoder preset: tiny | ucf101 | imagenet (default tiny)")
    from walt.commands.args import add_clip_sampling_args, add_training_args

    add_training_args(p, "autoencoder", 10_000, "default 10000", 8, "default 8; MAGVIT-v2: 256", 1e-4,
                      "default 1e-4, MAGVIT-v2", "default min(1000, steps/10)",
                      "data parallelism under torchrun: ddp (fsdp is refused: the autoencoder's weights fit one "
                      "device, its memory is activations)", "torch.compile the autoencoder")
    p.add_argument("--frames", type=int, default=17, help="frames per clip, 1 + 4k (default 17)")
    p.add_argument("--resolution", type=int, default=128, help="square clip size in pixels (default 128)")
    p.add_argument("--discriminator", default="auto", choices=["auto", "none", "tiny", "small", "default"],
                   help="adversarial loss discriminator size; auto = tiny for the tiny preset, else default")
    p.add_argument("--num-samples", type=int, default=None,
                   help="dataset size: clips of the built-in dataset (default 1024) / first N files of a folder")
    add_clip_sampling_args(p)  # --frame-stride N | --fps F (frames of real videos)
    p.add_argument("--sample-every", type=int, default=0,
                   help="every N steps write samples/step_N.png: held-out clips vs EMA reconstructions (0: never)")
    p.add_argument("--sample-clips", type=int, default=4, help="held-out clips in each sample PNG (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--stats-batches", type=int, default=8,
                   help="batches for the latent mean/std stored with the final weights (0: skip)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (under torchrun: cuda:LOCAL_RANK when available)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def split_holdout(ds, data_arg: str, clips: int, frames: int, resolution: int, seed: int):
    """(training dataset, (clips, 3, T, H, W) held-out clips) for the reconstruction samples.

    Built-in data: clips of another seed (the same distribution, never trained on). A folder: its
    last `clips` items, removed from the training set.
    """
    import torch
    from torch.utils.data import Subset

    from walt.data import SyntheticVideos
    from walt.errors import UserError

    if data_arg == "builtin":
        held = SyntheticVideos(clips, num_frames=frames, resolution=resolution, seed=seed + 10_007)
        return ds, torch.stack([held[i]["video"] for i in range(clips)])
    n = len(ds)
    if n <= clips:
        raise UserError(f"--data has {n} clips, too few to hold out --sample-clips {clips}; lower --sample-clips")
    train = Subset(ds, range(n - clips))
    for key in ("class_names", "frame_stride", "fps"):
        setattr(train, key, getattr(ds, key, None))
    print(f"walt train-vae: holding out the last {clips} clips of --data for the reconstruction samples")
    return train, torch.stack([ds[i]["video"] for i in range(n - clips, n)])


def stats_batches(ds, batch_size: int, count: int, seed: int):
    """`count` batches (B, 3, T, H, W) of a seeded permutation of `ds`, for the latent statistics."""
    import torch

    from walt.train.batches import ResumableBatchSampler

    sampler = ResumableBatchSampler(len(ds), min(batch_size, len(ds)), seed=seed + 1, rank=0, world_size=1)
    for _ in range(count):
        yield torch.stack([ds[int(i)]["video"] for i in sampler.next_global()])


def run(args: argparse.Namespace) -> int:
    """Check flags, configs and a run to resume, join torchrun's group, read the data, then train."""
    from walt.commands import args as A, files as F
    from walt.errors import UserError
    from walt.train.distributed import init_distributed, is_main

    model_cfg, train_cfg = _configs(args)
    out = F.check_out_not_file(args.out)
    last = _check_resume(args, out, model_cfg, train_cfg)
    with A.user_errors():
        info = init_distributed()
    if args.batch_size % (info.world_size * args.grad_accum):
        raise UserError(f"--batch-size {args.batch_size} must be divisible by processes x --grad-accum = "
                        f"{info.world_size} x {args.grad_accum}")
    if info.world_size > 1 and train_cfg.parallel == "none":
        raise UserError(f"{info.world_size} processes with --parallel none would train unsynchronised copies; "
                        "pass --parallel ddp")
    device = info.device if info.world_size > 1 else F.pick_device(args.device)
    if last is None and args.resume and is_main():
        print(f"walt train-vae: no checkpoint in {out / 'checkpoints'}; starting a new run")
    ds = F.dataset_from_arg(args.data, args.frames, args.resolution, args.num_samples, args.seed,
                            model_cfg.temporal_factor, frame_stride=args.frame_stride, fps=args.fps)
    holdout = None
    if train_cfg.sample_every > 0:
        ds, holdout = split_holdout(ds, args.data, train_cfg.sample_clips, args.frames, args.resolution, args.seed)
    if len(ds) < args.batch_size:
        raise UserError(f"--data has {len(ds)} clips, fewer than one batch of {args.batch_size}; "
                        "lower --batch-size or add data")
    return _train(args, model_cfg, train_cfg, ds, holdout, out, device, info.world_size)


def _configs(args):
    """(CausalVAEConfig, VAETrainConfig) from the flags and --set KEY / --set train.KEY."""
    from walt.autoencoder import preset_config
    from walt.autoencoder.discriminator import DISCRIMINATOR_PRESETS
    from walt.commands import args as A
    from walt.errors import UserError
    from walt.train.vae import VAETrainConfig
    from walt.train.vae_config import FSDP_REFUSAL

    steps = A.positive_int(args.steps, "--steps")
    batch = A.positive_int(args.batch_size, "--batch-size")
    accum = A.positive_int(args.grad_accum, "--grad-accum")
    A.finite_float(args.lr, "--lr", 0.0, strict=True)
    A.positive_int(args.log_every, "--log-every")
    A.positive_int(args.ckpt_every, "--ckpt-every")
    A.positive_int(args.stats_batches, "--stats-batches", minimum=0)
    A.positive_int(args.sample_every, "--sample-every", minimum=0)
    A.positive_int(args.sample_clips, "--sample-clips")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.num_samples is not None:
        A.positive_int(args.num_samples, "--num-samples")
    if args.bf16 and args.fp32:
        raise UserError("--bf16 and --fp32 contradict each other; give one")
    if args.parallel == "fsdp":
        raise UserError(FSDP_REFUSAL.replace("parallel='fsdp'", "--parallel fsdp").replace(
            "parallel='ddp' with activation_checkpointing and/or grad_accum",
            "--parallel ddp with --grad-checkpointing and/or --grad-accum"))
    if batch % accum:
        raise UserError(f"--batch-size {batch} must be divisible by --grad-accum {accum}")
    warmup = args.warmup_steps if args.warmup_steps is not None else min(1000, steps // 10)
    A.positive_int(warmup, "--warmup-steps", minimum=0)
    train_sets, model_sets = A.split_sets(A.parse_sets(args.set), "train")
    with A.user_errors("--preset: "):
        model_cfg = preset_config(args.preset)
    model_cfg = A.apply_sets(model_cfg, model_sets)
    A.check_frames(args.frames, model_cfg.temporal_factor)
    A.check_resolution(args.resolution, model_cfg.spatial_factor)
    disc_name = args.discriminator if args.discriminator != "auto" else ("tiny" if args.preset == "tiny" else "default")
    with A.user_errors():
        train_cfg = VAETrainConfig(
            steps=steps, batch_size=batch, grad_accum=accum, lr=args.lr, warmup_steps=warmup, seed=args.seed,
            log_every=args.log_every, ckpt_every=args.ckpt_every,
            precision="bf16" if args.bf16 else ("fp32" if args.fp32 else "auto"),
            activation_checkpointing=args.grad_checkpointing, compile=args.compile, parallel=args.parallel,
            sample_every=args.sample_every, sample_clips=args.sample_clips,
            discriminator=None if disc_name == "none" else DISCRIMINATOR_PRESETS[disc_name](),
        )
    return model_cfg, A.apply_sets(train_cfg, train_sets)


def _check_resume(args, out, model_cfg, train_cfg):
    """The newest checkpoint of --out (None: a new run); a run there needs --resume and the same settings."""
    from walt.commands import args as A
    from walt.config import config_to_dict
    from walt.errors import UserError
    from walt.train.common import latest_checkpoint, load_training_state
    from walt.train.vae_config import check_resumable

    last = latest_checkpoint(out / "checkpoints")
    if last is not None:
        if not args.resume:
            raise UserError(f"--out {out} already holds a run (newest checkpoint {last.name}); "
                            "pass --resume to continue it or choose an empty folder")
        with A.user_errors(f"cannot resume {last}: "):
            check_resumable(load_training_state(last), train_cfg, config_to_dict(model_cfg), last)
    return last


def _train(args, model_cfg, train_cfg, ds, holdout, out, device, world: int) -> int:
    """Make the output folder, build the autoencoder (same weights on every rank) and train it."""
    import torch

    from walt.autoencoder import CausalVAE
    from walt.commands import args as A, files as F
    from walt.train.common import NonFiniteLossError
    from walt.train.distributed import is_main, shutdown
    from walt.train.vae import train_vae

    existed = out.is_dir()
    F.writable_dir(out)
    code, result = 0, None
    with F.cleanup_if_empty(out, existed):
        torch.manual_seed(args.seed)  # the same initial weights on every rank
        vae = CausalVAE(model_cfg).to(device)
        if is_main():
            n_params = sum(p.numel() for p in vae.parameters())
            print(f"walt train-vae: {args.preset} autoencoder ({n_params / 1e6:.2f}M params, latent "
                  f"{model_cfg.latent_channels}ch, /{model_cfg.spatial_factor} space /{model_cfg.temporal_factor} time) "
                  f"on {F.describe_dataset(ds)} of {args.frames}x{args.resolution}x{args.resolution}, "
                  f"{train_cfg.steps} steps x {train_cfg.batch_size} clips, {world} process(es), device {device}, "
                  f"out {out}")
        try:
            result = train_vae(train_cfg, vae, ds, out, resume=args.resume, progress=not args.no_progress,
                               holdout=holdout)
        except NonFiniteLossError as e:
            if is_main():
                print(f"walt train-vae: error: {A.first_line(e)}; lower --lr or resume from that checkpoint")
            code = 1
    if code == 0 and is_main():
        code = _finish(result, args, ds, train_cfg.batch_size, device)
    if world > 1:
        shutdown(code)
    return code


def _finish(result, args: argparse.Namespace, ds, batch: int, device) -> int:
    """Rank 0 after training: latent statistics into the final weights, then the summary lines."""
    from walt.autoencoder import CausalVAE, measure_latent_stats

    if result.interrupted:
        print(f"walt train-vae: stopped at step {result.step}; checkpoint {result.checkpoint} "
              "(run again with --resume to continue)")
        return 0
    # Latent statistics stored with the final weights (SPEC §1: latents are normalised).
    if args.stats_batches > 0:
        for path in (result.vae_path, result.ema_path):
            model, extra = CausalVAE.load(path, map_location=device, with_extra=True)
            stats = measure_latent_stats(model, stats_batches(ds, batch, args.stats_batches, args.seed))
            extra["latent_stats"] = stats.to_dict()
            model.save(path, **extra)
        print(f"walt train-vae: latent stats over {args.stats_batches} batches: mean "
              f"{[round(float(m), 3) for m in stats.mean]}, std {[round(float(s), 3) for s in stats.std]}")
    m = result.metrics
    psnr = f", last PSNR {m['psnr']:.2f} dB" if "psnr" in m else ""
    print(f"walt train-vae: done at step {result.step}{psnr}")
    print(f"walt train-vae: wrote {result.ema_path} (EMA, use this one) and {result.vae_path}")
    return 0
