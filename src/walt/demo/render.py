"""The report of `walt demo` (report.md + report.html) from its summary (metrics.json).

The report is a list of (kind, payload) blocks (h1, h2, p, img, table, code), rendered once to
Markdown and once to HTML. Every FVD number is shown with its protocol (name, overrides, hash),
the I3D weights hash and the clip counts; a skipped FVD is stated with its reason.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any


def _fmt(v: Any, nd: int = 2) -> str:
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return "-" if v is None else str(v)


def _stage_rows(s: dict[str, Any]) -> list[list[str]]:
    """Time per stage: planned (from the budget split) vs actual, steps, throughput."""
    cfg, st = s["config"], s["stages"]
    budget = s["minutes_budget"] * 60
    walt, fvd = st.get("walt", {}), st.get("walt", {}).get("fvd", {})
    text = st.get("text")
    vae = st["vae"]
    first = (["1. autoencoder: the pretrained one (its minutes go to stage 3)", "0", "0", _fmt(vae.get("steps")),
              f"trained for {vae['trained_seconds'] / 60:.0f} min once"] if vae.get("pretrained") else
             ["1. autoencoder training", f"{cfg['vae_fraction'] * budget:.0f}", _fmt(vae.get("seconds"), 1),
              _fmt(vae.get("steps")), f"{_fmt(vae.get('clips_per_s'))} clips/s"])
    planned = (1 - cfg["final_fraction"] - (0 if vae.get("pretrained") else cfg["vae_fraction"])) * budget
    rows = [
        first,
        ["2. latent cache", "(what it takes)", _fmt(st["cache"].get("seconds"), 1), "-",
         f"{_fmt(st['cache'].get('clips_per_s'))} clips/s"],
        ["2b. motion classifier of the class score" + (" (cached)" if st.get("classifier", {}).get("cached") else ""),
         "(what it takes)", _fmt(st.get("classifier", {}).get("seconds"), 1), _fmt(st.get("classifier", {}).get("steps")),
         f"{_fmt(st.get('classifier', {}).get('train_clips'))} reconstructed clips"],
        ["3. W.A.L.T training (what the cache left, less FVD)", "-",
         _fmt(walt.get("training_seconds", walt.get("seconds")), 1), _fmt(walt.get("steps")),
         f"{_fmt(walt.get('clips_per_s'))} clips/s, {_fmt(walt.get('tokens_per_s'), 0)} tokens/s"],
    ]
    if fvd.get("points"):
        n, k = fvd["clips"]["generated"], len(fvd["points"])
        rows.append(["3b. FVD inside stage 3 (real features, then samples + I3D per point)",
                     f"(measured: {fvd['real_seconds']:.0f} + {k} x {fvd['points'][0]['seconds']:.0f})",
                     _fmt(fvd["seconds"], 1), f"{k} points",
                     f"I3D {fvd['i3d_seconds_per_clip']:.2f} s/clip; {3 * n + k * n} clips through I3D"])
    rows.append(["3. stage total", f"{planned:.0f} (less the cache)", _fmt(walt.get("seconds"), 1), "-", "-"])
    if text:
        rows.append(["4. text-to-video denoiser + prompts (--text)", f"{text['minutes'] * 60:.0f}", _fmt(text["seconds"], 1),
                     _fmt(text["walt"]["steps"]), f"{_fmt(text['walt'].get('clips_per_s'))} clips/s"])
    smp = s["sampling"]
    rows.append([f"{4 + bool(text)}. sampling + report", f"{cfg['final_fraction'] * budget:.0f}",
                 _fmt(st.get("samples", {}).get("seconds"), 1), "-",
                 f"{_fmt(smp['clips_per_s'])} clips/s, {_fmt(smp['tokens_per_s'], 0)} tokens/s ({smp['steps']} steps)"])
    return rows


def _fvd_blocks(s: dict[str, Any]) -> list[tuple]:
    """FVD during training: the protocol line, the table, the curve, the progress grid (or the skip)."""
    fvd = s["stages"].get("walt", {}).get("fvd") or {"skipped": "not recorded by this run"}
    if fvd.get("skipped"):
        return [("h2", "FVD during training"), ("p", f"FVD skipped: {fvd['skipped']}.")]
    proto, n = fvd["protocol"], fvd["clips"]
    over = ", ".join(f"{k}={v}" for k, v in proto["overrides"].items())
    cfgp = proto["config"]
    rows = [[str(p["step"]), p["weights"], f"{p['fvd']:.1f}", f"{n['generated']} generated vs {n['reference']} real",
             f"{p['sample_seconds']:.0f} + {p['i3d_seconds']:.0f}"] for p in fvd["points"]]
    rows.append(["-", "real vs real (floor: another set of real clips)", f"{fvd['real_vs_real']:.1f}",
                 f"{n['floor']} real vs {n['reference']} real", "-"])
    rows.append(["-", "autoencoder reconstructions of the floor set (rFVD)", f"{fvd['reconstruction_fvd']:.1f}",
                 f"{n['reconstructed']} reconstructed vs {n['reference']} real", "-"])
    blocks = [
        ("h2", "FVD during training"),
        ("p", f"Protocol `{proto['name']}`" + (f" with {over}" if over else "") + f" (hash {proto['hash']}): "
              f"Kinetics-400 I3D (weights sha256 {proto['i3d_weights_sha256']}), first {cfgp['num_frames']} frames, "
              f"resized to 224x224 ({cfgp['resize']}), time-averaged logits, Fréchet distance in float64. "
              f"Reference: {n['reference']} held-out real clips (a data seed no stage trains on). Samples: EMA "
              f"weights, {fvd['sampler'].upper()} {fvd['sample_steps']} steps, guidance {fvd['guidance_scale']:g}, "
              "the floor set's labels and the same seeds at every step. With this few clips in 400 dimensions "
              "FVD is biased upward: compare against the floor, not with papers' numbers."),
        ("table", ["denoiser step", "weights", "FVD", "clips", "seconds (sampling + I3D)"], rows),
        ("img", "fvd_curve.png"),
    ]
    blocks += [("p", f"Note: {note}.") for note in fvd.get("notes", [])]
    blocks += [("p", "The same noise and label at every FVD point (rows), frames left to right:"),
               ("img", "fvd_progress.png")]
    return blocks


def _text_blocks(s: dict[str, Any]) -> list[tuple]:
    """Prompts -> videos of the text stage (`walt demo --text`), when it ran."""
    text = s["stages"].get("text")
    if not text:
        return []
    w = text["walt"]
    blocks = [
        ("h2", "Text to video (--text)"),
        ("p", f"A second W.A.L.T ({_fmt(w['params'])} parameters) with text cross-attention in its spatial layers, "
              f"trained from scratch for {w['steps']} steps ({w['seconds'] / 60:.1f} min) on the same latent cache "
              f"and its captions, encoded by the frozen {text['text_encoder']} text encoder (all-MiniLM-L6-v2, "
              "Apache-2.0, offline; T5-XL in the paper); captions dropped with p = 0.1 for classifier-free guidance. "
              f"Loss {w['first_loss']:.3f} -> {w['final_loss']:.3f}. Prompts: captions of held-out clips. Each row: "
              "the real held-out clip | the sample for its caption. Videos (MP4 + GIF) and prompts.json in "
              "`text_samples/`."),
    ]
    for grid, g in zip(text["grids"], text["guidance_scales"]):
        blocks += [("p", f"Guidance scale {g:g}:"), ("img", grid)]
    blocks.append(("table", ["#", "prompt"], [[str(i), p] for i, p in enumerate(text["prompts"])]))
    return blocks


def _class_blocks(s: dict[str, Any]) -> list[tuple]:
    ca = s.get("class_accuracy")
    if not ca:
        return []
    names = list(ca["per_class"])
    li = s.get("label_influence") or {}
    ceiling = ca["reconstructed"]
    rows = [
        ["class-conditional samples (asked-for class named)", f"{ca['generated']:.3f} ({ca['generated_clips']} clips, "
         f"guidance {ca['guidance_scale']:g})"],
        ["held-out reconstructions: the ceiling through this autoencoder", f"{ceiling:.3f} ({ca['heldout_clips']} clips)"],
        ["held-out real clips", f"{ca['real']:.3f}"],
        ["samples / ceiling", f"{ca['generated'] / ceiling:.2f}" if ceiling > 0 else "-"],
        ["chance", f"{ca['chance']:.3f}"],
    ]
    fd = s.get("feature_fd") or {}
    if fd:
        rows += [["classifier-feature Fréchet distance, samples vs real", _fmt(fd["generated_vs_real"], 1)],
                 ["same, reconstructions vs real (the floor through this autoencoder)", _fmt(fd["reconstructed_vs_real"], 1)]]
    if li:
        rows.append(["label influence at t = 300/500/700 (label swapped / null label)", f"{li['swap']:.3f} / {li['null']:.3f}"])
    clf = ca["classifier"]
    return [
        ("h2", "Motion-class score"),
        ("p", "A small 3D CNN (`walt.eval.class_score`) trained on the autoencoder's reconstructions of "
              f"{clf['train_clips']} training clips ({clf['steps']} steps, {'loaded from its cache' if clf['cached'] else 'trained now'}, "
              f"{clf['seconds']:.0f} s) names each clip's motion class. A sample counts as right when it names the class "
              "that was asked for. Label influence: how much the denoiser's x0 estimate changes when its label is "
              "swapped, relative to its error (`walt.eval.label_influence`)."),
        ("table", ["measure", "value"], rows),
        ("table", ["class", "samples right", "reconstructions right"],
         [[n, _fmt(ca["per_class"][n]), _fmt(ca["per_class_reconstructed"][n])] for n in names]),
        ("img", "confusion_matrix.png"),
    ]


def vae_recon_term(stages: dict[str, Any], recon_type: str) -> tuple[str, float]:
    """(recon_type, recon_weight) of the loss the run's autoencoder trained with.

    Read from the autoencoder's stage record (`stages.json`: the VAELossConfig the stage built); a
    run recorded before the record held it falls back to `VAELossConfig`'s weight for the
    settings' `recon_type` (what DemoConfig.vae_loss_config builds).
    """
    loss = stages.get("vae", {}).get("loss")
    if loss:
        return loss["recon_type"], float(loss["recon_weight"])
    from walt.autoencoder.losses import VAELossConfig

    return recon_type, VAELossConfig(recon_type=recon_type).recon_weight


def _machine_line(mach: dict[str, Any]) -> str:
    """The machine paragraph: CPU, cores, torch and its threads, device, load at start."""
    machine = (f"{mach.get('cpu') or '?'}; {mach.get('logical_cpus', mach.get('cpu_cores'))} cores, torch {mach.get('torch')} "
               f"({mach.get('torch_threads')} threads), device {mach.get('device')}"
               + (f" ({mach['gpu']})" if mach.get("gpu") else "") + f"; {mach.get('platform')}")
    load = mach.get("load_average") or mach.get("load_average_at_start")
    if load:
        machine += f"; load average at start {', '.join(f'{x:.1f}' for x in load)}"
    return machine


def _appearance_line(cfg: dict[str, Any]) -> str:
    """How the clips differ from the full built-in dataset, if they do."""
    from walt.data.synthetic_scene import BACKGROUNDS, SHAPES, TEXTURES

    speed, shapes = cfg.get("speed_scale", 1.0), tuple(cfg.get("shapes") or ())
    if cfg["backgrounds"] or cfg["textures"] or shapes or cfg["shape_scale"] != 1.0 or speed != 1.0:
        kinds = f"{', '.join(shapes)} only (of {len(SHAPES)}), " if shapes else ""
        appearance = (
            "Differs from the full built-in dataset (to fit the budget; `walt.demo.clips`): backgrounds "
            f"{', '.join(cfg['backgrounds'] or BACKGROUNDS)} only (of {len(BACKGROUNDS)}), shape textures "
            f"{', '.join(cfg['textures'] or TEXTURES)} only (of {len(TEXTURES)}), shapes {kinds}{cfg['shape_scale']:g}x larger, "
            f"motions {speed:g}x faster; classes, motions{'' if shapes else ', shapes'} and colours are unchanged.")
    else:
        appearance = "Clips are the full built-in dataset (`walt.data.SyntheticVideos`), no appearance restriction."
    return appearance


def _training_line(cfg: dict[str, Any], st: dict[str, Any]) -> str:
    """What trained the two networks: which autoencoder, its loss, the denoiser's objective."""
    kind, w = vae_recon_term(st, cfg.get("vae_recon_type", "l1"))
    recon = f"{w:g} x " + {"l1": "L1", "l2": "L2", "l1+l2": "(L1 + L2)"}[kind]
    kl_on = dict(map(tuple, cfg.get("vae_overrides", []))).get("kl", True)
    kl = f" + KL (weight {cfg['vae_kl_weight']:g})" if kl_on else ", deterministic latent (no KL posterior)"
    sc_on = dict(map(tuple, cfg.get("walt_overrides", []))).get("self_conditioning", True)
    sc = "self-conditioning 0.9" if sc_on else "no self-conditioning"
    k = cfg.get("walt_snr_shift", 1.0)
    shift = f" on the paper's schedule with every SNR x{k:g} (`snr_shift`)" if k != 1.0 else ""
    vae = st["vae"]
    which = (f"Autoencoder: the committed pretrained one (`walt.demo.pretrained`, sha256 {vae['sha256'][:16]}..., "
             f"{vae['steps']} steps in {vae['trained_seconds'] / 60:.0f} min), so stage 1 took no time here; "
             "`--from-scratch` trains it in the run. " if vae.get("pretrained") else
             f"Autoencoder: trained in this run ({vae.get('why_not_pretrained') or 'no pretrained one'}). ")
    training = which + (f"Autoencoder loss: {recon} reconstruction{kl}; no perceptual or adversarial term (no pretrained perceptual network "
                f"offline; a GAN does not pay off in minutes). Denoiser: v-prediction MSE{shift}, {sc}, "
                f"frame prediction {cfg['p_frame_pred']:g}, label dropout 0.1, EMA {cfg['walt_ema_decay']:g}, "
                f"{_timesteps_text(cfg)}.")
    return training


