"""`walt train`: train the W.A.L.T transformer (stage 2, SPEC §2-3) on a latent cache, or an SR stage.

    walt train --cache cache/videos --preset tiny --out runs/walt --steps 5000 --batch-size 32
    torchrun --nproc_per_node=8 -m walt train --cache cache/ucf --preset XL --out runs/xl --parallel ddp --bf16
    walt train --cache cache/t2v --text --preset tiny --out runs/t2v       # text-to-video (needs encode --text-encoder)
    walt train --stage sr --preset sr1-tiny --cache cache/hi --lowres-cache cache/lo [--text] --out runs/sr1

The network's latent size, channels and class count are taken from the cache (a `--set` of
`in_channels`, `input_size` or `num_classes` overrides that and is checked against it). `--set KEY=VALUE`
sets `WALTConfig` fields (e.g. `frame_conditioning=true` for frame prediction / long videos);
`--set train.KEY=VALUE` sets `DenoiserTrainConfig` fields (nested: `train.loss.p_frame_pred=0.5`,
`train.diffusion.num_timesteps=1000`). `--text` trains a text-conditioned model on the caption
features cached by `walt encode --text-encoder` (text_dim from the cache, no class labels unless
`--set num_classes=K`; captions dropped with `train.loss.p_uncond_text`, default 0.1, for
classifier-free guidance). Under torchrun every rank runs this same command and only rank 0
prints and writes.

`--stage sr` (W.A.L.T §4): a super-resolution stage trained on `--cache` (high-res) conditioned on
`--lowres-cache` (the same clips at half the resolution, best `walt encode --downsample-from`), in
the same loop (`walt.train.denoiser_loop`, objective `SuperResolution`): DDP, --resume and SIGTERM
checkpoints work as for the base model. Unless `--set` gives them, the preset's windows are
fitted to the cache's token grid (`fit_window`); `--set train.sr.KEY=VALUE` sets `SRConfig` fields.

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
                        "conditioned on --lowres-cache (same clips at half the resolution)")
    p.add_argument("--lowres-cache", default=None, help="--stage sr: latent cache of the same clips at half the resolution")
    p.add_argument("--preset", default="tiny", help="transformer preset: tiny | L | XL | L-k600 (default tiny)")
    from walt.commands.args import add_training_args

    add_training_args(p, "network", 60_000, "default 60000, the paper's UCF-101 run", 32, "paper: 256; default 32",
                      5e-4, "AdamW, default 5e-4, paper", "default min(1000, steps/10); --stage sr: min(500, steps/10)",
                      "data parallelism under torchrun", "torch.compile the network")
    p.add_argument("--vae", default=None, help="autoencoder of the cache: periodic samples are decoded to PNG / GIF")
    p.add_argument("--sample-every", type=int, default=0, help="write samples of the EMA model every N steps (0: never)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--fps", type=float, default=8.0, help="frame rate stored with the model for `walt sample` (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (under torchrun: cuda:LOCAL_RANK when available)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Check flags, caches and configs (and a run to resume), then train in the one loop."""
    from walt.errors import UserError

    sr = args.stage == "sr"
    if sr and args.lowres_cache is None:
        raise UserError("--stage sr needs --lowres-cache: the same clips encoded at half the resolution")
    if not sr and args.lowres_cache is not None:
        raise UserError("--lowres-cache is for --stage sr; add --stage sr or drop --lowres-cache")
    if sr and (args.image_cache is not None or args.sample_every > 0):
        raise UserError(f"{'--image-cache' if args.image_cache is not None else '--sample-every'} is not supported "
                        "with --stage sr (an SR stage trains on pairs of caches); drop it")
    train_cfg, sets = _train_config(args, warmup_cap=500 if sr else 1000)
    data, text = _data(args, train_cfg)
    net_cfg, objective = _net_config(args, data, text, sets["model"], sets.get("sr", {}))
    vae = _check_vae(args, data)
    out = _check_resume(args, train_cfg, net_cfg, data, text, objective)
    return _train(args, train_cfg, net_cfg, data, text, objective, vae, out)


