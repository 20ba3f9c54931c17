"""`walt train`: train the W.A.L.T transformer (stage 2, SPEC §2-3) on a latent cache.

    walt train --cache cache/videos --preset tiny --out runs/walt --steps 5000 --batch-size 32
    torchrun --nproc_per_node=8 -m walt train --cache cache/ucf --preset XL --out runs/xl --parallel ddp --bf16
    walt train --cache cache/t2v --text --preset tiny --out runs/t2v       # text-to-video (needs encode --text-encoder)

The network's latent size, channels and class count are taken from the cache (a `--set` of
`in_channels`, `input_size` or `num_classes` overrides that and is checked against it). `--set KEY=VALUE`
sets `WALTConfig` fields (e.g. `frame_conditioning=true` for frame prediction / long videos);
`--set train.KEY=VALUE` sets `DenoiserTrainConfig` fields (nested: `train.loss.p_frame_pred=0.5`,
`train.diffusion.num_timesteps=1000`). `--text` trains a text-conditioned model on the caption
features cached by `walt encode --text-encoder` (text_dim from the cache, no class labels unless
`--set num_classes=K`; captions dropped with `train.loss.p_uncond_text`, default 0.1, for
classifier-free guidance). Under torchrun every rank runs this same command;
`walt.train.distributed` joins the process group and only rank 0 prints and writes.

Outputs: RUN_DIR/checkpoints/ (resumable with --resume; SIGTERM / Ctrl-C save a checkpoint
first), log.csv, and `walt_ema.safetensors` / `walt.safetensors` for `walt sample`.
"""

from __future__ import annotations

import argparse