def _timesteps_text(cfg: dict[str, Any]) -> str:
    if cfg.get("walt_timesteps", "uniform") == "uniform":
        return "timesteps uniform"
    return f"logit-normal timesteps (mean {cfg.get('walt_timestep_mean', 0.0):g}, std 1)"


def _blocks(s: dict[str, Any]) -> list[tuple]:
    """The report as a list of (kind, payload) blocks, rendered to Markdown and to HTML."""
    cfg, st, rec, fp = s["config"], s["stages"], s["reconstruction"], s["frame_prediction"]
    stage_rows = _stage_rows(s)
    motion_rows = [[m["class"], _fmt(m["real"], 3), _fmt(m["reconstructed"], 3), _fmt(m["generated"], 3)]
                   for m in s["motion_energy"]]
    sz = s["sizes"]
    classes = ", ".join(cfg["classes"])
    machine, appearance, training = _machine_line(s["machine"]), _appearance_line(cfg), _training_line(cfg, st)
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
        *_class_blocks(s),
        *_fvd_blocks(s),
        ("h2", "Class-conditional samples"),
        ("anim", [(v.split("/")[-1], f"{v}.gif") for v in s.get("videos", []) if v.startswith("samples/")]),
        ("p", "Rows: samples labelled by class; columns: frames. Videos (MP4 + GIF) in `samples/`."),
        ("img", "samples_grid.png"),
        ("h2", "Frame prediction"),
        ("anim", [(v.split("/")[-1] + " (real | predicted)", f"{v}.gif") for v in s.get("videos", [])
                  if v.startswith("predictions/")]),
        ("p", "Pairs of rows: a held-out real clip, then the denoiser's continuation from its first latent "
              "frame(s). Side-by-side videos (real | predicted) in `predictions/`."),
        ("img", "predictions_grid.png"),
        ("h2", "Autoencoder reconstructions"),
        ("img", "reconstructions_grid.png"),
        *_text_blocks(s),
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
        elif kind == "anim":
            if payload[0]:
                lines += ["Animated: " + ", ".join(f"[{label}]({path})" for label, path in payload[0]), ""]
        elif kind == "code":
            lines += ["```json", payload[0], "```", ""]
        elif kind == "table":
            head, rows = payload
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
            lines.append("")
    return "\n".join(lines)


