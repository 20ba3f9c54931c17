"""`walt study encoder | ablation | docs`: the project's research question (SPEC §6) and the paper's Table 3.

    walt study encoder --grid small --jobs 2 --out outputs/study-encoder          # ~2 h on 2 CPU cores
    walt study ablation --vae outputs/study-encoder/designs/ft2_fs4_c8_causal/vae/vae.safetensors \
        --jobs 2 --out outputs/study-ablation
    walt study docs --encoder outputs/study-encoder --ablation outputs/study-ablation --out docs/study
    walt study encoder --grid paper --out outputs/study-paper                     # 17x128x128, c = 4/8/16/32: a GPU job

Every design (or variant) gets the same wall-clock minutes of training (`--budget-minutes` per
row, or fixed `--vae-steps` / `--walt-steps`); `--jobs N` trains and scores N rows at a time in
1-thread worker processes, then times every row alone. Quality: reconstruction PSNR / SSIM /
rFVD, class accuracy, classifier-feature FD and FVD of class-conditional samples, each with a
95% interval and a paired difference against the first row. Rerunning the same command with the
same --out continues where a stopped or killed run left off.
"""

from __future__ import annotations

import argparse
import shlex
import sys

HELP = "research studies: causal-encoder design trade-offs (encoder), the paper's ablations (ablation), docs"


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="builtin", help="'builtin' (the demo's procedural clips) or a folder / .csv / "
                                                     "UCF-101 root of labelled videos")
    p.add_argument("--out", required=True, help="output folder (report.md, results.csv, plots; resumable)")
    p.add_argument("--preset", default="auto", choices=["auto", "cpu", "gpu", "paper"],
                   help="sizes: cpu (the demo's 32x32 clips and models) or paper (= gpu: 17x128x128, MAGVIT-v2 widths); "
                        "auto = paper for --grid paper or on CUDA, else cpu")
    p.add_argument("--jobs", type=int, default=1, help="rows trained and scored at a time, each in a 1-thread "
                                                       "process (the CPU preset is planned for 2)")
    p.add_argument("--resolution", type=int, default=None, help="square clip size (preset: 32 on CPU)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip, 1 + 8k (preset: 9 on CPU)")
    p.add_argument("--train-clips", type=int, default=None, help="clips to train the autoencoder on and to cache")
    p.add_argument("--eval-clips", type=int, default=None, help="real clips per held-out set (A: the reference, B: the "
                                                                "floor and the reconstructions)")
    p.add_argument("--fake-clips", type=int, default=None, help="class-conditional samples per seed set and weights")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="training wall-clock minutes per row (autoencoder + denoiser, a fixed split; preset: 19 on CPU)")
    p.add_argument("--vae-steps", type=int, default=None, help="fixed autoencoder steps per row instead of minutes")
    p.add_argument("--walt-steps", type=int, default=None, help="fixed W.A.L.T steps per row instead of minutes")
    p.add_argument("--sample-steps", type=int, default=None, help="DDIM steps when sampling (default 50, the paper's)")
    p.add_argument("--fvd-protocol", default="smoke", help="FVD protocol name recorded with the numbers (default smoke)")
    p.add_argument("--no-fvd", action="store_true", help="skip FVD / rFVD (no I3D needed); classifier scores stay")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any StudyConfig field, e.g. --set walt_depth=6 (repeatable)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads of this process (workers use 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="study", metavar="STUDY")
    e = sub.add_parser("encoder", help="sweep autoencoder designs: quality vs tokens vs throughput (SPEC §6)",
                       description="Sweep causal-autoencoder designs (f_t, f_s, c, causal, where time is compressed) "
                                   "under one training budget.")
    _common_args(e)
    e.add_argument("--grid", default="small", choices=["small", "paper", "full", "custom"],
                   help="small: 8 rows around the demo's autoencoder; paper: c = 4/8/16/32 at 17x128x128 (Table 3f); "
                        "full: every axis value, one at a time; custom: the axes given")
    e.add_argument("--temporal", default=None, help="temporal factors, e.g. 1,2,4")
    e.add_argument("--spatial", default=None, help="spatial factors, e.g. 4,8")
    e.add_argument("--channels", default=None, help="latent channels, e.g. 4,8,16")
    e.add_argument("--causal", default=None, choices=["yes", "no", "both"], help="causal, non-causal, or both")
    e.add_argument("--time-compression", default=None, choices=["late", "early", "both"],
                   help="where time is compressed: late levels (MAGVIT-v2), early (CogVideoX), or both")
    e.add_argument("--full-factorial", action="store_true",
                   help="every combination of the axes instead of one factor at a time around the default")
    a = sub.add_parser("ablation", help="the paper's Table 3 knobs at small scale, each against the baseline",
                       description="Self-conditioning, zero terminal SNR, latent normalisation, full attention, "
                                   "AdaLN-LoRA rank: each against the baseline, same latents and minutes.")
    _common_args(a)
    a.add_argument("--variants", default=None, help="comma-separated subset of: default, no_self_cond, no_zero_snr, "
                                                    "no_latent_norm, full_attention, adaln_lora_0, window_small "
                                                    "(default all but window_small; the first is the baseline)")
    a.add_argument("--vae", default=None, help="autoencoder checkpoint to share (default: train the default design)")
    d = sub.add_parser("docs", help="write docs/study/README.md (tables, plots) from finished studies",
                       description="Rebuild the study README from the output folders; the answer lines at its top "
                                   "(between the answer markers) are kept.")
    d.add_argument("--encoder", required=True, help="output folder of `walt study encoder`")
    d.add_argument("--ablation", default=None, help="output folder of `walt study ablation`")
    d.add_argument("--out", default="docs/study", help="where README.md and the plots go (default docs/study)")