HELP = "train the window-attention diffusion transformer (stage 2) on a latent cache"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", required=True, help="latent cache folder written by `walt encode`")
    p.add_argument("--image-cache", default=None, help="optional cache of 1-frame image latents (joint image-video training)")
    p.add_argument("--image-ratio", type=float, default=None, help="fraction of steps on image batches (default 0.5 with --image-cache)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.csv, walt_ema.safetensors)")
    p.add_argument("--text", action="store_true",
                   help="text-to-video: condition on the caption features in CACHE/text (walt encode --text-encoder)")
    p.add_argument("--stage", default="base", choices=["base", "sr"],
                   help="base (default) or sr: a cascade super-resolution stage trained on --cache (high-res) "
                        "conditioned on --lowres-cache (same clips at half the resolution); see walt.cascade.train_sr")
    p.add_argument("--lowres-cache", default=None, help="--stage sr: latent cache of the same clips at half the resolution")
    p.add_argument("--preset", default="tiny", help="transformer preset: tiny | L | XL | L-k600 (default tiny)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field: KEY for the network, train.KEY for training (repeatable)")
    p.add_argument("--steps", type=int, default=60_000, help="optimizer steps (default 60000, the paper's UCF-101 run)")
    p.add_argument("--batch-size", type=int, default=32, help="global batch per step (paper: 256; default 32)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step")
    p.add_argument("--lr", type=float, default=5e-4, help="peak AdamW learning rate (default 5e-4, paper)")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warmup steps (default min(1000, steps/10))")
    p.add_argument("--parallel", default="none", choices=["none", "ddp", "fsdp"], help="data parallelism under torchrun")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--grad-checkpointing", action="store_true", help="activation checkpointing (less memory, slower)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--fp32", action="store_true", help="force fp32 even on CUDA")
    p.add_argument("--vae", default=None, help="autoencoder of the cache: periodic samples are decoded to PNG / GIF")
    p.add_argument("--sample-every", type=int, default=0, help="write samples of the EMA model every N steps (0: never)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--fps", type=float, default=8.0, help="frame rate stored with the model for `walt sample` (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (under torchrun: cuda:LOCAL_RANK when available)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fit_to_cache(cfg, ds, explicit: set[str], text=None):
    """Take latent size, channels and class count (and text_dim with --text) from the cache unless --set gave them."""
    from walt.config import replace_config

    c, t, h, w = ds.latent_shape
    overrides = {}
    if text is not None:
        if "text_dim" not in explicit:
            overrides["text_dim"] = text.dim
        if "num_classes" not in explicit:
            cfg = replace_config(cfg, num_classes=0)  # text-to-video: the caption is the condition
    if "in_channels" not in explicit:
        overrides["in_channels"] = c
    if "input_size" not in explicit:
        overrides["input_size"] = (max(t, 1), h, w)
    if "num_classes" not in explicit and cfg.num_classes > 0:
        overrides["num_classes"] = ds.num_classes  # 0 for an unlabelled cache: unconditional
    return replace_config(cfg, **overrides)


def _store_extras(path, extras: dict) -> None:
    """Add JSON extras (fps, class names) to a finished WALT checkpoint, atomically."""
    from walt.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(path)
    state.update(extras)
    save_checkpoint(path, state)


def run(args: argparse.Namespace) -> int:
    from walt.errors import UserError
    from walt.commands import args as A, files as F

    if args.stage == "sr":  # cascade super-resolution stage: its own loop (walt.cascade.train_sr)
        from walt.cascade.train_sr import run_cli

        return run_cli(args)
    if args.lowres_cache is not None:
        raise UserError("--lowres-cache is for --stage sr; add --stage sr or drop --lowres-cache")

    # ---- 1. numbers and flags ----
    steps = A.positive_int(args.steps, "--steps")
    batch = A.positive_int(args.batch_size, "--batch-size")
    accum = A.positive_int(args.grad_accum, "--grad-accum")
    A.finite_float(args.lr, "--lr", 0.0, strict=True)
    A.finite_float(args.fps, "--fps", 0.0, strict=True)
    A.positive_int(args.log_every, "--log-every")
    A.positive_int(args.ckpt_every, "--ckpt-every")
    A.positive_int(args.sample_every, "--sample-every", minimum=0)
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.bf16 and args.fp32:
        raise UserError("--bf16 and --fp32 contradict each other; give one")
    if batch % accum:
        raise UserError(f"--batch-size {batch} must be divisible by --grad-accum {accum}")
    warmup = args.warmup_steps if args.warmup_steps is not None else min(1000, steps // 10)
    A.positive_int(warmup, "--warmup-steps", minimum=0)
    if args.image_ratio is not None:
        A.finite_float(args.image_ratio, "--image-ratio", 0.0)
        if args.image_ratio > 1 or args.image_cache is None:
            raise UserError("--image-ratio must be in [0, 1] and needs --image-cache")
    sets = A.parse_sets(args.set)
    train_sets, model_sets = A.split_sets(sets, "train")

    # ---- 2. caches ----
    from walt.data.latent_dataset import LatentDataset

    with A.user_errors("--cache: "):
        ds = LatentDataset(args.cache)
    text = None
    if args.text:
        from walt.text import TextEmbeddings

        with A.user_errors("--text: "):
            text = TextEmbeddings(args.cache)
        if text.vae_sha256 != ds.vae_sha256 or len(text) != len(ds):
            raise UserError(f"--text: the caption features in {args.cache}/text belong to another latent cache; "
                            "re-run `walt encode ... --text-encoder minilm`")
    image_ds = None
    if args.image_cache is not None:
        with A.user_errors("--image-cache: "):
            image_ds = LatentDataset(args.image_cache, vae=ds.vae_sha256)
        if not image_ds.is_image_cache:
            raise UserError(f"--image-cache {args.image_cache} holds {image_ds.latent_shape[1]}-frame latents, not images; "
                            "encode it with `walt encode --frames 1`")

    # ---- 3. configs ----
    from walt.denoiser import WALT, get_preset
    from walt.train.denoiser import DenoiserTrainConfig, _check_data, _check_resumable

    with A.user_errors("--preset: "):
        net_cfg = get_preset(args.preset)
    with A.user_errors("the cache does not fit the preset: "):
        net_cfg = _fit_to_cache(net_cfg, ds, set(model_sets), text)
    net_cfg = A.apply_sets(net_cfg, model_sets)
    precision = "bf16" if args.bf16 else ("fp32" if args.fp32 else "auto")
    with A.user_errors():
        train_cfg = DenoiserTrainConfig(
            steps=steps, batch_size=batch, grad_accum=accum, lr=args.lr, warmup_steps=warmup, seed=args.seed,
            precision=precision, activation_checkpointing=args.grad_checkpointing, compile=args.compile,
            parallel=args.parallel, log_every=args.log_every, ckpt_every=args.ckpt_every,
            sample_every=args.sample_every,
            image_ratio=(0.5 if args.image_ratio is None else args.image_ratio) if image_ds is not None else 0.0,
        )
    train_cfg = A.apply_sets(train_cfg, train_sets)

    # ---- 4. the network against the cache (channels, size, labels) before building it big ----
    class _Shape:  # _check_data needs only .config
        config = net_cfg

    with A.user_errors("--cache does not fit the network: "):
        _check_data(ds, _Shape, "video cache")
        if image_ds is not None:
            _check_data(image_ds, _Shape, "image cache")
    if text is not None:
        from walt.train.denoiser import _check_text

        with A.user_errors("--text: "):
            _check_text(text, ds, _Shape)
    elif net_cfg.text_dim > 0:
        raise UserError(f"the network has text_dim={net_cfg.text_dim} but --text was not given; "
                        "pass --text (with caption features in the cache) or drop text_dim")

    vae = None
    if args.vae is not None:
        from walt.data.latent_dataset import vae_fingerprint

        vae, _, vae_path = F.load_vae(args.vae)
        if vae_fingerprint(vae) != ds.vae_sha256:
            raise UserError(f"--vae {vae_path} is not the autoencoder that made --cache {args.cache}; "
                            "pass that one, or re-encode the cache with this one")

    # ---- 5. resume state of --out ----
    from walt.config import config_to_dict
    from walt.train.common import latest_checkpoint, load_training_state

    out = F.check_out_not_file(args.out)
    last = latest_checkpoint(out / "checkpoints")
    if last is not None:
        if not args.resume:
            raise UserError(f"--out {out} already holds a run (newest checkpoint {last.name}); "
                            "pass --resume to continue it or choose an empty folder")
        with A.user_errors(f"cannot resume {last}: "):
            last_state = load_training_state(last)
            _check_resumable(last_state, train_cfg, config_to_dict(net_cfg), ds.vae_sha256, last)
            if (last_state.get("text_encoder") or {}).get("weights_id") != (text.weights_id if text else None):
                raise ValueError("it was trained with other caption features (or with/without --text); "
                                 "use the same cache and flags, or another --out")

    # ---- 6. devices (torchrun: join the group), then the output folder ----
    from walt.train.distributed import get_world_size, init_distributed, is_main, shutdown

    with A.user_errors():
        info = init_distributed()
    device = info.device if info.world_size > 1 else F.pick_device(args.device)
    existed = out.is_dir()
    F.writable_dir(out)

    import torch

    from walt.train.common import NonFiniteLossError
    from walt.train.denoiser import train_denoiser

    torch.manual_seed(args.seed)  # same initial weights on every rank
    code = 0
    with F.cleanup_if_empty(out, existed):
        net = WALT(net_cfg).to(device)
        if vae is not None:
            vae = vae.to(device)
        if is_main():
            n = sum(p.numel() for p in net.parameters())
            c, t, h, w = ds.latent_shape
            print(f"walt train: WALT-{args.preset} ({n / 1e6:.2f}M params, {net_cfg.depth} layers, width "
                  f"{net_cfg.hidden_size}, {net_cfg.num_classes} classes"
                  f"{', text ' + text.encoder_name if text is not None else ''}) on {len(ds)} latents (c,t,h,w)="
                  f"{(c, t, h, w)}{' + ' + str(len(image_ds)) + ' images' if image_ds is not None else ''}, "
                  f"{steps} steps x {batch} clips, {get_world_size()} process(es), device {device}, out {out}")
        try:
            result = train_denoiser(train_cfg, net, ds, out, image_dataset=image_ds, vae=vae,
                                    resume=args.resume, progress=not args.no_progress, text_embeddings=text)
        except NonFiniteLossError as e:
            if is_main():
                print(f"walt train: error: {A.first_line(e)}; lower --lr or resume from the last checkpoint")
            code = 1
    if code == 0 and is_main():
        if result.interrupted:
            print(f"walt train: stopped at step {result.step}; checkpoint {result.checkpoint} "
                  f"(run again with --resume to continue)")
        else:
            extras = {"fps": float(args.fps)}
            names = ds.index.get("dataset", {}).get("class_names")
            if names and net_cfg.num_classes == len(names):
                extras["class_names"] = list(names)
            for path in (result.model_path, result.ema_path):
                _store_extras(path, extras)
            loss = result.metrics.get("loss")
            print(f"walt train: done at step {result.step}" + (f", last loss {loss:.4f}" if loss is not None else ""))
            print(f"walt train: wrote {result.ema_path} (EMA, use this one) and {result.model_path}")
    if info.world_size > 1:
        shutdown(code)
    return code
