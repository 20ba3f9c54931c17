"""`walt eval classes`: the motion-class score of a class-conditional W.A.L.T on the built-in dataset.

    walt eval classes --ckpt runs/walt --vae runs/vae --frames 9 --resolution 32 --out eval/classes
    walt eval classes --ckpt outputs/demo/walt --vae outputs/demo/vae --demo outputs/demo --out eval/classes

A small 3D CNN (`walt.eval.class_score`) learns the motion classes from the autoencoder's
reconstructions of training clips (cached by the autoencoder's weights hash); it then names the
class of `--samples-per-class` samples per class (DDIM, `--guidance-scale`), of held-out real
clips and of their reconstructions (the ceiling). `--demo DIR` draws the clips the way that demo
run did (its appearance restriction); otherwise they are the full built-in dataset.
Writes classes.json, classes.md and confusion_matrix.png into --out.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    c = sub.add_parser("classes", help="motion-class accuracy of class-conditional samples (built-in dataset)",
                       description="Motion-class accuracy of a class-conditional W.A.L.T on the built-in dataset.")
    c.add_argument("--ckpt", required=True, help="WALT checkpoint (or a `walt train` run folder)")
    c.add_argument("--vae", required=True, help="its autoencoder checkpoint (or a train-vae run folder)")
    c.add_argument("--demo", default=None, help="a `walt demo` output folder: draw clips as that run did")
    c.add_argument("--frames", type=int, default=9, help="frames per clip without --demo (default 9)")
    c.add_argument("--resolution", type=int, default=32, help="square clip size without --demo (default 32)")
    c.add_argument("--samples-per-class", type=int, default=16, help="class-conditional samples per class (default 16)")
    c.add_argument("--heldout-clips", type=int, default=256, help="held-out real clips (default 256)")
    c.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance (default 1: none)")
    c.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50, paper)")
    c.add_argument("--classifier-clips", type=int, default=1024, help="reconstructed training clips (default 1024)")
    c.add_argument("--classifier-steps", type=int, default=600, help="classifier training steps (default 600)")
    c.add_argument("--seed", type=int, default=0, help="seeds the clips, the classifier and the samples")
    c.add_argument("--out", required=True, help="output folder for classes.json + classes.md")
    c.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")


def _clip_source(args, num_classes: int):
    """(clips(n, seed) -> (videos, labels), class names, data key) of --demo or the built-in dataset."""
    import json
    from pathlib import Path

    import torch

    from walt.errors import UserError

    if args.demo is not None:
        from walt.config import config_from_dict
        from walt.demo.demo_config import DemoConfig
        from walt.demo.clips import demo_videos

        settings = Path(args.demo) / "settings.json"
        if not settings.is_file():
            raise UserError(f"--demo {args.demo} holds no settings.json: pass a `walt demo` output folder")
        cfg = config_from_dict(DemoConfig, json.loads(settings.read_text())["config"])
        make = lambda n, seed: demo_videos(cfg, n, seed)  # noqa: E731
        names, key = list(cfg.classes), {"demo": json.loads(settings.read_text())["config"]}
    else:
        from walt.data.synthetic import CLASS_NAMES, SyntheticVideos

        names = list(CLASS_NAMES)
        make = lambda n, seed: SyntheticVideos(n, args.frames, args.resolution, seed)  # noqa: E731
        key = {"builtin": True, "frames": args.frames, "resolution": args.resolution}
    if len(names) != num_classes:
        raise UserError(f"--ckpt has {num_classes} classes but the clips have {len(names)} ({', '.join(names)}); "
                        "pass the --demo folder it was trained in")

    def clips(n: int, seed: int):
        ds = make(n, seed)
        return torch.stack([ds[i]["video"] for i in range(n)]), torch.tensor([ds[i]["label"] for i in range(n)])

    return clips, names, key


def run_classes(args: argparse.Namespace) -> int:
    import time

    import torch

    from walt.commands import args as A, files as F
    from walt.errors import UserError

    per = A.positive_int(args.samples_per_class, "--samples-per-class")
    held = A.positive_int(args.heldout_clips, "--heldout-clips", minimum=2)
    steps = A.positive_int(args.steps, "--steps")
    guidance = A.finite_float(args.guidance_scale, "--guidance-scale", 0.0)
    ccfg_kw = {"train_clips": A.positive_int(args.classifier_clips, "--classifier-clips"),
               "steps": A.positive_int(args.classifier_steps, "--classifier-steps")}
    device = F.pick_device(args.device)
    out = F.check_out_not_file(args.out)
    stage, ckpt = F.load_stage(args.ckpt, device)
    vae, _, vae_path = F.load_vae(args.vae, device)
    F.check_same_vae(stage, f"--ckpt {ckpt}", vae, vae_path)
    cfg = stage.net.config
    if cfg.num_classes < 2:
        raise UserError(f"--ckpt {ckpt} is not class-conditional (num_classes={cfg.num_classes}); "
                        "the class score needs a model trained with class labels")
    clips, names, key = _clip_source(args, cfg.num_classes)
    t_lat = cfg.input_size[0]
    frames = 1 + vae.config.temporal_factor * (t_lat - 1)
    existed = out.is_dir()
    F.writable_dir(out)
    print(f"walt eval classes: {per} samples per class of {len(names)} classes from {ckpt}, guidance {guidance:g}, "
          f"DDIM {steps}; {held} held-out clips; device {device}")

    from walt.eval.class_score import ClassifierConfig, classifier_for, score_clips, write_confusion_png
    from walt.pipeline import generate

    t0 = time.time()
    with F.cleanup_if_empty(out, existed):
        clf, built = classifier_for(vae, lambda n: clips(n, args.seed), len(names), key,
                                    ClassifierConfig(seed=args.seed, **ccfg_kw), progress=not args.no_progress)
        real, labels = clips(held, args.seed + 20_011)
        if real.shape[2] != frames:
            raise UserError(f"the model makes {frames}-frame clips but the clips have {real.shape[2]}; "
                            f"pass --frames {frames}")
        y = torch.arange(len(names)).repeat_interleave(per)
        z = generate(stage.net, stage.schedule, None, steps=steps, y=y.to(device), guidance_scale=guidance,
                     seeds=[args.seed * 100_003 + i for i in range(len(y))], latent_stats=stage.latent_stats,
                     progress=not args.no_progress)
        with torch.no_grad():
            videos = torch.cat([vae.decode(z[i:i + 32]).float().clamp(-1, 1).cpu() for i in range(0, len(z), 32)])
        res = score_clips(clf, names, videos, y, real, labels, vae)
        acc = res["class_accuracy"]
        acc.update(guidance_scale=guidance, steps=steps, classifier=built, seconds=time.time() - t0)
        res.update(ckpt=str(ckpt), vae=str(vae_path), data=key)
        write_confusion_png(acc["confusion"], names, out / "confusion_matrix.png",
                            f"samples: {acc['generated']:.2f} right (chance {acc['chance']:.2f})")
        md = ["# Motion-class score", "", f"`{ckpt}` with `{vae_path}`; {len(y)} samples, guidance {guidance:g}.", "",
              "| clips | accuracy |", "|---|---:|",
              f"| class-conditional samples | {acc['generated']:.3f} |",
              f"| held-out reconstructions (ceiling) | {acc['reconstructed']:.3f} |",
              f"| held-out real clips | {acc['real']:.3f} |", f"| chance | {acc['chance']:.3f} |", "",
              f"Classifier-feature Fréchet distance, samples vs real: {res['feature_fd']['generated_vs_real']:.1f} "
              f"(reconstructions vs real: {res['feature_fd']['reconstructed_vs_real']:.1f}).", "",
              "| class | samples right |", "|---|---:|"]
        md += [f"| {n} | {v:.2f} |" for n, v in acc["per_class"].items()]
        F.write_eval_report(out, "classes", res, "\n".join(md) + "\n",
                            f"samples {acc['generated']:.3f} right (ceiling {acc['reconstructed']:.3f}, "
                            f"real {acc['real']:.3f}, chance {acc['chance']:.3f})")
    return 0
