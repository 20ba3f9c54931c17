"""`walt eval fvd`: FVD of a W.A.L.T checkpoint against real data, or of two folders of videos.

A checkpoint is sampled `protocol.num_fake` clips per repeat (DDIM 50 steps, no guidance: the
paper's UCF-101 setting; labels drawn like the real set's) and its I3D statistics compared with
the real clips' (cached under a key of dataset + protocol hash + I3D weights hash); two folders
are read as they are (`walt.eval.fvd_eval`). See `walt.commands.eval` for the flags.
"""

from __future__ import annotations

import argparse

__all__ = ["run_fvd"]


def _label_pool(real_ds, n_real: int, num_classes: int, data_arg: str):
    """Labels to draw generated classes from: the real clips' labels (uniform over classes if unlabelled)."""
    from walt.errors import UserError
    from walt.eval.fvd_eval import dataset_labels

    if num_classes == 0:
        return None, "unconditional"
    labels = dataset_labels(real_ds, n_real)
    bad = sorted({y for y in labels if y >= num_classes})
    if bad:
        raise UserError(f"--data {data_arg} has class {bad[0]} but the model knows classes 0..{num_classes - 1}; "
                        "evaluate on the data the model was trained on")
    pool = [y for y in labels if y >= 0]
    if not pool:
        return list(range(num_classes)), "uniform over the model's classes (the real clips are unlabelled)"
    return pool, "the real clips' labels"


def run_fvd(args: argparse.Namespace) -> int:
    """Check the flags and the mode (two folders, or a model against real data), then score."""
    from walt.commands import args as A, files as F
    from walt.errors import UserError

    A.positive_int(args.batch_size, "--batch-size")
    A.positive_int(args.steps, "--steps")
    for flag, v in (("--num-real", args.num_real), ("--num-fake", args.num_fake)):
        if v is not None:
            A.positive_int(v, flag, minimum=2)
    if args.repeats is not None:
        A.positive_int(args.repeats, "--repeats")
    if args.seed < 0 or args.data_seed < 0:
        raise UserError("--seed and --data-seed must be >= 0")
    folders = args.real is not None or args.fake is not None
    model = any(v is not None for v in (args.ckpt, args.vae, args.data))
    if folders and model:
        raise UserError("give either --real DIR --fake DIR (two folders) or --ckpt --vae --data (a model), not both")
    if folders and (args.real is None or args.fake is None):
        raise UserError("folder-vs-folder FVD needs both --real DIR and --fake DIR")
    if not folders and (args.ckpt is None or args.vae is None or args.data is None):
        missing = [f for f, v in (("--ckpt", args.ckpt), ("--vae", args.vae), ("--data", args.data)) if v is None]
        raise UserError(f"model FVD needs --ckpt, --vae and --data (missing {', '.join(missing)}); "
                        "or give --real DIR --fake DIR")
    if args.frame_stride is not None:
        A.positive_int(args.frame_stride, "--frame-stride")
    name = args.protocol or ("smoke_frame_prediction" if args.task == "frame-prediction" else "smoke")
    proto = A.fvd_protocol_arg(name, num_real=args.num_real, num_fake=args.num_fake,
                               num_repeats=args.repeats, frame_stride=args.frame_stride, real_split=args.real_split)
    if args.task is not None and args.task != proto.task:
        other = "k600_frame_prediction or smoke_frame_prediction" if args.task == "frame-prediction" else "smoke"
        raise UserError(f"--protocol {proto.name} is a {proto.task} protocol but --task is {args.task}; use {other}")
    if proto.task == "frame-prediction" and folders:
        raise UserError("--task frame-prediction samples a model from real contexts: give --ckpt --vae --data, "
                        "not --real/--fake")
    device = F.pick_device(args.device)
    out = F.check_out_not_file(args.out)
    cache = None
    if not args.no_stats_cache:
        cache = F.check_out_not_file(args.stats_cache, "--stats-cache") if args.stats_cache else None
    return (_fvd_of_folders if folders else _fvd_of_model)(args, proto, device, out, cache)


