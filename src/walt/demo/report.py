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
"""

from __future__ import annotations

import html
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from walt.config import config_from_dict, config_to_dict
from walt.demo.config import DemoConfig
from walt.demo.plots import save_labelled_grid, save_training_curves, side_by_side

OUTPUT_FILES = ("report.md", "report.html", "metrics.json", "samples_grid.png", "predictions_grid.png",
                "reconstructions_grid.png", "curves.png")


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


def _load_denoiser(out: Path, device):
    from walt.autoencoder import LatentStats
    from walt.checkpoint import load_checkpoint
    from walt.denoiser import WALT
    from walt.diffusion import DiffusionConfig, DiffusionSchedule

    state = load_checkpoint(out / "walt" / "walt_ema.safetensors")
    net = WALT.from_checkpoint_state(state).to(device).eval().requires_grad_(False)
    stats = LatentStats.from_dict(state["latent_stats"])
    schedule = DiffusionSchedule(config_from_dict(DiffusionConfig, state["diffusion_config"]))
    return net, stats, schedule


@torch.no_grad()
def write_outputs(cfg: DemoConfig, out: Path, vae, device, seed: int, stages: dict[str, dict], machine: dict,
                  minutes: float, preset: str, finish_stage: Callable[[dict], None],
                  run_seconds: Callable[[], float]) -> dict[str, Any]:
    """Sample, measure, write every output file into `out`; returns the summary (also metrics.json)."""
    from walt.data.video_io import write_gif, write_mp4
    from walt.demo.run import heldout_dataset, _read_log
    from walt.eval.metrics import psnr, ssim
    from walt.pipeline import generate

    t0 = time.time()
    net, stats, schedule = _load_denoiser(out, device)
    names = list(cfg.classes)
    nc = len(names)
    c, t_lat, h, w = net.config.in_channels, *net.config.input_size

    # ---- held-out clips: reconstruction quality ----
    held = heldout_dataset(cfg, seed)
    real = torch.stack([held[i]["video"] for i in range(len(held))])  # (N, 3, T, H, W)
    real_labels = [held[i]["label"] for i in range(len(held))]
    t = time.time()
    recon = _reconstruct(vae, real, device)
    recon_seconds = time.time() - t
    rec_psnr, rec_ssim = float(psnr(recon, real)), float(ssim(recon, real)) if min(real.shape[-2:]) >= 11 else float("nan")

    # ---- class-conditional samples: samples_per_class per class, class-major order ----
    y = torch.arange(nc).repeat_interleave(cfg.samples_per_class)  # (n,)
    seeds = [seed * 100_003 + i for i in range(len(y))]
    t = time.time()
    z = generate(net, schedule, (len(y), c, t_lat, h, w), sampler=cfg.sampler, steps=cfg.sample_steps,
                 y=y.to(device), guidance_scale=cfg.guidance_scale, seeds=seeds, latent_stats=stats)
    samples = vae.decode(z.to(device)).float().clamp(-1, 1).cpu()  # (n, 3, T, H, W)
    sample_seconds = time.time() - t

    # ---- frame prediction: one held-out clip per class, first k latent frames given ----
    k = min(cfg.context_latent_frames, t_lat - 1)
    first = [real_labels.index(i) for i in range(nc) if i in real_labels]
    ctx_real = real[first]  # (m, 3, T, H, W)
    ctx_labels = torch.tensor([real_labels[i] for i in first])
    t = time.time()
    ctx = vae.encode(ctx_real.to(device))[:, :, :k]  # (m, c, k, h, w) raw latents
    zp = generate(net, schedule, (len(first), c, t_lat, h, w), sampler=cfg.sampler, steps=cfg.sample_steps,
                  y=ctx_labels.to(device), guidance_scale=cfg.guidance_scale,
                  seeds=[seed * 100_003 + 50_000 + i for i in range(len(first))], context=ctx, latent_stats=stats)
    preds = vae.decode(zp.to(device)).float().clamp(-1, 1).cpu()  # (m, 3, T, H, W)
    predict_seconds = time.time() - t
    f_ctx = 1 + vae.config.temporal_factor * (k - 1)  # pixel frames covered by the context latents
    future = slice(f_ctx, None)
    static = ctx_real[:, :, f_ctx - 1:f_ctx].expand_as(ctx_real[:, :, future])  # "nothing moves" baseline
    pred_psnr = float(psnr(preds[:, :, future], ctx_real[:, :, future]))
    static_psnr = float(psnr(static, ctx_real[:, :, future]))

    # ---- motion energy per class ----
    e_real, e_rec, e_gen = motion_energy(real), motion_energy(recon), motion_energy(samples)
    per_class = []
    for i, name in enumerate(names):
        rm = torch.tensor([l == i for l in real_labels])
        per_class.append({"class": name, "real": float(e_real[rm].mean()) if rm.any() else float("nan"),
                          "reconstructed": float(e_rec[rm].mean()) if rm.any() else float("nan"),
                          "generated": float(e_gen[y == i].mean())})

    # ---- files: videos, grids, curves ----
    sdir, pdir = out / "samples", out / "predictions"
    for d in (sdir, pdir):
        d.mkdir(exist_ok=True)
    videos = []
    for j, (v, lab) in enumerate(zip(samples, y.tolist())):
        stem = f"{names[lab]}_{j % cfg.samples_per_class}"
        write_mp4(sdir / f"{stem}.mp4", v, fps=cfg.fps)
        write_gif(sdir / f"{stem}.gif", v, fps=cfg.fps)
        videos.append(f"samples/{stem}")
    for v_real, v_pred, lab in zip(ctx_real, preds, ctx_labels.tolist()):
        both = side_by_side(v_real, v_pred)  # real | predicted
        write_mp4(pdir / f"{names[lab]}.mp4", both, fps=cfg.fps)
        write_gif(pdir / f"{names[lab]}.gif", both, fps=cfg.fps)
        videos.append(f"predictions/{names[lab]}")
    save_labelled_grid(out / "samples_grid.png", samples,
                       [f"{names[l]} #{j % cfg.samples_per_class}" for j, l in enumerate(y.tolist())])
    inter = torch.stack([v for pair in zip(ctx_real, preds) for v in pair])
    save_labelled_grid(out / "predictions_grid.png", inter,
                       [f"{names[l]} {kind}" for l in ctx_labels.tolist() for kind in ("real", "predicted")])
    m = min(len(real), 2 * nc)
    inter = torch.stack([v for pair in zip(real[:m], recon[:m]) for v in pair])
    save_labelled_grid(out / "reconstructions_grid.png", inter,
                       [f"{names[real_labels[i]]} {kind}" for i in range(m) for kind in ("real", "recon")])
    save_training_curves(out / "curves.png", _read_log(out / "vae" / "log.csv"), _read_log(out / "walt" / "log.csv"))

    n_tokens = t_lat * h * w // net.config.patch_size ** 2
    sample_info = {
        "clips": len(y) + len(first), "sampler": cfg.sampler, "steps": cfg.sample_steps,
        "class_conditional_seconds": sample_seconds, "frame_prediction_seconds": predict_seconds,
        "clips_per_s": (len(y) + len(first)) / max(sample_seconds + predict_seconds, 1e-9),
        "tokens_per_s": (len(y) + len(first)) * n_tokens * cfg.sample_steps / max(sample_seconds + predict_seconds, 1e-9),
        "reconstruction_clips_per_s": len(real) / max(recon_seconds, 1e-9),
    }
    finish_stage({"clips": sample_info["clips"]})
    stages = dict(stages)
    summary = {
        "command": " ".join(["walt"] + sys.argv[1:]) if Path(sys.argv[0]).name in ("walt", "__main__.py") else None,
        "preset": preset, "minutes_budget": minutes, "seed": seed, "machine": machine,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "sizes": {"clip": [3, cfg.num_frames, cfg.resolution, cfg.resolution], "latent": [c, t_lat, h, w],
                  "tokens_per_clip": n_tokens, "vae_params": stages["vae"].get("params"),
                  "walt_params": stages["walt"].get("params")},
        "reconstruction": {"psnr_db": rec_psnr, "ssim": rec_ssim, "heldout_clips": len(real)},
        "frame_prediction": {"context_latent_frames": k, "context_pixel_frames": f_ctx, "psnr_db": pred_psnr,
                             "static_baseline_psnr_db": static_psnr, "clips": len(first)},
        "motion_energy": per_class,
        "sampling": sample_info,
        "stages": stages,
        "total_seconds": run_seconds(),
        "videos": videos,
        "config": config_to_dict(cfg),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    write_report(out, summary)
    return summary


# ----------------------------------------------------------------------------- report


def _fmt(v: Any, nd: int = 2) -> str:
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return "-" if v is None else str(v)


def _blocks(s: dict[str, Any]) -> list[tuple]:
    """The report as a list of (kind, payload) blocks, rendered to Markdown and to HTML."""
    cfg, st, rec, fp = s["config"], s["stages"], s["reconstruction"], s["frame_prediction"]
    budget = s["minutes_budget"] * 60
    frac = {"vae": cfg["vae_fraction"], "walt": 1 - cfg["vae_fraction"] - cfg["final_fraction"],
            "samples": cfg["final_fraction"]}
    stage_rows = []
    for name, title in (("vae", "1. autoencoder training"), ("cache", "2. latent cache"),
                        ("walt", "3. W.A.L.T training"), ("samples", "4. sampling + report")):
        info = st.get(name, {})
        thr = {"vae": f"{_fmt(info.get('clips_per_s'))} clips/s",
               "cache": f"{_fmt(info.get('clips_per_s'))} clips/s",
               "walt": f"{_fmt(info.get('clips_per_s'))} clips/s, {_fmt(info.get('tokens_per_s'), 0)} tokens/s",
               "samples": f"{_fmt(s['sampling']['clips_per_s'])} clips/s, "
                          f"{_fmt(s['sampling']['tokens_per_s'], 0)} tokens/s ({s['sampling']['steps']} steps)"}[name]
        planned = f"{frac[name] * budget:.0f}" if name in frac else "(what it takes)"
        stage_rows.append([title, planned, _fmt(info.get("seconds"), 1), _fmt(info.get("steps", "-")), thr])
    motion_rows = [[m["class"], _fmt(m["real"], 3), _fmt(m["reconstructed"], 3), _fmt(m["generated"], 3)]
                   for m in s["motion_energy"]]
    sz = s["sizes"]
    classes = ", ".join(cfg["classes"])
    mach = s["machine"]
    machine = (f"{mach.get('cpu') or '?'}; {mach.get('cpu_cores')} cores, torch {mach.get('torch')} "
               f"({mach.get('torch_threads')} threads), device {mach.get('device')}"
               + (f" ({mach['gpu']})" if mach.get("gpu") else "") + f"; {mach.get('platform')}")
    if mach.get("load_average_at_start"):
        machine += f"; load average at start {', '.join(f'{x:.1f}' for x in mach['load_average_at_start'])}"
    from walt.data.synthetic import BACKGROUNDS, TEXTURES

    if cfg["backgrounds"] or cfg["textures"] or cfg["shape_scale"] != 1.0:
        appearance = (
            "Differs from the full built-in dataset (to fit the budget; `walt.demo.data`): backgrounds "
            f"{', '.join(cfg['backgrounds'] or BACKGROUNDS)} only (of {len(BACKGROUNDS)}), shape textures "
            f"{', '.join(cfg['textures'] or TEXTURES)} only (of {len(TEXTURES)}), shapes {cfg['shape_scale']:g}x larger; "
            "classes, motions, shapes and colours are unchanged.")
    else:
        appearance = "Clips are the full built-in dataset (`walt.data.SyntheticVideos`), no appearance restriction."
    training = ("Autoencoder loss: 5 L1 + KL (weight "
                f"{cfg['vae_kl_weight']:g}); no perceptual or adversarial term (no pretrained perceptual network "
                "offline; a GAN does not pay off in minutes). Denoiser: v-prediction MSE, self-conditioning 0.9, "
                f"frame prediction {cfg['p_frame_pred']:g}, label dropout 0.1, EMA {cfg['walt_ema_decay']:g}.")
    return [
        ("h1", "walt demo report"),
        ("p", f"W.A.L.T in miniature on the built-in procedural dataset, {s['created']}, budget "
              f"{s['minutes_budget']:g} min, total {s['total_seconds'] / 60:.1f} min. "
              + (f"Command: `{s['command']}`." if s.get("command") else "")),
        ("p", f"Clips {sz['clip'][1]} frames x {sz['clip'][2]}x{sz['clip'][3]} px of {len(cfg['classes'])} motion "
              f"classes ({classes}); causal autoencoder ({_fmt(sz['vae_params'])} parameters) -> latents "
              f"{'x'.join(map(str, sz['latent']))} (c x t x h x w, {sz['tokens_per_clip']} tokens per clip); "
              f"W.A.L.T denoiser {_fmt(sz['walt_params'])} parameters; {cfg['train_clips']} training clips; "
              f"{cfg['sampler'].upper()} {cfg['sample_steps']} steps, guidance {cfg['guidance_scale']:g}."),
        ("p", appearance),
        ("p", training),
        ("h2", "Results (held-out clips)"),
        ("table", ["measure", "value"], [
            ["autoencoder reconstruction PSNR", f"{rec['psnr_db']:.2f} dB ({rec['heldout_clips']} clips)"],
            ["autoencoder reconstruction SSIM", f"{rec['ssim']:.3f}"],
            [f"frame prediction PSNR (frames {fp['context_pixel_frames']}+, given {fp['context_latent_frames']} latent frame(s))",
             f"{fp['psnr_db']:.2f} dB"],
            ["same, 'nothing moves' baseline (repeat last context frame)", f"{fp['static_baseline_psnr_db']:.2f} dB"],
        ]),
        ("p", "Motion energy = mean |frame t - frame t-1| (pixels in [-1, 1]); generated clips that freeze or "
              "dissolve into noise stand out against the real clips of their class."),
        ("table", ["class", "real", "reconstructed", "generated"], motion_rows),
        ("h2", "Class-conditional samples"),
        ("p", "Rows: samples labelled by class; columns: frames. Videos (MP4 + GIF) in `samples/`."),
        ("img", "samples_grid.png"),
        ("h2", "Frame prediction"),
        ("p", "Pairs of rows: a held-out real clip, then the denoiser's continuation from its first latent "
              "frame(s). Side-by-side videos (real | predicted) in `predictions/`."),
        ("img", "predictions_grid.png"),
        ("h2", "Autoencoder reconstructions"),
        ("img", "reconstructions_grid.png"),
        ("h2", "Training curves"),
        ("img", "curves.png"),
        ("h2", "Time per stage"),
        ("table", ["stage", "budget (s)", "actual (s)", "steps", "throughput"], stage_rows),
        ("h2", "Machine"),
        ("p", machine),
        ("h2", "Settings"),
        ("code", json.dumps({"preset": s["preset"], "seed": s["seed"], **cfg}, indent=1)),
    ]


def render_markdown(blocks: list[tuple]) -> str:
    lines: list[str] = []
    for kind, *payload in blocks:
        if kind == "h1":
            lines += [f"# {payload[0]}", ""]
        elif kind == "h2":
            lines += [f"## {payload[0]}", ""]
        elif kind == "p":
            lines += [payload[0], ""]
        elif kind == "img":
            lines += [f"![{payload[0]}]({payload[0]})", ""]
        elif kind == "code":
            lines += ["```json", payload[0], "```", ""]
        elif kind == "table":
            head, rows = payload
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
            lines.append("")
    return "\n".join(lines)


def render_html(blocks: list[tuple]) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>walt demo report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
             "img{max-width:100%;image-rendering:pixelated}pre{background:#f4f4f4;padding:1em;overflow:auto}</style>"
             "</head><body>"]
    for kind, *payload in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{e(payload[0])}</{kind}>")
        elif kind == "p":
            text = e(payload[0])
            while "`" in text and text.count("`") >= 2:  # inline code spans
                text = text.replace("`", "<code>", 1).replace("`", "</code>", 1)
            parts.append(f"<p>{text}</p>")
        elif kind == "img":
            parts.append(f"<p><img src='{e(payload[0])}' alt='{e(payload[0])}'></p>")
        elif kind == "code":
            parts.append(f"<pre>{e(payload[0])}</pre>")
        elif kind == "table":
            head, rows = payload
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows]
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out: Path, summary: dict[str, Any]) -> None:
    blocks = _blocks(summary)
    (out / "report.md").write_text(render_markdown(blocks))
    (out / "report.html").write_text(render_html(blocks))
