"""`walt train-vae`: train the causal 3D CNN autoencoder (stage 1, SPEC §1) on a dataset.

    walt train-vae --data builtin --preset tiny --out runs/vae --steps 2000 --frames 17 --resolution 64
    walt train-vae --data /data/UCF-101 --preset ucf101 --set latent_channels=16 --out runs/vae16 --resume

`--set key=value` overrides the autoencoder config (`CausalVAEConfig` fields); `--set train.key=value`
overrides the training config (`VAETrainConfig`, nested: `train.loss.kl_weight=1e-5`). Writes
`RUN_DIR/checkpoints/` (resumable), `log.csv`, and the final `vae.safetensors` / `vae_ema.safetensors`
(the EMA one is what `walt encode` picks from a run folder), each with the per-channel latent
statistics measured on `--stats-batches` batches.
"""

from __future__ import annotations

import argparse

HELP = "train the causal 3D autoencoder (stage 1) on the built-in dataset or a video folder"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="'builtin' (procedural moving shapes) or a video folder / .csv / UCF-101 root")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.csv, vae.safetensors)")
    p.add_argument("--preset", default="tiny", help="autoencoder preset: tiny | ucf101 | imagenet (default tiny)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field: KEY for the autoencoder, train.KEY for training (repeatable)")
    p.add_argument("--steps", type=int, default=10_000, help="optimizer steps (default 10000)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per step (default 8)")
    p.add_argument("--frames", type=int, default=17, help="frames per clip, 1 + 4k (default 17)")
    p.add_argument("--resolution", type=int, default=128, help="square clip size in pixels (default 128)")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4, MAGVIT-v2)")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warmup steps (default min(1000, steps/10))")
    p.add_argument("--discriminator", default="auto", choices=["auto", "none", "tiny", "small", "default"],
                   help="adversarial loss discriminator size; auto = tiny for the tiny preset, else default")
    p.add_argument("--num-samples", type=int, default=None,
                   help="dataset size: clips of the built-in dataset (default 1024) / first N files of a folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--stats-batches", type=int, default=8,
                   help="batches for the latent mean/std stored with the final weights (0: skip)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward passes")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def make_batch_fn(dataset, batch_size: int, seed: int):
    """`step -> (B, 3, T, H, W)`, a deterministic function of the step (what `train_vae` needs to resume exactly).

    Global sample position p = step * B + j walks a seeded permutation of the dataset per epoch
    (epoch = p // N); folder datasets draw their clip start from (seed, index, epoch).
    """
    import torch

    n = len(dataset)
    base = getattr(dataset, "dataset", dataset)  # a Subset's underlying dataset
    perms: dict[int, torch.Tensor] = {}

    def perm(epoch: int) -> torch.Tensor:
        if epoch not in perms:
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            perms.clear()  # at most two epochs are live in one batch
            perms[epoch] = torch.randperm(n, generator=g)
        return perms[epoch]

    def batch_fn(step: int) -> torch.Tensor:
        clips = []
        for j in range(batch_size):
            epoch, pos = divmod(step * batch_size + j, n)
            if hasattr(base, "set_epoch"):
                base.set_epoch(epoch)
            clips.append(dataset[int(perm(epoch)[pos])]["video"])  # (3, T, H, W)
        return torch.stack(clips)  # (B, 3, T, H, W)

    return batch_fn


