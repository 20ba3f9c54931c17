"""`walt eval`: reconstruction quality of an autoencoder, and FVD of a model or of a video folder.

    walt eval recon --vae runs/vae --data builtin --out eval/recon                      # PSNR, SSIM, rFVD (smoke)
    walt eval recon --vae runs/vae --data ucf101/ --frames 17 --resolution 128 --no-fvd --out eval/recon
    walt eval fvd --ckpt runs/walt --vae runs/vae --data builtin --protocol smoke --out eval/fvd
    walt eval fvd --real real_videos/ --fake samples/ --protocol stylegan_v --out eval/fvd

`recon` scores `vae.decode(vae.encode(x))` against x: PSNR and SSIM per frame (mean, and a curve
over the frame index) and rFVD between the real clips and their reconstructions
(`walt.eval.recon.reconstruction_metrics`). `fvd` samples `protocol.num_fake` clips per repeat
from a W.A.L.T checkpoint (DDIM 50 steps, no guidance: the paper's UCF-101 setting; labels drawn
like the real set's) or reads two folders of videos, and compares I3D statistics
(`walt.eval.fvd_eval`). Real statistics are cached (`--stats-cache`, default
~/.cache/walt/fvd_stats) under a key of dataset + protocol hash + I3D weights hash.

Writes `recon.json` + `recon.md` or `fvd.json` + `fvd.md` into --out: every number next to its
protocol (name and hash), the I3D weights hash, the sample counts and the seeds. The `smoke`
protocol (64 clips) is a CPU plumbing check; published numbers use `magvit_ucf101` (10K samples,
4 repeats) or `stylegan_v` (2048) and need a GPU. `--num-real/--num-fake/--repeats/--frame-stride/
--real-split` override the protocol (the hash changes and the report marks it with `*`). The real
clips are read as the protocol pins them: its real split of a UCF-101 root and its frame stride.
The I3D weights must be the pinned reference conversion; `--allow-unverified-i3d` scores with
another `--i3d-weights` file, and the report then says it is not the reference network.
"""

from __future__ import annotations

import argparse