def _fvd_of_folders(args, proto, device, out, cache) -> int:
    """Two folders of videos: probed now (their counts are checked before any work), then scored."""
    from pathlib import Path

    from walt.commands import args as A, files as F
    from walt.errors import UserError
    from walt.eval import fvd_eval

    if proto.real_split != "train":
        raise UserError(f"protocol real_split {proto.real_split!r} needs a dataset with splits (--data UCF-101 "
                        "root); a --real folder has none: drop --real-split")
    clips = {}
    for flag, path in (("--real", args.real), ("--fake", args.fake)):
        if not Path(path).expanduser().is_dir():
            raise UserError(f"{flag} {path} is not a folder; give a folder of videos")
        with A.user_errors(f"{flag} "):  # the protocol's frame stride applies to the real videos
            stride = proto.frame_stride if flag == "--real" else 1
            clips[flag] = fvd_eval.FolderClips(path, proto.num_frames, stride)
    n_real = proto.num_real if proto.num_real is not None else len(clips["--real"])
    n_fake = proto.num_fake * proto.num_repeats
    if len(clips["--real"]) < max(n_real, 2):
        raise UserError(f"protocol {proto.name!r} needs {max(n_real, 2)} real videos of >= {proto.num_frames} "
                        f"frames; --real {args.real} has {len(clips['--real'])}: add videos or lower --num-real")
    if len(clips["--fake"]) < n_fake:
        raise UserError(f"protocol {proto.name!r} needs {n_fake} generated videos ({proto.num_fake} x "
                        f"{proto.num_repeats} repeat(s)) of >= {proto.num_frames} frames; --fake {args.fake} has "
                        f"{len(clips['--fake'])}: add videos or lower --num-fake / --repeats")
    i3d = F.load_fvd_network(args.i3d_weights, device, args.allow_unverified_i3d)
    existed = out.is_dir()
    F.writable_dir(out)
    print(f"walt eval fvd: {args.real} ({len(clips['--real'])} videos) vs {args.fake} ({len(clips['--fake'])}), "
          f"protocol {proto.name} [{proto.protocol_hash()}], device {device}")
    with F.cleanup_if_empty(out, existed):
        res = fvd_eval.fvd_from_folders(clips["--real"], clips["--fake"], proto, i3d, cache,
                                        use_cache=not args.no_stats_cache, batch_size=args.batch_size, device=device,
                                        progress=not args.no_progress)
        _report_fvd(out, res)
    return 0


def _fvd_of_model(args, proto, device, out, cache) -> int:
    """A checkpoint and its autoencoder, sampled against real clips of the same shape."""
    from walt.commands import args as A, files as F
    from walt.errors import UserError

    stage, ckpt_path = F.load_stage(args.ckpt, device)
    vae, _, vae_path = F.load_vae(args.vae, device)
    F.check_same_vae(stage, f"--ckpt {ckpt_path}", vae, vae_path)
    cfg = stage.net.config
    if cfg.text_dim:
        raise UserError(f"--ckpt {ckpt_path} is text-conditioned; `walt eval fvd` samples class-conditional or "
                        "unconditional models only (write samples with `walt sample --prompt` and use --real/--fake)")
    A.check_steps(args.steps, stage.schedule.num_timesteps)
    T, h, w = cfg.input_size
    f_t, f_s = vae.config.temporal_factor, vae.config.spatial_factor
    frames, H, W = 1 + f_t * (T - 1), h * f_s, w * f_s
    if frames < proto.num_frames:
        raise UserError(f"--ckpt {ckpt_path} generates {frames}-frame clips but FVD scores {proto.num_frames} frames; "
                        "FVD needs a model of >= 5 latent frames (17 video frames)")
    if proto.task == "frame-prediction":
        if not cfg.frame_conditioning:
            raise UserError(f"--task frame-prediction: --ckpt {ckpt_path} was trained without frame conditioning "
                            "(train with --set frame_conditioning=true)")
        if (proto.context_frames - 1) % f_t:
            raise UserError(f"the protocol gives {proto.context_frames} context frames, not 1 + {f_t}k for this "
                            f"autoencoder's temporal factor {f_t}: they do not encode into whole latent frames")
    ds = F.real_dataset(args, proto, frames, H if H == W else (H, W), proto.num_real, args.data_seed, f_t)
    n_real = proto.num_real if proto.num_real is not None else len(ds)
    if len(ds) < max(n_real, 2):
        raise UserError(f"protocol {proto.name!r} needs {max(n_real, 2)} real clips; --data {args.data} has {len(ds)}: "
                        "add clips or lower --num-real")
    pool, label_source = _label_pool(ds, n_real, cfg.num_classes, args.data)
    i3d = F.load_fvd_network(args.i3d_weights, device, args.allow_unverified_i3d)
    existed = out.is_dir()
    F.writable_dir(out)
    print(f"walt eval fvd: {proto.num_fake * proto.num_repeats} sample(s) of {frames}x{H}x{W} from {ckpt_path} "
          f"({args.sampler} {args.steps} steps, no guidance) vs {n_real} real clips of {F.describe_dataset(ds)}, "
          f"protocol {proto.name} [{proto.protocol_hash()}], device {device}")
    with F.cleanup_if_empty(out, existed):
        res = _score_model(args, stage, vae, ds, proto, i3d, cache, pool, device)
        if res["labels"] is not None:
            res["labels"]["drawn_from"] = label_source
        res["generator"] = {"ckpt": str(ckpt_path), "vae": str(vae_path), "sampler": args.sampler,
                            "steps": args.steps, "guidance_scale": 1.0, "frames": frames, "resolution": [H, W]}
        res["real_data"] = {"arg": args.data, "seed": args.data_seed}
        _report_fvd(out, res)
    return 0