def _preset(args, device) -> str:
    if args.preset != "auto":
        return args.preset
    return "paper" if getattr(args, "grid", None) == "paper" or device.type == "cuda" else "cpu"


def _config(args, device):
    from walt.commands import args as A
    from walt.errors import UserError
    from walt.study.study_config import study_config

    over = {}
    for flag, key in (("resolution", "resolution"), ("frames", "num_frames"), ("train_clips", "train_clips"),
                      ("eval_clips", "heldout_clips"), ("fake_clips", "samples_per_seed"), ("vae_steps", "vae_steps"),
                      ("walt_steps", "walt_steps"), ("sample_steps", "sample_steps")):
        v = getattr(args, flag)
        if v is not None:
            over[key] = A.positive_int(v, "--" + flag.replace("_", "-"))
    if args.budget_minutes is not None:
        if args.vae_steps is not None or args.walt_steps is not None:
            raise UserError("give either --budget-minutes or --vae-steps/--walt-steps, not both")
        over["budget_minutes"] = A.finite_float(args.budget_minutes, "--budget-minutes", 0.0, strict=True)
    elif args.vae_steps is not None or args.walt_steps is not None:
        over["budget_minutes"] = None  # fixed step counts
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    with A.user_errors():
        from walt.eval.fvd import fvd_protocol

        fvd_protocol(args.fvd_protocol)
        cfg = study_config(_preset(args, device))
    # the flags and --set together: only the final settings must be consistent
    return A.apply_sets(cfg, {**over, "seed": args.seed, "fvd": not args.no_fvd, "fvd_protocol": args.fvd_protocol,
                              **A.parse_sets(args.set)})


def _data(args, cfg):
    from walt.commands import args as A, files as F
    from walt.study.clip_sets import builtin_data, folder_data

    with A.user_errors(f"--data {args.data}: "):
        if args.data == "builtin":
            return builtin_data(cfg)
        ds = F.dataset_from_arg(args.data, cfg.num_frames, cfg.resolution,
                                num_samples=cfg.train_clips + 2 * cfg.heldout_clips, seed=cfg.seed, temporal_factor=1)
        return folder_data(ds, cfg, args.data)


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
    if args.time_compression is not None:
        axes["temporal_downsampling"] = {"both": ("late", "early")}.get(args.time_compression, (args.time_compression,))
    if axes and args.grid in ("small", "paper"):
        raise UserError("--temporal/--spatial/--channels/--causal/--time-compression need --grid custom (or full)")
    with A.user_errors():
        designs = design_grid(args.grid, args.full_factorial, **axes)
        from walt.autoencoder import preset_config

        for d in designs:
            preset_config("tiny", **cfg.vae_kwargs(), **d.vae_kwargs())  # factor / channel values are valid
            check_design(d, cfg)
    return designs


def _docs(args) -> int:
    from walt.commands import args as A
    from walt.study.docs import write_docs

    with A.user_errors():
        path = write_docs(args.encoder, args.ablation, args.out)
    print(f"wrote {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    from walt.commands import args as A, files as F
    from walt.errors import UserError

    if args.study is None:
        raise UserError("choose a study: `walt study encoder`, `walt study ablation` or `walt study docs` (see --help)")
    if args.study == "docs":
        return _docs(args)
    device = F.pick_device(args.device)
    if args.threads is not None:
        import torch

        torch.set_num_threads(A.positive_int(args.threads, "--threads"))
    jobs = A.positive_int(args.jobs, "--jobs")
    cfg = _config(args, device)
    if args.study == "encoder":
        designs = _designs(args, cfg)
    else:
        from walt.study.ablation import get_variants

        with A.user_errors("--variants: "):
            variants = get_variants(args.variants.split(",") if args.variants else None)
    vae = None if getattr(args, "vae", None) is None else F.resolve_checkpoint(
        args.vae, "--vae", ("vae.safetensors", "vae_ema.safetensors"))
    data = _data(args, cfg)
    i3d = None
    if cfg.fvd:
        from walt.study.fvd_features import load_fvd_network

        with A.user_errors():
            i3d = load_fvd_network(device)
    out = F.writable_dir(args.out)
    command = "walt " + shlex.join(sys.argv[sys.argv.index("study"):]) if "study" in sys.argv else None
    kw = dict(device=device, i3d=i3d, progress=not args.no_progress, command=command, jobs=jobs)
    from walt.study.sweep import StudyInterrupted

    # A StudySettingsError (another study in --out) is a UserError, raised before any work: one line, exit 2.
    try:
        if args.study == "encoder":
            from walt.study.encoder import run_encoder_study

            run_encoder_study(cfg, designs, out, data, **kw)
        else:
            from walt.study.ablation import run_ablation_study

            run_ablation_study(cfg, variants, out, data, vae_path=vae, **kw)
    except StudyInterrupted as e:
        print(f"walt study: stopped by {e.signal}, checkpoints saved; rerun the same command to continue",
              file=sys.stderr, flush=True)
        return e.exit_code
    return 0