HELP = "evaluate: autoencoder reconstruction (PSNR, SSIM, rFVD) or FVD of a model / a video folder"


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder for the JSON + Markdown report")
    p.add_argument("--i3d-weights", default=None,
                   help="Kinetics-400 I3D weights (i3d-kinetics-400.ckpt or its converted .safetensors); "
                        "default: found or downloaded as walt.eval.i3d.load_i3d does")
    p.add_argument("--allow-unverified-i3d", action="store_true",
                   help="score with an --i3d-weights .safetensors whose sha256 is not the pinned reference "
                        "conversion (results are marked: not the reference I3D)")
    p.add_argument("--batch-size", type=int, default=4, help="clips per network call (default 4)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="eval_command", metavar="{recon,fvd}")
    r = sub.add_parser("recon", help="PSNR / SSIM per frame and rFVD of an autoencoder",
                       description="PSNR / SSIM per frame and rFVD (real clips vs their reconstructions).")
    r.add_argument("--vae", required=True, help="autoencoder checkpoint (or a train-vae run folder)")
    r.add_argument("--data", required=True, help="'builtin' or a video folder / .csv / UCF-101 root")
    r.add_argument("--num-samples", type=int, default=None,
                   help="clips scored (default: the protocol's num_fake with rFVD, else 64)")
    r.add_argument("--frames", type=int, default=17, help="frames per clip, 1 + 4k, >= 16 for rFVD (default 17)")
    r.add_argument("--resolution", type=int, default=128, help="square clip size in pixels (default 128)")
    r.add_argument("--chunk-frames", type=int, default=None,
                   help="stream encode/decode in chunks of this many frames (multiple of the temporal factor)")
    r.add_argument("--fvd-protocol", default="smoke", help="smoke | stylegan_v | magvit_ucf101 (default smoke)")
    r.add_argument("--fvd-clips", type=int, default=None, help="override the protocol's clip count for rFVD")
    r.add_argument("--no-fvd", action="store_true", help="PSNR / SSIM only (no I3D)")
    r.add_argument("--seed", type=int, default=0, help="built-in dataset seed / clip-start seed of folders")
    _common_args(r)

    f = sub.add_parser("fvd", help="FVD of a W.A.L.T checkpoint against real data, or of two video folders",
                       description="FVD of a W.A.L.T checkpoint (--ckpt --vae --data) "
                                   "or of two folders (--real --fake).")
    f.add_argument("--ckpt", default=None, help="WALT checkpoint (or a `walt train` run folder)")
    f.add_argument("--vae", default=None, help="its autoencoder checkpoint (or a train-vae run folder)")
    f.add_argument("--data", default=None, help="real clips: 'builtin' or a video folder / .csv / UCF-101 root")
    f.add_argument("--real", default=None, help="folder of real videos (folder-vs-folder mode)")
    f.add_argument("--fake", default=None, help="folder of generated videos (folder-vs-folder mode)")
    f.add_argument("--protocol", default="smoke", help="smoke | stylegan_v | magvit_ucf101 (default smoke)")
    f.add_argument("--num-real", type=int, default=None, help="override the protocol's real clip count")
    f.add_argument("--num-fake", type=int, default=None, help="override the protocol's generated clips per repeat")
    f.add_argument("--repeats", type=int, default=None, help="override the protocol's number of repeats")
    f.add_argument("--frame-stride", type=int, default=None,
                   help="override the protocol's stride of real clips in source frames (presets: 1 = consecutive)")
    f.add_argument("--real-split", default=None, choices=["train", "test", "all"],
                   help="override the protocol's real split of a UCF-101 root (presets: train)")
    f.add_argument("--stats-cache", default=None, help="real-statistics cache folder (default ~/.cache/walt/fvd_stats)")
    f.add_argument("--no-stats-cache", action="store_true", help="neither read nor write cached real statistics")
    f.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm", "dpmpp"], help="default ddim (paper)")
    f.add_argument("--steps", type=int, default=50, help="sampling steps (default 50, paper)")
    f.add_argument("--seed", type=int, default=0, help="sample i of repeat r uses seed + r * num_fake + i")
    f.add_argument("--data-seed", type=int, default=0, help="built-in dataset seed / clip-start seed of folders")
    _common_args(f)


# ----------------------------------------------------------------------------- shared steps


def _protocol(name: str, **overrides):
    from walt.cli import UserError
    from walt.commands import _common as C
    from walt.eval.fvd import FVD_PROTOCOLS, fvd_protocol

    if name not in FVD_PROTOCOLS:
        raise UserError(f"unknown FVD protocol {name!r}; choose one of {', '.join(sorted(FVD_PROTOCOLS))}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    with C.user_errors("FVD protocol: "):
        return fvd_protocol(name, **overrides)


def _load_i3d(path, device, allow_unverified: bool = False):
    """The FVD network, or a one-line UserError saying how to provide it."""
    from walt.cli import UserError
    from walt.commands import _common as C
    from walt.eval import fvd_eval
    from walt.eval.i3d_weights import I3DWeightsError

    if allow_unverified and path is None:
        raise UserError("--allow-unverified-i3d applies to a file given with --i3d-weights PATH")
    # Only pass the flag when set, so a stand-in `load_fvd_i3d(path, device)` keeps working.
    extra = {"allow_unverified": True} if allow_unverified else {}
    try:
        with C.user_errors("--i3d-weights: "):
            return fvd_eval.load_fvd_i3d(path, device=device, **extra)
    except I3DWeightsError as e:
        raise UserError(f"cannot load the Kinetics-400 I3D for FVD ({C.first_line(e)}); pass --i3d-weights PATH"
                        ) from None


def _real_data(args, proto, frames, resolution, n, seed, temporal_factor):
    """The real clips, read as the FVD protocol pins them (its real split and frame stride)."""
    from walt.commands import _common as C
    from walt.eval.fvd_stats import check_real_dataset

    stride = proto.frame_stride if proto.frame_stride != 1 else None  # None: consecutive (builtin accepts it)
    ds = C.dataset_from_arg(args.data, frames, resolution, n, seed, temporal_factor, sampling="deterministic",
                            frame_stride=stride, split=proto.real_split)
    with C.user_errors(f"--data {args.data}: "):
        check_real_dataset(ds, proto)
    return ds


def _finish(out, stem, result, markdown, summary):
    from walt.eval.fvd_eval import write_report

    j, m = write_report(out, stem, result, markdown)
    print(f"walt eval {stem}: {summary}")
    print(f"walt eval {stem}: wrote {j} and {m}")


# ----------------------------------------------------------------------------- recon


def _run_recon(args) -> int:
    from walt.cli import UserError
    from walt.commands import _common as C

    # ---- 1. numbers and flags ----
    batch = C.positive_int(args.batch_size, "--batch-size")
    if args.num_samples is not None:
        C.positive_int(args.num_samples, "--num-samples")
    if args.fvd_clips is not None:
        C.positive_int(args.fvd_clips, "--fvd-clips", minimum=2)
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    proto = None
    if not args.no_fvd:
        proto = _protocol(args.fvd_protocol, num_fake=args.fvd_clips, num_real=args.fvd_clips)
    n = args.num_samples if args.num_samples is not None else (proto.num_fake if proto is not None else 64)
    if proto is not None:
        if n < proto.num_fake:
            raise UserError(f"rFVD with protocol {proto.name!r} needs {proto.num_fake} clips, got --num-samples {n}; "
                            f"use --num-samples >= {proto.num_fake}, --fvd-clips {n}, or --no-fvd")
        if args.frames < proto.num_frames:
            raise UserError(f"rFVD needs clips of >= {proto.num_frames} frames, got --frames {args.frames}; "
                            "use --frames 17 or --no-fvd")
    device = C.pick_device(args.device)
    out = C.check_out_not_file(args.out)

    # ---- 2. autoencoder, then sizes that depend on it ----
    vae, _, vae_path = C.load_vae(args.vae, device)
    cfg = vae.config
    C.check_frames(args.frames, cfg.temporal_factor)
    C.check_resolution(args.resolution, cfg.spatial_factor)
    if args.chunk_frames is not None:
        cf = C.positive_int(args.chunk_frames, "--chunk-frames")
        if cf % cfg.temporal_factor:
            raise UserError(f"--chunk-frames {cf} must be a multiple of the temporal factor {cfg.temporal_factor}")

    # ---- 3. data, then the I3D ----
    if proto is not None:  # rFVD: the clips are read as the protocol says (split, frame stride)
        ds = _real_data(args, proto, args.frames, args.resolution, n, args.seed, cfg.temporal_factor)
    else:
        ds = C.dataset_from_arg(args.data, args.frames, args.resolution, n, args.seed, cfg.temporal_factor,
                                sampling="deterministic")
    if len(ds) < n:
        need = f" (rFVD protocol {proto.name!r} needs {proto.num_fake})" if proto is not None else ""
        raise UserError(f"--data {args.data} has {len(ds)} usable clip(s) but {n} are needed{need}; "
                        f"add clips or lower --num-samples" + (" / --fvd-clips" if proto is not None else ""))
    i3d = _load_i3d(args.i3d_weights, device, args.allow_unverified_i3d) if proto is not None else None

    # ---- 4. output folder, last ----
    existed = out.is_dir()
    C.writable_dir(out)
    print(f"walt eval recon: {C.describe_dataset(ds)} of {args.frames}x{args.resolution}x{args.resolution}, "
          f"{n} scored with {vae_path}" + (f", rFVD protocol {proto.name} [{proto.protocol_hash()}]" if proto else
                                           ", no rFVD") + f", device {device}")

    from walt.data.latent_cache import vae_fingerprint
    from walt.eval.recon import recon_markdown, reconstruction_metrics

    with C.cleanup_if_empty(out, existed):
        res = reconstruction_metrics(vae, ds, num_samples=n, batch_size=batch, chunk_frames=args.chunk_frames,
                                     protocol=proto, i3d=i3d, device=device, progress=not args.no_progress)
        res["vae"] = {"path": str(vae_path), "sha256": vae_fingerprint(vae)}
        res["data"] = {"arg": args.data, "seed": args.seed, "frames": args.frames, "resolution": args.resolution}
        p, s, r = res["psnr"], res["ssim"], res["rfvd"]
        summary = (f"PSNR {p['mean']:.2f} dB" + (f", SSIM {s['mean']:.4f}" if s else "") +
                   (f", rFVD {r['fvd']:.2f} ({r['protocol']['name']} [{r['protocol']['hash']}], "
                    f"{r['num_real']} clips)" if r else "") + f" over {n} clips")
        _finish(out, "recon", res, recon_markdown(res), summary)
    return 0


# ----------------------------------------------------------------------------- fvd


def _check_pair(net, extras, ckpt_path, vae, vae_path):
    """The autoencoder must be the one the model was trained with (channels, weights hash)."""
    from walt.cli import UserError

    if net.config.in_channels != vae.config.latent_channels:
        raise UserError(f"--ckpt {ckpt_path} works on {net.config.in_channels}-channel latents but --vae {vae_path} "
                        f"makes {vae.config.latent_channels}-channel latents; pass the autoencoder it was trained with")
    want = extras.get("vae_sha256") or (extras.get("cache") or {}).get("vae_sha256")
    if want:
        from walt.data.latent_cache import vae_fingerprint

        if vae_fingerprint(vae) != want:
            raise UserError(f"--vae {vae_path} is not the autoencoder whose latents --ckpt {ckpt_path} was trained on "
                            "(weights hash differs); pass that autoencoder")


def _label_pool(real_ds, n_real: int, num_classes: int, data_arg: str):
    """Labels to draw generated classes from: the real clips' labels (uniform over classes if unlabelled)."""
    from walt.cli import UserError
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


def _run_fvd(args) -> int:
    from walt.cli import UserError
    from walt.commands import _common as C

    # ---- 1. numbers, flags and mode ----
    batch = C.positive_int(args.batch_size, "--batch-size")
    steps = C.positive_int(args.steps, "--steps")
    for flag, v in (("--num-real", args.num_real), ("--num-fake", args.num_fake)):
        if v is not None:
            C.positive_int(v, flag, minimum=2)
    if args.repeats is not None:
        C.positive_int(args.repeats, "--repeats")
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
        C.positive_int(args.frame_stride, "--frame-stride")
    proto = _protocol(args.protocol, num_real=args.num_real, num_fake=args.num_fake, num_repeats=args.repeats,
                      frame_stride=args.frame_stride, real_split=args.real_split)
    device = C.pick_device(args.device)
    out = C.check_out_not_file(args.out)
    cache = None
    if not args.no_stats_cache:
        cache = C.check_out_not_file(args.stats_cache, "--stats-cache") if args.stats_cache else None

    from walt.eval import fvd_eval

    n_need_fake = proto.num_fake * proto.num_repeats
    if folders:
        # ---- 2. the two folders (probed now: counts are checked before any work) ----
        from pathlib import Path

        if proto.real_split != "train":
            raise UserError(f"protocol real_split {proto.real_split!r} needs a dataset with splits (--data UCF-101 "
                            "root); a --real folder has none: drop --real-split")
        clips = {}
        for flag, path in (("--real", args.real), ("--fake", args.fake)):
            if not Path(path).expanduser().is_dir():
                raise UserError(f"{flag} {path} is not a folder; give a folder of videos")
            with C.user_errors(f"{flag} "):  # the protocol's frame stride applies to the real videos
                stride = proto.frame_stride if flag == "--real" else 1
                clips[flag] = fvd_eval.FolderClips(path, proto.num_frames, stride)
        n_real = proto.num_real if proto.num_real is not None else len(clips["--real"])
        if len(clips["--real"]) < max(n_real, 2):
            raise UserError(f"protocol {proto.name!r} needs {max(n_real, 2)} real videos of >= {proto.num_frames} "
                            f"frames; --real {args.real} has {len(clips['--real'])}: add videos or lower --num-real")
        if len(clips["--fake"]) < n_need_fake:
            raise UserError(f"protocol {proto.name!r} needs {n_need_fake} generated videos ({proto.num_fake} x "
                            f"{proto.num_repeats} repeat(s)) of >= {proto.num_frames} frames; --fake {args.fake} has "
                            f"{len(clips['--fake'])}: add videos or lower --num-fake / --repeats")
        i3d = _load_i3d(args.i3d_weights, device, args.allow_unverified_i3d)
        existed = out.is_dir()
        C.writable_dir(out)
        print(f"walt eval fvd: {args.real} ({len(clips['--real'])} videos) vs {args.fake} ({len(clips['--fake'])}), "
              f"protocol {proto.name} [{proto.protocol_hash()}], device {device}")
        with C.cleanup_if_empty(out, existed):
            res = fvd_eval.fvd_from_folders(clips["--real"], clips["--fake"], proto, i3d, cache,
                                            use_cache=not args.no_stats_cache, batch_size=batch, device=device,
                                            progress=not args.no_progress)
            _report_fvd(out, res)
        return 0

    # ---- 2. checkpoints, and whether they belong together ----
    from walt.commands.sample import load_walt

    net, extras, ckpt_path = load_walt(args.ckpt, device)
    vae, _, vae_path = C.load_vae(args.vae, device)
    _check_pair(net, extras, ckpt_path, vae, vae_path)
    cfg, vcfg = net.config, vae.config
    if getattr(cfg, "text_dim", 0):
        raise UserError(f"--ckpt {ckpt_path} is text-conditioned; `walt eval fvd` samples class-conditional or "
                        "unconditional models only (write samples with `walt sample --prompt` and use --real/--fake)")
    stats = C.latent_stats_from(extras, f"--ckpt {ckpt_path}")
    from walt.diffusion import DiffusionSchedule

    schedule = DiffusionSchedule(extras.get("diffusion_config"))
    if steps > schedule.num_timesteps:
        raise UserError(f"--steps {steps} exceeds the model's {schedule.num_timesteps} diffusion timesteps")
    T, h, w = cfg.input_size
    f_t, f_s = vcfg.temporal_factor, vcfg.spatial_factor
    frames, H, W = 1 + f_t * (T - 1), h * f_s, w * f_s
    if frames < proto.num_frames:
        raise UserError(f"--ckpt {ckpt_path} generates {frames}-frame clips but FVD scores {proto.num_frames} frames; "
                        "FVD needs a model of >= 5 latent frames (17 video frames)")

    # ---- 3. real data (same clip shape as the samples), labels, the I3D ----
    res_arg = H if H == W else (H, W)
    ds = _real_data(args, proto, frames, res_arg, proto.num_real, args.data_seed, f_t)
    n_real = proto.num_real if proto.num_real is not None else len(ds)
    if len(ds) < max(n_real, 2):
        raise UserError(f"protocol {proto.name!r} needs {max(n_real, 2)} real clips; --data {args.data} has {len(ds)}: "
                        "add clips or lower --num-real")
    pool, label_source = _label_pool(ds, n_real, cfg.num_classes, args.data)
    i3d = _load_i3d(args.i3d_weights, device, args.allow_unverified_i3d)

    # ---- 4. output folder, last ----
    existed = out.is_dir()
    C.writable_dir(out)
    print(f"walt eval fvd: {n_need_fake} sample(s) of {frames}x{H}x{W} from {ckpt_path} ({args.sampler} {steps} "
          f"steps, no guidance) vs {n_real} real clips of {C.describe_dataset(ds)}, protocol {proto.name} "
          f"[{proto.protocol_hash()}], device {device}")

    import torch

    from walt.pipeline import generate

    def generate_fn(seeds, labels):
        y = torch.tensor(labels, device=device) if labels is not None else None
        z = generate(net, schedule, (len(seeds), cfg.in_channels, T, h, w), sampler=args.sampler, steps=steps,
                     y=y, seeds=seeds, latent_stats=stats)  # (b, c, T, h, w) raw VAE space
        return vae.decode(z).float().clamp(-1, 1)  # (b, 3, frames, H, W)

    with C.cleanup_if_empty(out, existed), torch.no_grad():
        real = fvd_eval.real_feature_stats(ds, proto, i3d, cache, use_cache=not args.no_stats_cache,
                                           description={"data": args.data}, batch_size=batch, device=device,
                                           progress=not args.no_progress)
        print(f"walt eval fvd: real statistics {'from the cache' if real.cache_hit else 'computed'} "
              f"(key {real.key})")
        res = fvd_eval.fvd_of_generator(generate_fn, real, proto, i3d, label_pool=pool, seed=args.seed,
                                        batch_size=batch, device=device, progress=not args.no_progress)
        if res["labels"] is not None:
            res["labels"]["drawn_from"] = label_source
        res["generator"] = {"ckpt": str(ckpt_path), "vae": str(vae_path), "sampler": args.sampler, "steps": steps,
                            "guidance_scale": 1.0, "frames": frames, "resolution": [H, W]}
        res["real_data"] = {"arg": args.data, "seed": args.data_seed}
        _report_fvd(out, res)
    return 0


def _report_fvd(out, res) -> None:
    from walt.eval.fvd_eval import fvd_markdown

    p = res["protocol"]
    pm = f" ± {res['fvd_std']:.2f}" if res["repeats"] > 1 else ""
    _finish(out, "fvd", res, fvd_markdown(res),
            f"FVD {res['fvd']:.2f}{pm} ({p['name']}{'*' if p['overrides'] else ''} [{p['hash']}], "
            f"{res['num_real']} real vs {res['num_fake']} x {res['repeats']} generated)")


def run(args: argparse.Namespace) -> int:
    from walt.cli import UserError

    if args.eval_command == "recon":
        return _run_recon(args)
    if args.eval_command == "fvd":
        return _run_fvd(args)
    raise UserError("choose what to evaluate: `walt eval recon --vae ...` or `walt eval fvd ...` (see --help)")