def _train_config(args, warmup_cap: int):
    """(DenoiserTrainConfig from the flags and --set train.KEY, the other --set values by prefix)."""
    from walt.commands import args as A
    from walt.errors import UserError
    from walt.train.denoiser_config import DenoiserTrainConfig

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
    warmup = args.warmup_steps if args.warmup_steps is not None else min(warmup_cap, steps // 10)
    A.positive_int(warmup, "--warmup-steps", minimum=0)
    if args.image_ratio is not None:
        A.finite_float(args.image_ratio, "--image-ratio", 0.0)
        if args.image_ratio > 1 or args.image_cache is None:
            raise UserError("--image-ratio must be in [0, 1] and needs --image-cache")
    train_sets, model_sets = A.split_sets(A.parse_sets(args.set), "train")
    sr_sets, train_sets = A.split_sets(train_sets, "sr")
    kw = {"ema_decay": 0.999} if args.stage == "sr" else {}  # an SR stage: a shorter average (a project choice)
    joint = args.image_cache is not None
    with A.user_errors():
        cfg = DenoiserTrainConfig(
            steps=steps, batch_size=batch, grad_accum=accum, lr=args.lr, warmup_steps=warmup, seed=args.seed,
            precision="bf16" if args.bf16 else ("fp32" if args.fp32 else "auto"),
            activation_checkpointing=args.grad_checkpointing, compile=args.compile, parallel=args.parallel,
            log_every=args.log_every, ckpt_every=args.ckpt_every, sample_every=args.sample_every,
            image_ratio=(0.5 if args.image_ratio is None else args.image_ratio) if joint else 0.0, **kw)
    return A.apply_sets(cfg, train_sets), {"model": model_sets, "sr": sr_sets}


def _data(args, train_cfg):
    """({"cache", "image", "lowres"} latent datasets (None where not given), caption features or None)."""
    from walt.commands import args as A
    from walt.data.latent_dataset import LatentDataset
    from walt.errors import UserError

    with A.user_errors("--cache: "):
        ds = LatentDataset(args.cache)
    data = {"cache": ds, "image": None, "lowres": None}
    if args.lowres_cache is not None:
        with A.user_errors("--lowres-cache: "):
            data["lowres"] = LatentDataset(args.lowres_cache)
    text = None
    if args.text:
        from walt.text import TextEmbeddings

        with A.user_errors("--text: "):
            text = TextEmbeddings(args.cache)
        if text.vae_sha256 != ds.vae_sha256 or len(text) != len(ds):
            raise UserError(f"--text: the caption features in {args.cache}/text belong to another latent cache; "
                            "re-run `walt encode ... --text-encoder minilm`")
    if args.image_cache is not None:
        with A.user_errors("--image-cache: "):
            data["image"] = LatentDataset(args.image_cache, vae=ds.vae_sha256)
        if not data["image"].is_image_cache:
            raise UserError(f"--image-cache {args.image_cache} holds {data['image'].latent_shape[1]}-frame latents, "
                            "not images; encode it with `walt encode --frames 1`")
    return data, text


def _net_config(args, data, text, model_sets: dict, sr_sets: dict):
    """(WALTConfig of the preset fitted to the cache(s) and --set, the objective), checked against the data."""
    from walt.cascade.sr import SRConfig
    from walt.commands import args as A
    from walt.denoiser import get_preset
    from walt.errors import UserError
    from walt.train.batches import check_latents, check_pair_caches, check_text
    from walt.train.denoiser_loop import SuperResolution, denoise

    with A.user_errors("--preset: "):
        net_cfg = get_preset(args.preset)
    if data["lowres"] is None:
        with A.user_errors("the cache does not fit the preset: "):
            net_cfg = _fit_to_cache(net_cfg, data["cache"], set(model_sets), text)
        net_cfg = A.apply_sets(net_cfg, model_sets)
        objective = denoise
    else:
        if net_cfg.lowres_channels <= 0:
            raise UserError(f"--preset {args.preset} is not a super-resolution network; use sr1, sr2, sr1-tiny or sr2-tiny")
        net_cfg = _fit_sr_to_caches(net_cfg, data["cache"], data["lowres"], text, model_sets)
        objective = SuperResolution(A.apply_sets(SRConfig(), sr_sets, "--set train.sr"))
        with A.user_errors("the caches do not pair up: "):
            check_pair_caches(data["cache"], data["lowres"], objective.sr.scale)
    with A.user_errors("--cache does not fit the network: "):
        check_latents(data["cache"], net_cfg, "video cache")
        if data["image"] is not None:
            check_latents(data["image"], net_cfg, "image cache")
    if text is not None:
        with A.user_errors("--text: "):
            check_text(text, data["cache"], net_cfg)
    elif net_cfg.text_dim > 0:
        raise UserError(f"the network has text_dim={net_cfg.text_dim} but --text was not given; "
                        "pass --text (with caption features in the cache) or drop text_dim")
    return net_cfg, objective


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


def fit_window(window: tuple[int, int, int], grid: tuple[int, int, int]) -> tuple[int, int, int]:
    """Each side: the largest divisor of the token grid's side that is <= the window's (5x8x7 on 5x8x8 -> 5x8x4)."""
    return tuple(max(d for d in range(1, min(wd, g) + 1) if g % d == 0) for wd, g in zip(window, grid))


def _fit_sr_to_caches(cfg, hi, lo, text, model_sets: dict):
    """An SR preset with the caches' sizes and the --set values applied together (a window may only fit the new size)."""
    from walt.commands import args as A
    from walt.config import config_from_dict, config_to_dict

    c, t, h, w = hi.latent_shape
    fit = {"in_channels": c, "lowres_channels": lo.latent_shape[0], "input_size": (t, h, w),
           "text_dim": text.dim if text is not None else 0}
    merged = {**config_to_dict(cfg), **{k: v for k, v in fit.items() if k not in model_sets}, **model_sets}
    p = int(merged.get("patch_size", 1))
    if merged["input_size"][1] % p == 0 and merged["input_size"][2] % p == 0:
        grid = (int(merged["input_size"][0]), int(merged["input_size"][1]) // p, int(merged["input_size"][2]) // p)
        for key in ("spatial_window", "spatiotemporal_window"):
            if key not in model_sets:
                merged[key] = fit_window(tuple(merged[key]), grid)
    with A.user_errors("the caches / --set values do not fit the preset: "):
        return config_from_dict(type(cfg), {k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()})


def _check_vae(args, data):
    """The --vae of periodic samples must be the autoencoder that made the cache."""
    if args.vae is None:
        return None
    from walt.commands import files as F
    from walt.data.latent_dataset import vae_fingerprint
    from walt.errors import UserError

    vae, _, vae_path = F.load_vae(args.vae)
    if vae_fingerprint(vae) != data["cache"].vae_sha256:
        raise UserError(f"--vae {vae_path} is not the autoencoder that made --cache {args.cache}; "
                        "pass that one, or re-encode the cache with this one")
    return vae


def _check_resume(args, train_cfg, net_cfg, data, text, objective):
    """The --out folder: empty, or a run that --resume continues with the same settings."""
    from walt.commands import args as A, files as F
    from walt.config import config_to_dict
    from walt.errors import UserError
    from walt.train.common import latest_checkpoint, load_training_state
    from walt.train.denoiser_config import check_resumable

    out = F.check_out_not_file(args.out)
    last = latest_checkpoint(out / "checkpoints")
    if last is None:
        if args.stage == "sr" and (out / "walt_ema.safetensors").exists() and not args.resume:
            raise UserError(f"--out {out} already holds a trained stage; choose an empty folder")
        return out
    if not args.resume:
        raise UserError(f"--out {out} already holds a run (newest checkpoint {last.name}); "
                        "pass --resume to continue it or choose an empty folder")
    text_info = dict(text.encoder_info) if text is not None else None
    with A.user_errors(f"cannot resume {last}: "):
        check_resumable(load_training_state(last), train_cfg, config_to_dict(net_cfg), data["cache"].vae_sha256, last,
                        dict(getattr(objective, "checkpoint_extras", {})), text_info)
    return out


def _train(args, train_cfg, net_cfg, data, text, objective, vae, out) -> int:
    """Join the torchrun group, make the output folder, build the network and run the loop."""
    import torch

    from walt.commands import args as A, files as F
    from walt.denoiser import WALT
    from walt.train.batches import PairBatches
    from walt.train.common import NonFiniteLossError
    from walt.train.denoiser_loop import train_denoiser
    from walt.train.distributed import init_distributed, is_main, shutdown

    with A.user_errors():
        info = init_distributed()
    device = info.device if info.world_size > 1 else F.pick_device(args.device)
    existed = out.is_dir()
    F.writable_dir(out)
    torch.manual_seed(args.seed)  # same initial weights on every rank
    code, result = 0, None
    with F.cleanup_if_empty(out, existed):
        with A.user_errors("the network does not fit the caches: "):
            net = WALT(net_cfg).to(device)
        if is_main():
            print(_summary(args, net, data, text, info.world_size, device, out))
        ds = data["cache"]
        source = ds if data["lowres"] is None else PairBatches(ds, data["lowres"], train_cfg, objective.sr.scale, text)
        try:
            result = train_denoiser(train_cfg, net, source, out, image_dataset=data["image"],
                                    vae=vae.to(device) if vae is not None else None, resume=args.resume,
                                    progress=not args.no_progress, text_embeddings=text, objective=objective,
                                    extras=_export_extras(args, ds, net_cfg))
        except NonFiniteLossError as e:
            if is_main():
                print(f"walt train: error: {A.first_line(e)}; lower --lr or resume from the last checkpoint")
            code = 1
    if code == 0 and is_main():
        _report(result)
    if info.world_size > 1:
        shutdown(code)
    return code


def _export_extras(args, ds, net_cfg) -> dict:
    """What `walt sample` reads from the exported weights besides the loop's own entries: fps, class names."""
    extras = {"fps": float(args.fps)}
    names = ds.index.get("dataset", {}).get("class_names")
    if names and net_cfg.num_classes == len(names):
        extras["class_names"] = list(names)
    return extras


def _summary(args, net, data, text, world: int, device, out) -> str:
    cfg, ds = net.config, data["cache"]
    n = sum(p.numel() for p in net.parameters())
    c, t, h, w = ds.latent_shape
    what = f"{len(ds)} latents (c,t,h,w)={(c, t, h, w)}"
    if data["lowres"] is not None:
        what = f"{len(ds)} clip pairs, latents {tuple(data['lowres'].latent_shape)} -> {(c, t, h, w)}"
    if data["image"] is not None:
        what += f" + {len(data['image'])} images"
    return (f"walt train: WALT-{args.preset} ({n / 1e6:.2f}M params, {cfg.depth} layers, width {cfg.hidden_size}, "
            f"{cfg.num_classes} classes{', text ' + text.encoder_name if text is not None else ''}"
            f"{', SR stage' if data['lowres'] is not None else ''}) on {what}, {args.steps} steps x "
            f"{args.batch_size} clips, {world} process(es), device {device}, out {out}")


def _report(result) -> None:
    if result.interrupted:
        print(f"walt train: stopped at step {result.step}; checkpoint {result.checkpoint} "
              f"(run again with --resume to continue)")
        return
    loss = result.metrics.get("loss")
    print(f"walt train: done at step {result.step}" + (f", last loss {loss:.4f}" if loss is not None else ""))
    print(f"walt train: wrote {result.ema_path} (EMA, use this one) and {result.model_path}")