def _score_model(args, stage, vae, ds, proto, i3d, cache, pool, device) -> dict:
    """Real statistics (cached), then FVD of the stage's DDIM samples (walt.eval.fvd_eval)."""
    import torch

    from walt.eval import fvd_eval
    from walt.pipeline import generate

    net, cfg = stage.net, stage.net.config

    def contexts(seeds, labels):
        """Frame prediction: sample i continues the first context_frames of real clip (seed_i - seed)."""
        if proto.task != "frame-prediction":
            return None, labels
        items = [ds[(s - args.seed) % len(ds)] for s in seeds]
        ctx = torch.stack([it["video"][:, :proto.context_frames] for it in items]).to(device)  # (b, 3, k, H, W)
        if labels is not None and all("label" in it and it["label"] is not None for it in items):
            labels = [int(it["label"]) for it in items]  # the clip's own class
        return vae.encode(ctx), labels  # (b, c, k_lat, h, w) raw latents

    def generate_fn(seeds, labels):
        context, labels = contexts(seeds, labels)
        y = torch.tensor(labels, device=device) if labels is not None else None
        z = generate(net, stage.schedule, (len(seeds), cfg.in_channels, *cfg.input_size), sampler=args.sampler,
                     steps=args.steps, y=y, seeds=seeds, latent_stats=stage.latent_stats,
                     context=context)  # (b, c, T, h, w) raw
        return vae.decode(z).float().clamp(-1, 1)  # (b, 3, frames, H, W)

    with torch.no_grad():
        real = fvd_eval.real_feature_stats(ds, proto, i3d, cache, use_cache=not args.no_stats_cache,
                                           description={"data": args.data}, batch_size=args.batch_size,
                                           device=device, progress=not args.no_progress)
        print(f"walt eval fvd: real statistics {'from the cache' if real.cache_hit else 'computed'} (key {real.key})")
        return fvd_eval.fvd_of_generator(generate_fn, real, proto, i3d, label_pool=pool, seed=args.seed,
                                         batch_size=args.batch_size, device=device, progress=not args.no_progress)


def _report_fvd(out, res) -> None:
    from walt.commands import files as F
    from walt.eval.fvd_record import fvd_markdown

    p = res["protocol"]
    pm = f" ± {res['fvd_std']:.2f}" if res["repeats"] > 1 else ""
    F.write_eval_report(out, "fvd", res, fvd_markdown(res),
                        f"FVD {res['fvd']:.2f}{pm} ({p['name']}{'*' if p['overrides'] else ''} [{p['hash']}], "
                        f"{res['num_real']} real vs {res['num_fake']} x {res['repeats']} generated)")