def _data_uri(path: Path) -> str | None:
    """The file as a base64 data URI (the page then needs nothing beside it), or None if it is missing."""
    import base64
    import mimetypes

    if not path.is_file():
        return None
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def render_html(blocks: list[tuple], root: Path | None = None) -> str:
    """The report as one self-contained page: with `root`, every image and GIF is embedded (data URIs)."""
    e = html.escape

    def src(rel: str) -> str:
        uri = _data_uri(root / rel) if root is not None else None
        return uri or e(rel)

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>walt demo report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
             "img{max-width:100%;image-rendering:pixelated}pre{background:#f4f4f4;padding:1em;overflow:auto}"
             ".anims{display:flex;flex-wrap:wrap;gap:10px}.anims figure{margin:0;text-align:center;font-size:12px}"
             ".anims img{width:128px}.anims figure.wide img{width:256px}</style>"
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
            parts.append(f"<p><img src='{src(payload[0])}' alt='{e(payload[0])}'></p>")
        elif kind == "anim":
            figs = [f"<figure class='{'wide' if '|' in label else ''}'><img src='{src(path)}' alt='{e(label)}'>"
                    f"<figcaption>{e(label)}</figcaption></figure>" for label, path in payload[0]]
            if figs:
                parts.append("<div class='anims'>" + "".join(figs) + "</div>")
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
    (out / "report.html").write_text(render_html(blocks, root=out))
