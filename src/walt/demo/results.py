"""The last stage of `walt demo`: sample, measure, and write videos, grids, curves and the report.

Samples (SPEC §3: DDIM, 50 steps, no guidance by default):
  * class-conditional: `samples_per_class` videos per motion class from pure noise;
  * frame prediction: the first `context_latent_frames` latent frames of a held-out clip of each
    class (1 = image-to-video) condition the denoiser, which generates the rest (paper §3.2).

Measurements, all on clips neither network trained on:
  * reconstruction PSNR / SSIM of the autoencoder;
  * motion energy = mean |x_t - x_{t-1}| over frames and pixels, per class, for real clips,
    reconstructions and samples: a sample that is frozen (or just flickering noise) shows up here;
  * frame-prediction PSNR of the generated continuation against the real one, next to the
    "nothing moves" baseline that repeats the context frame: beating it means the predicted
    motion goes the right way.
  * FVD is measured while the denoiser trains (stage 3, `walt.demo.fvd_curve`); this stage plots it
    (fvd_curve.png) and reports it with its protocol, or the reason it was skipped.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from walt.config import config_to_dict
from walt.demo.demo_config import DemoConfig
from walt.demo.pictures import save_fvd_curve, save_labelled_grid, save_training_curves, side_by_side
from walt.demo.render import vae_recon_term, write_report

OUTPUT_FILES = ("report.md", "report.html", "metrics.json", "samples_grid.png", "predictions_grid.png",
                "reconstructions_grid.png", "curves.png", "confusion_matrix.png")


def motion_energy(video: torch.Tensor) -> torch.Tensor:
    """(N, 3, T, H, W) in [-1, 1] -> (N,) mean absolute frame-to-frame change (in [0, 2] units)."""
    return (video[:, :, 1:] - video[:, :, :-1]).abs().mean(dim=(1, 2, 3, 4))


@torch.no_grad()
def _reconstruct(vae, x: torch.Tensor, device, batch: int = 8) -> torch.Tensor:
    outs = []
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch].to(device)
        outs.append(vae.decode(vae.encode(xb)).float().clamp(-1, 1).cpu())  # (b, 3, T, H, W)
    return torch.cat(outs)


@torch.no_grad()
def write_outputs(cfg: DemoConfig, out: Path, vae, device, seed: int, stages: dict[str, dict], machine: dict,
                  minutes: float, preset: str, finish_stage: Callable[[dict], None],
                  run_seconds: Callable[[], float]) -> dict[str, Any]:
    """Sample, measure, write every output file into `out`; returns the summary (also metrics.json)."""
    from walt.cascade.stage import Stage
    from walt.demo.train_stages import heldout_dataset
    from walt.eval.metrics import psnr, ssim

    stage = Stage.load(out / "walt" / "walt_ema.safetensors").to(device)
    held = heldout_dataset(cfg, seed)
    real = torch.stack([held[i]["video"] for i in range(len(held))])  # (N, 3, T, H, W)
    real_labels = [held[i]["label"] for i in range(len(held))]
    t = time.time()
    recon = _reconstruct(vae, real, device)
    recon_seconds = time.time() - t
    rec_psnr, rec_ssim = float(psnr(recon, real)), float(ssim(recon, real)) if min(real.shape[-2:]) >= 11 else float("nan")
    samples = _class_samples(cfg, stage, vae, seed, device)
    pred = _frame_prediction(cfg, stage, vae, real, real_labels, seed, device)
    scores = class_scores(cfg, out, vae, stage, seed, device, samples)
    samples = _first_per_class(samples, cfg.score_samples_per_class, cfg.samples_per_class)  # what the grid shows
    videos = _write_media(cfg, out, real, real_labels, recon, samples, pred)
    _write_curves(cfg, out, stages)
    net = stage.net
    _, t_lat, h, w = net.config.in_channels, *net.config.input_size
    n_tokens = t_lat * h * w // net.config.patch_size ** 2
    clips, seconds = len(samples["labels"]) + len(pred["labels"]), samples["seconds"] + pred["seconds"]
    sample_info = {
        "clips": clips, "sampler": cfg.sampler, "steps": cfg.sample_steps,
        "class_conditional_seconds": samples["seconds"], "frame_prediction_seconds": pred["seconds"],
        "clips_per_s": clips / max(seconds, 1e-9), "tokens_per_s": clips * n_tokens * cfg.sample_steps / max(seconds, 1e-9),
        "reconstruction_clips_per_s": len(real) / max(recon_seconds, 1e-9),
    }
    finish_stage({"clips": clips})
    stages = dict(stages)
    fvd = stages["walt"].get("fvd") or {}
    summary = {
        "command": " ".join(["walt"] + sys.argv[1:]) if Path(sys.argv[0]).name in ("walt", "__main__.py") else None,
        "preset": preset, "minutes_budget": minutes, "seed": seed, "machine": machine,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "sizes": {"clip": [3, cfg.num_frames, cfg.resolution, cfg.resolution],
                  "latent": [net.config.in_channels, t_lat, h, w], "tokens_per_clip": n_tokens,
                  "vae_params": stages["vae"].get("params"), "walt_params": stages["walt"].get("params")},
        "reconstruction": {"psnr_db": rec_psnr, "ssim": rec_ssim, "heldout_clips": len(real)},
        "frame_prediction": pred["metrics"],
        "motion_energy": _motion_per_class(cfg, real, real_labels, recon, samples),
        "fvd": fvd or stages["walt"].get("fvd"),
        "pretrained_autoencoder": bool(stages["vae"].get("pretrained")),
        **scores,
        "sampling": sample_info,
        "stages": stages,
        "total_seconds": run_seconds(),
        "videos": videos,
        "config": config_to_dict(cfg),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    write_report(out, summary)
    return summary


def _class_samples(cfg: DemoConfig, stage, vae, seed: int, device) -> dict[str, Any]:
    """`samples_per_class` class-conditional videos per motion class from pure noise, class-major order."""
    from walt.pipeline import generate

    net = stage.net
    per = max(cfg.samples_per_class, cfg.score_samples_per_class)
    y = torch.arange(len(cfg.classes)).repeat_interleave(per)  # (n,)
    t = time.time()
    z = generate(net, stage.schedule, (len(y), net.config.in_channels, *net.config.input_size), sampler=cfg.sampler,
                 steps=cfg.sample_steps, y=y.to(device), guidance_scale=cfg.guidance_scale,
                 seeds=[seed * 100_003 + i for i in range(len(y))], latent_stats=stage.latent_stats)
    videos = torch.cat([vae.decode(z[i:i + 32].to(device)).float().clamp(-1, 1).cpu()
                        for i in range(0, len(z), 32)])  # (n, 3, T, H, W)
    return {"videos": videos, "labels": y, "seconds": time.time() - t}


def _first_per_class(samples: dict[str, Any], per: int, keep: int) -> dict[str, Any]:
    """The first `keep` of each class's `per` samples (class-major order)."""
    per = max(per, keep)
    idx = torch.tensor([i for i in range(len(samples["labels"])) if i % per < keep])
    return {**samples, "videos": samples["videos"][idx], "labels": samples["labels"][idx]}


