"""`walt study encoder | ablation`: the project's research question (SPEC §6) and the paper's Table 3.

    walt study encoder --grid small --vae-steps 200 --walt-steps 300 --out outputs/study
    walt study encoder --grid custom --temporal 1,2,4,8 --channels 4,8,16,32 --budget-minutes 4 --out s2
    walt study encoder --grid full --full-factorial --data /videos --out s3            # a GPU job
    walt study ablation --vae outputs/study/designs/ft4_fs8_c8_causal/vae/vae.safetensors --out outputs/ablation

Every design (or variant) gets the same training budget: `--vae-steps` / `--walt-steps`, or
`--budget-minutes` of training per design (timed per design). FVD uses the Kinetics-400 I3D on
`--fake-clips` generated vs `--eval-clips` held-out real clips (`--no-fvd`: throughput and
reconstruction only). Rerunning with the same --out continues where a killed run stopped.
"""

from __future__ import annotations

import argparse
import shlex
import sys

HELP = "research studies: causal-encoder design trade-offs (encoder) and the paper's ablations (ablation)"


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="builtin", help="'builtin' (procedural dataset) or a folder / .csv / UCF-101 root of videos")
    p.add_argument("--out", required=True, help="output folder (results.csv, report.md, plots; resumable)")
    p.add_argument("--preset", default="auto", choices=["auto", "cpu", "gpu"],
                   help="sizes: cpu (32x32, tiny models) or gpu (64x64, bigger); auto = gpu on CUDA")
    p.add_argument("--resolution", type=int, default=None, help="square clip size (preset: 32 on CPU, 64 on GPU)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip, 1 + 8k (default 17; >= 16 for FVD)")
    p.add_argument("--train-clips", type=int, default=None, help="clips to train the autoencoder on and to cache")
    p.add_argument("--eval-clips", type=int, default=None, help="held-out real clips (reconstruction, FVD reference)")
    p.add_argument("--fake-clips", type=int, default=None, help="generated clips per design for FVD")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="training wall-clock minutes per design (half autoencoder, half W.A.L.T); "
                        "replaces --vae-steps / --walt-steps")
    p.add_argument("--vae-steps", type=int, default=None, help="autoencoder steps per design (same for all)")
    p.add_argument("--walt-steps", type=int, default=None, help="W.A.L.T steps per design (same for all)")
    p.add_argument("--sample-steps", type=int, default=None, help="DDIM steps when sampling (default 50, the paper's)")
    p.add_argument("--fvd-protocol", default="smoke", help="FVD protocol name recorded with the numbers (default smoke)")
    p.add_argument("--no-fvd", action="store_true", help="skip FVD / rFVD (no I3D needed): throughput and PSNR/SSIM only")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any StudyConfig field, e.g. --set walt_depth=6 (repeatable)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="study", metavar="STUDY")
    e = sub.add_parser("encoder", help="sweep autoencoder designs: quality vs tokens vs throughput (SPEC §6)",
                       description="Sweep causal-autoencoder designs (f_t, f_s, c, causal) under one training budget.")
    _common_args(e)
    e.add_argument("--grid", default="small", choices=["small", "full", "custom"],
                   help="small: 7 designs for a CPU; full: every axis value (one at a time); custom: the axes given")
    e.add_argument("--temporal", default=None, help="temporal factors, e.g. 1,2,4,8")
    e.add_argument("--spatial", default=None, help="spatial factors, e.g. 4,8,16")
    e.add_argument("--channels", default=None, help="latent channels, e.g. 4,8,16,32")
    e.add_argument("--causal", default=None, choices=["yes", "no", "both"], help="causal, non-causal, or both")
    e.add_argument("--full-factorial", action="store_true",
                   help="every combination of the axes instead of one factor at a time around f_t=4, f_s=8, c=8, causal")
    a = sub.add_parser("ablation", help="the paper's Table 3 knobs at small scale, each against the default",
                       description="Self-conditioning, zero terminal SNR, window size and full attention, AdaLN-LoRA rank, "
                                   "latent normalisation: each against the default, same latents and budget.")
    _common_args(a)
    a.add_argument("--variants", default=None, help="comma-separated subset of: default, no_self_cond, no_zero_snr, "
                                                    "window_small, full_attention, adaln_lora_0, no_latent_norm "
                                                    "(default all)")
    a.add_argument("--vae", default=None, help="autoencoder checkpoint to share (default: train the default design)")