def run(args: argparse.Namespace) -> int:

    from walt.autoencoder import CausalVAE, measure_latent_stats, preset_config
    from walt.autoencoder.discriminator import DISCRIMINATOR_PRESETS
    from walt.cli import UserError
    from walt.commands import _common as C
    from walt.train.common import NonFiniteLossError, latest_checkpoint, load_training_state
    from walt.train.vae import VAETrainConfig, _check_resumable, train_vae

    # ---- 1. numbers and flags ----
    steps = C.positive_int(args.steps, "--steps")
    batch = C.positive_int(args.batch_size, "--batch-size")
    C.finite_float(args.lr, "--lr", 0.0, strict=True)
    C.positive_int(args.log_every, "--log-every")
    C.positive_int(args.ckpt_every, "--ckpt-every")
    C.positive_int(args.stats_batches, "--stats-batches", minimum=0)
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.num_samples is not None:
        C.positive_int(args.num_samples, "--num-samples")
    warmup = args.warmup_steps if args.warmup_steps is not None else min(1000, steps // 10)
    C.positive_int(warmup, "--warmup-steps", minimum=0)
    sets = C.parse_sets(args.set)
    train_sets, model_sets = C.split_sets(sets, "train")

    # ---- 2. configs (unknown preset / key -> one line naming it) ----
    with C.user_errors("--preset: "):
        model_cfg = preset_config(args.preset)
    model_cfg = C.apply_sets(model_cfg, model_sets)
    C.check_frames(args.frames, model_cfg.temporal_factor)
    C.check_resolution(args.resolution, model_cfg.spatial_factor)
    disc_name = args.discriminator
    if disc_name == "auto":
        disc_name = "tiny" if args.preset == "tiny" else "default"
    with C.user_errors():
        train_cfg = VAETrainConfig(
            steps=steps, batch_size=batch, lr=args.lr, warmup_steps=warmup, seed=args.seed,
            log_every=args.log_every, ckpt_every=args.ckpt_every, precision="bf16" if args.bf16 else "fp32",
            discriminator=None if disc_name == "none" else DISCRIMINATOR_PRESETS[disc_name](),
        )
    train_cfg = C.apply_sets(train_cfg, train_sets)
    device = C.pick_device(args.device)

    # ---- 3. resume state of --out ----
    out = C.check_out_not_file(args.out)
    last = latest_checkpoint(out / "checkpoints")
    if last is not None:
        if not args.resume:
            raise UserError(f"--out {out} already holds a run (newest checkpoint {last.name}); "
                            "pass --resume to continue it or choose an empty folder")
        from walt.config import config_to_dict

        with C.user_errors(f"cannot resume {last}: "):
            _check_resumable(load_training_state(last), train_cfg, config_to_dict(model_cfg), last)
    elif args.resume:
        print(f"walt train-vae: no checkpoint in {out / 'checkpoints'}; starting a new run")

    # ---- 4. data (empty / unreadable -> one line) ----
    ds = C.dataset_from_arg(args.data, args.frames, args.resolution, args.num_samples, args.seed,
                            model_cfg.temporal_factor)
    batch_fn = make_batch_fn(ds, batch, args.seed)

    # ---- 5. output folder, last ----
    existed = out.is_dir()
    C.writable_dir(out)

    with C.cleanup_if_empty(out, existed):
        import torch

        torch.manual_seed(args.seed)
        vae = CausalVAE(model_cfg).to(device)
        n_params = sum(p.numel() for p in vae.parameters())
        print(f"walt train-vae: {args.preset} autoencoder ({n_params / 1e6:.2f}M params, latent "
              f"{model_cfg.latent_channels}ch, /{model_cfg.spatial_factor} space /{model_cfg.temporal_factor} time) "
              f"on {C.describe_dataset(ds)} of {args.frames}x{args.resolution}x{args.resolution}, "
              f"{steps} steps x {batch} clips, device {device}, out {out}")
        try:
            result = train_vae(train_cfg, vae, batch_fn, out, resume=args.resume, progress=not args.no_progress)
        except NonFiniteLossError as e:
            print(f"walt train-vae: error: {C.first_line(e)}; lower --lr or resume from that checkpoint")
            return 1

    # ---- 6. latent statistics stored with the final weights (SPEC §1: normalise latents) ----
    if args.stats_batches > 0:
        for path in (result.vae_path, result.ema_path):
            model, extra = CausalVAE.load(path, map_location=device, with_extra=True)
            stats = measure_latent_stats(model, (batch_fn(steps + i) for i in range(args.stats_batches)))
            extra["latent_stats"] = stats.to_dict()
            model.save(path, **extra)
        print(f"walt train-vae: latent stats over {args.stats_batches} batches: mean "
              f"{[round(float(m), 3) for m in stats.mean]}, std {[round(float(s), 3) for s in stats.std]}")
    m = result.metrics
    psnr = f", last PSNR {m['psnr']:.2f} dB" if "psnr" in m else ""
    print(f"walt train-vae: done at step {result.step}{psnr}")
    print(f"walt train-vae: wrote {result.ema_path} (EMA, use this one) and {result.vae_path}")
    return 0