def demo_classifier(cfg: DemoConfig, vae, seed: int):
    """(the motion classifier of `walt.eval.class_score` for this autoencoder and the demo's clips, its record).

    It learns from the autoencoder's reconstructions of training clips and is cached by the
    autoencoder's weights hash and the clips' settings, so a rerun (or the report stage after
    the stage that trained it) loads it in a moment.
    """
    from walt.eval.class_score import ClassifierConfig, classifier_for

    ccfg = ClassifierConfig(steps=cfg.classifier_steps, train_clips=cfg.classifier_train_clips, seed=seed)
    data_key = {"dataset": "walt.demo.clips.DemoVideos", "seed": seed, **{k: getattr(cfg, k) for k in (
        "resolution", "num_frames", "classes", "backgrounds", "textures", "shapes", "shape_scale", "speed_scale")}}
    clf, built = classifier_for(vae, lambda n: _clips(cfg, n, seed), len(cfg.classes), data_key, ccfg)
    return clf, {"cached": built["cached"], "train_clips": ccfg.train_clips, "steps": ccfg.steps,
                 "seconds": built["seconds"]}


def _clips(cfg: DemoConfig, n: int, clip_seed: int):
    from walt.demo.clips import demo_videos

    ds = demo_videos(cfg, n, clip_seed)
    return torch.stack([ds[i]["video"] for i in range(n)]), torch.tensor([ds[i]["label"] for i in range(n)])