def _config(args, device):
    from walt.commands import args as A
    from walt.errors import UserError
    from walt.study.config import study_config

    preset = args.preset if args.preset != "auto" else ("gpu" if device.type == "cuda" else "cpu")
    over = {}
    for flag, key in (("resolution", "resolution"), ("frames", "num_frames"), ("train_clips", "train_clips"),
                      ("eval_clips", "eval_clips"), ("fake_clips", "fake_clips"), ("vae_steps", "vae_steps"),
                      ("walt_steps", "walt_steps"), ("sample_steps", "sample_steps")):
        v = getattr(args, flag)
        if v is not None:
            over[key] = A.positive_int(v, "--" + flag.replace("_", "-"))
    if args.budget_minutes is not None:
        if args.vae_steps is not None or args.walt_steps is not None:
            raise UserError("give either --budget-minutes or --vae-steps/--walt-steps, not both")
        over["budget_minutes"] = A.finite_float(args.budget_minutes, "--budget-minutes", 0.0, strict=True)
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    with A.user_errors():
        from walt.eval.fvd import fvd_protocol

        fvd_protocol(args.fvd_protocol)
        cfg = study_config(preset, **over, seed=args.seed, fvd=not args.no_fvd, fvd_protocol=args.fvd_protocol)
    return A.apply_sets(cfg, A.parse_sets(args.set))


def _datasets(args, cfg):
    """(training pool, held-out clips, description): builtin = two seeds; a folder = first N / next M files."""
    from walt.commands import args as A, files as F

    if args.data == "builtin":
        from walt.data import SyntheticVideos

        with A.user_errors("--data builtin: "):
            train = SyntheticVideos(cfg.train_clips, num_frames=cfg.num_frames, resolution=cfg.resolution, seed=cfg.seed)
            held = SyntheticVideos(cfg.eval_clips, num_frames=cfg.num_frames, resolution=cfg.resolution,
                                   seed=cfg.seed + 10_007)
        return train, held, "builtin procedural dataset (held-out clips from another seed)"
    from torch.utils.data import Subset

    from walt.errors import UserError

    ds = F.dataset_from_arg(args.data, cfg.num_frames, cfg.resolution, num_samples=cfg.train_clips + cfg.eval_clips,
                            seed=cfg.seed, temporal_factor=1)
    if len(ds) < cfg.eval_clips + 2:
        raise UserError(f"--data {args.data} has {len(ds)} clips; need at least --eval-clips + 2 = {cfg.eval_clips + 2}")
    n_train = len(ds) - cfg.eval_clips
    train = Subset(ds, range(n_train))
    train.class_names = getattr(ds, "class_names", None)
    return train, Subset(ds, range(n_train, len(ds))), f"{args.data} ({n_train} training + {cfg.eval_clips} held-out clips)"


def _designs(args, cfg):
    from walt.commands import args as A
    from walt.errors import UserError
    from walt.study.encoder import check_design, design_grid

    axes = {}
    for flag, key in (("temporal", "temporal_factor"), ("spatial", "spatial_factor"), ("channels", "latent_channels")):
        v = getattr(args, flag)
        if v is not None:
            axes[key] = tuple(A.parse_int_list(v, f"--{flag}"))
    if args.causal is not None:
        axes["causal"] = {"yes": (True,), "no": (False,), "both": (True, False)}[args.causal]
    if axes and args.grid == "small":
        raise UserError("--temporal/--spatial/--channels/--causal need --grid custom (or full)")
    with A.user_errors():
        designs = design_grid(args.grid, args.full_factorial, **axes)
        from walt.autoencoder import preset_config

        for d in designs:
            preset_config("tiny", **cfg.vae_kwargs(), **d.vae_kwargs())  # factor / channel values are valid
            check_design(d, cfg)
    return designs


def run(args: argparse.Namespace) -> int:
    from walt.commands import args as A, files as F
    from walt.errors import UserError

    if args.study is None:
        raise UserError("choose a study: `walt study encoder` or `walt study ablation` (see --help)")
    device = F.pick_device(args.device)
    if args.threads is not None:
        import torch

        torch.set_num_threads(A.positive_int(args.threads, "--threads"))
    cfg = _config(args, device)
    if args.study == "encoder":
        designs = _designs(args, cfg)
    else:
        from walt.study.ablation import get_variants

        with A.user_errors("--variants: "):
            variants = get_variants(args.variants.split(",") if args.variants else None)
        if args.vae is not None:
            F.resolve_checkpoint(args.vae, "--vae", ("vae.safetensors", "vae_ema.safetensors"))
    train, held, desc = _datasets(args, cfg)
    i3d = None
    if cfg.fvd:
        from walt.study.fvd import load_fvd_network

        with A.user_errors():
            i3d = load_fvd_network(device)
    out = F.writable_dir(args.out)
    command = "walt " + shlex.join(sys.argv[sys.argv.index("study"):]) if "study" in sys.argv else None
    progress = not args.no_progress
    # A StudySettingsError (another study in --out) is a UserError, raised before any work: one line, exit 2.
    if args.study == "encoder":
        from walt.study.encoder import run_encoder_study

        run_encoder_study(cfg, designs, out, train, held, device, i3d=i3d, progress=progress, command=command,
                          data_description=desc)
    else:
        from walt.study.ablation import run_ablation_study

        vae = None
        if args.vae is not None:
            vae = F.resolve_checkpoint(args.vae, "--vae", ("vae.safetensors", "vae_ema.safetensors"))
        run_ablation_study(cfg, variants, out, train, held, device, vae_path=vae, i3d=i3d, progress=progress,
                           command=command, data_description=desc)
    return 0
