"""`walt eval`: reconstruction quality of an autoencoder, FVD of a model or of a video folder, and the
motion-class score of a class-conditional model (`walt eval classes`, `walt.commands.eval_classes`).

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
    from walt.commands.eval_classes import add_parser as add_classes

    sub = p.add_subparsers(dest="eval_command", metavar="{recon,fvd,classes}")
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
    f.add_argument("--protocol", default=None,
                   help="smoke | stylegan_v | magvit_ucf101 (generation; default smoke) or k600_frame_prediction | "
                        "smoke_frame_prediction (frame prediction; default with --task frame-prediction)")
    f.add_argument("--task", default=None, choices=["generation", "frame-prediction"],
                   help="generation (from noise) or frame-prediction (continue the first frames of each real clip, "
                        "the protocol's context_frames; needs a frame-conditioned model); default: the protocol's")
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
    add_classes(sub)


# ----------------------------------------------------------------------------- recon


def _run_recon(args) -> int:
    from walt.commands import args as A, files as F
    from walt.errors import UserError

    # ---- 1. numbers and flags ----
    batch = A.positive_int(args.batch_size, "--batch-size")
    if args.num_samples is not None:
        A.positive_int(args.num_samples, "--num-samples")
    if args.fvd_clips is not None:
        A.positive_int(args.fvd_clips, "--fvd-clips", minimum=2)
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    proto = None
    if not args.no_fvd:
        proto = A.fvd_protocol_arg(args.fvd_protocol, num_fake=args.fvd_clips, num_real=args.fvd_clips)
    n = args.num_samples if args.num_samples is not None else (proto.num_fake if proto is not None else 64)
    if proto is not None:
        if n < proto.num_fake:
            raise UserError(f"rFVD with protocol {proto.name!r} needs {proto.num_fake} clips, got --num-samples {n}; "
                            f"use --num-samples >= {proto.num_fake}, --fvd-clips {n}, or --no-fvd")
        if args.frames < proto.num_frames:
            raise UserError(f"rFVD needs clips of >= {proto.num_frames} frames, got --frames {args.frames}; "
                            "use --frames 17 or --no-fvd")
    device = F.pick_device(args.device)
    out = F.check_out_not_file(args.out)

    # ---- 2. autoencoder, then sizes that depend on it ----
    vae, _, vae_path = F.load_vae(args.vae, device)
    cfg = vae.config
    A.check_frames(args.frames, cfg.temporal_factor)
    A.check_resolution(args.resolution, cfg.spatial_factor)
    if args.chunk_frames is not None:
        cf = A.positive_int(args.chunk_frames, "--chunk-frames")
        if cf % cfg.temporal_factor:
            raise UserError(f"--chunk-frames {cf} must be a multiple of the temporal factor {cfg.temporal_factor}")

    # ---- 3. data, then the I3D ----
    if proto is not None:  # rFVD: the clips are read as the protocol says (split, frame stride)
        ds = F.real_dataset(args, proto, args.frames, args.resolution, n, args.seed, cfg.temporal_factor)
    else:
        ds = F.dataset_from_arg(args.data, args.frames, args.resolution, n, args.seed, cfg.temporal_factor,
                                sampling="deterministic")
    if len(ds) < n:
        need = f" (rFVD protocol {proto.name!r} needs {proto.num_fake})" if proto is not None else ""
        raise UserError(f"--data {args.data} has {len(ds)} usable clip(s) but {n} are needed{need}; "
                        f"add clips or lower --num-samples" + (" / --fvd-clips" if proto is not None else ""))
    i3d = F.load_fvd_network(args.i3d_weights, device, args.allow_unverified_i3d) if proto is not None else None

    # ---- 4. output folder, last ----
    existed = out.is_dir()
    F.writable_dir(out)
    print(f"walt eval recon: {F.describe_dataset(ds)} of {args.frames}x{args.resolution}x{args.resolution}, "
          f"{n} scored with {vae_path}" + (f", rFVD protocol {proto.name} [{proto.protocol_hash()}]" if proto else
                                           ", no rFVD") + f", device {device}")

    from walt.data.latent_dataset import vae_fingerprint
    from walt.eval.recon import recon_markdown, reconstruction_metrics

    with F.cleanup_if_empty(out, existed):
        res = reconstruction_metrics(vae, ds, num_samples=n, batch_size=batch, chunk_frames=args.chunk_frames,
                                     protocol=proto, i3d=i3d, device=device, progress=not args.no_progress)
        res["vae"] = {"path": str(vae_path), "sha256": vae_fingerprint(vae)}
        res["data"] = {"arg": args.data, "seed": args.seed, "frames": args.frames, "resolution": args.resolution}
        p, s, r = res["psnr"], res["ssim"], res["rfvd"]
        summary = (f"PSNR {p['mean']:.2f} dB" + (f", SSIM {s['mean']:.4f}" if s else "") +
                   (f", rFVD {r['fvd']:.2f} ({r['protocol']['name']} [{r['protocol']['hash']}], "
                    f"{r['num_real']} clips)" if r else "") + f" over {n} clips")
        F.write_eval_report(out, "recon", res, recon_markdown(res), summary)
    return 0


def run(args: argparse.Namespace) -> int:
    from walt.errors import UserError

    if args.eval_command == "recon":
        return _run_recon(args)
    if args.eval_command == "fvd":
        from walt.commands.eval_fvd import run_fvd

        return run_fvd(args)
    if args.eval_command == "classes":
        from walt.commands.eval_classes import run_classes

        return run_classes(args)
    raise UserError("choose what to evaluate: `walt eval recon --vae ...`, `walt eval fvd ...` or "
                    "`walt eval classes ...` (see --help)")