def class_scores(cfg: DemoConfig, out: Path, vae, stage, seed: int, device, samples: dict[str, Any]) -> dict[str, Any]:
    """The motion-class score (`walt.eval.class_score`) of the samples, its ceiling and the label influence.

    The classifier (`demo_classifier`) is scored on held-out clips of a third seed (real and
    reconstructed: the ceiling a denoiser can reach through this autoencoder) and on the
    class-conditional samples (right when it names the class that was asked for). Writes
    confusion_matrix.png.
    """
    from walt.eval.class_score import score_clips, write_confusion_png
    from walt.eval.label_influence import label_influence

    t0 = time.time()
    names = list(cfg.classes)
    clf, built = demo_classifier(cfg, vae, seed)
    real, labels = _clips(cfg, cfg.score_heldout_clips, seed + 20_011)  # seen by no network, nor by the classifier
    scores = score_clips(clf, names, samples["videos"], samples["labels"], real, labels, vae)
    acc = scores["class_accuracy"]
    write_confusion_png(acc["confusion"], names, out / "confusion_matrix.png",
                        f"class-conditional samples: {acc['generated']:.2f} right (chance {1 / len(names):.2f})")
    with torch.no_grad():
        n = min(64, len(real))
        z = stage.latent_stats.normalize(torch.cat([vae.encode(real[i:min(i + 32, n)].to(device)) for i in range(0, n, 32)]))
    influence = (label_influence(stage.net, stage.schedule, z.to(device), labels[:len(z)].to(device))
                 if len(names) > 1 else {})
    acc.update(guidance_scale=cfg.guidance_scale, seconds=time.time() - t0, classifier=built)
    return {**scores, "label_influence": influence}


def _frame_prediction(cfg: DemoConfig, stage, vae, real, real_labels, seed: int, device) -> dict[str, Any]:
    """One held-out clip per class, its first k latent frames given (paper §3.2), scored against the
    clip's real continuation and against the "nothing moves" baseline that repeats the context frame."""
    from walt.eval.metrics import psnr
    from walt.pipeline import generate

    net = stage.net
    t_lat = net.config.input_size[0]
    k = min(cfg.context_latent_frames, t_lat - 1)
    first = [real_labels.index(i) for i in range(len(cfg.classes)) if i in real_labels]
    ctx_real = real[first]  # (m, 3, T, H, W)
    labels = torch.tensor([real_labels[i] for i in first])
    t = time.time()
    ctx = vae.encode(ctx_real.to(device))[:, :, :k]  # (m, c, k, h, w) raw latents
    zp = generate(net, stage.schedule, (len(first), net.config.in_channels, *net.config.input_size),
                  sampler=cfg.sampler, steps=cfg.sample_steps, y=labels.to(device), guidance_scale=cfg.guidance_scale,
                  seeds=[seed * 100_003 + 50_000 + i for i in range(len(first))], context=ctx,
                  latent_stats=stage.latent_stats)
    preds = vae.decode(zp.to(device)).float().clamp(-1, 1).cpu()  # (m, 3, T, H, W)
    seconds = time.time() - t
    f_ctx = 1 + vae.config.temporal_factor * (k - 1)  # pixel frames covered by the context latents
    future = slice(f_ctx, None)
    static = ctx_real[:, :, f_ctx - 1:f_ctx].expand_as(ctx_real[:, :, future])  # "nothing moves" baseline
    metrics = {"context_latent_frames": k, "context_pixel_frames": f_ctx,
               "psnr_db": float(psnr(preds[:, :, future], ctx_real[:, :, future])),
               "static_baseline_psnr_db": float(psnr(static, ctx_real[:, :, future])), "clips": len(first)}
    return {"real": ctx_real, "videos": preds, "labels": labels, "seconds": seconds, "metrics": metrics}


def _motion_per_class(cfg: DemoConfig, real, real_labels, recon, samples) -> list[dict[str, Any]]:
    """Motion energy per class of real clips, reconstructions and samples: frozen or flickering samples show here."""
    e_real, e_rec, e_gen = motion_energy(real), motion_energy(recon), motion_energy(samples["videos"])
    rows = []
    for i, name in enumerate(cfg.classes):
        rm = torch.tensor([l == i for l in real_labels])
        rows.append({"class": name, "real": float(e_real[rm].mean()) if rm.any() else float("nan"),
                     "reconstructed": float(e_rec[rm].mean()) if rm.any() else float("nan"),
                     "generated": float(e_gen[samples["labels"] == i].mean())})
    return rows


def _write_media(cfg: DemoConfig, out: Path, real, real_labels, recon, samples, pred) -> list[str]:
    """MP4 + GIF per sample and per prediction (real | predicted), and the three labelled grids."""
    from walt.io import write_gif, write_mp4

    names, per = list(cfg.classes), cfg.samples_per_class
    sdir, pdir = out / "samples", out / "predictions"
    for d in (sdir, pdir):
        d.mkdir(exist_ok=True)
    videos = []
    for j, (v, lab) in enumerate(zip(samples["videos"], samples["labels"].tolist())):
        stem = f"{names[lab]}_{j % per}"
        write_mp4(sdir / f"{stem}.mp4", v, fps=cfg.fps)
        write_gif(sdir / f"{stem}.gif", v, fps=cfg.fps)
        videos.append(f"samples/{stem}")
    for v_real, v_pred, lab in zip(pred["real"], pred["videos"], pred["labels"].tolist()):
        both = side_by_side(v_real, v_pred)  # real | predicted
        write_mp4(pdir / f"{names[lab]}.mp4", both, fps=cfg.fps)
        write_gif(pdir / f"{names[lab]}.gif", both, fps=cfg.fps)
        videos.append(f"predictions/{names[lab]}")
    save_labelled_grid(out / "samples_grid.png", samples["videos"],
                       [f"{names[l]} #{j % per}" for j, l in enumerate(samples["labels"].tolist())])
    inter = torch.stack([v for pair in zip(pred["real"], pred["videos"]) for v in pair])
    save_labelled_grid(out / "predictions_grid.png", inter,
                       [f"{names[l]} {kind}" for l in pred["labels"].tolist() for kind in ("real", "predicted")])
    m = min(len(real), 2 * len(names))
    inter = torch.stack([v for pair in zip(real[:m], recon[:m]) for v in pair])
    save_labelled_grid(out / "reconstructions_grid.png", inter,
                       [f"{names[real_labels[i]]} {kind}" for i in range(m) for kind in ("real", "recon")])
    return videos


def _write_curves(cfg: DemoConfig, out: Path, stages: dict[str, dict]) -> None:
    """Training curves of both stages, and the FVD curve when the denoiser's FVD was measured."""
    from walt.experiment.budget import read_log

    recon_type, recon_weight = vae_recon_term(stages, cfg.vae_recon_type)
    save_training_curves(out / "curves.png", read_log(out / "vae" / "log.csv"), read_log(out / "walt" / "log.csv"),
                         recon=recon_type.upper(), recon_weight=recon_weight)
    fvd = stages["walt"].get("fvd") or {}
    if fvd.get("points"):
        save_fvd_curve(out / "fvd_curve.png", fvd)
    else:
        (out / "fvd_curve.png").unlink(missing_ok=True)
