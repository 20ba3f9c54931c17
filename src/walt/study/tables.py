"""The Markdown tables and the CSV rows of a study report, rendered from report.json's `meta`.

A quality cell is `value [lo, hi]` (95% bootstrap interval); a difference cell is `+d [lo, hi]`
and "established" or "not established" (whether the paired interval excludes zero); the
reference row's difference cells say "reference". A throughput cell is the median of the timed
calls and, in brackets, the slowest and the fastest.
"""

from __future__ import annotations

from typing import Any

__all__ = ["num", "iv_cell", "diff_cell", "protocol_lines", "floor_section", "cost_table", "quality_table",
           "per_seed_table", "paper_table", "csv_row", "CAVEATS", "METRIC_NAMES"]

METRIC_NAMES = {"psnr": "PSNR dB", "ssim": "SSIM", "accuracy": "class accuracy", "feature_fd": "feature FD",
                "rfvd": "rFVD", "fvd": "FVD"}
PART_METRICS = {"recon": ("psnr", "ssim", "rfvd", "accuracy", "feature_fd"), "time": ("accuracy", "feature_fd", "fvd"),
                "steps": ("accuracy", "feature_fd", "fvd")}


def num(v: Any, signed: bool = False) -> str:
    if v is None:
        return "n/a"
    v = float(v)
    a = abs(v)
    s = f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 or a == 0 else f"{v:.3f}"
    return ("+" + s if signed and v > 0 else s)


def iv_cell(iv: dict[str, Any] | None) -> str:
    if not iv:
        return "n/a"
    if "lo" not in iv:
        return num(iv["value"])
    return f"{num(iv['value'])} [{num(iv['lo'])}, {num(iv['hi'])}]"


def diff_cell(d: dict[str, Any] | None, reference: bool = False) -> str:
    if reference:
        return "reference"
    if not d:
        return "n/a"
    flag = "established" if d["established"] else "not established"
    return f"{num(d['value'], True)} [{num(d['lo'], True)}, {num(d['hi'], True)}] {flag}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def protocol_lines(meta: dict[str, Any]) -> list[str]:
    from walt.eval.fvd_record import protocol_label, short_hash

    cfg, a, m = meta["config"], meta["analysis"], meta["machine"]
    ref = a["reference"] or {}
    rows = a["rows"]
    walts = [r["train"]["walt"] for r in rows if (r["train"] or {}).get("walt")]
    if cfg["budget_minutes"]:
        vm = cfg["vae_fraction"] * cfg["budget_minutes"]
        budget = (f"{cfg['budget_minutes']:g} wall-clock minutes of training per row: {vm:.1f} autoencoder + "
                  f"{cfg['budget_minutes'] - vm:.1f} denoiser (each stage measures its pace and ends on time)")
    else:
        budget = f"{cfg['vae_steps']} autoencoder and {cfg['walt_steps']} denoiser steps per row (fixed)"
    if meta["kind"] == "ablation":
        budget = f"{(1 - cfg['vae_fraction']) * (cfg['budget_minutes'] or 0):.1f} denoiser minutes per variant" \
            if cfg["budget_minutes"] else f"{cfg['walt_steps']} denoiser steps per variant"
    den = meta.get("denoiser") or {}
    clf = ref.get("classifier") or {}
    lines = [
        f"- command: `{meta['command']}`" if meta.get("command") else "- command: (Python API)",
        f"- machine: {m.get('cpu')}, {m.get('usable_cpus')} usable CPUs, {m.get('memory_gb')} GB, torch "
        f"{m.get('torch')}, device {m.get('device')}; load average {m.get('load_average')} when the report was written",
        f"- data: {meta['data']}; {cfg['resolution']}x{cfg['resolution']} clips of {cfg['num_frames']} frames, "
        f"{meta['num_classes']} motion classes; {cfg['train_clips']} training clips (autoencoder and latent cache)",
        f"- budget: {budget}",
        f"- autoencoder: CausalVAE base width {cfg['vae_base_channels']}, multipliers {tuple(cfg['vae_channel_multipliers'])}, "
        f"{cfg['vae_num_res_blocks']} res block(s)/level, {'KL' if cfg['vae_kl'] else 'no KL'}, {cfg['vae_recon_type']} "
        f"loss, decoder-input noise {cfg['vae_decoder_noise']:g}, {cfg['vae_train_frames']}-frame training crops",
        f"- denoiser: W.A.L.T width {den.get('hidden_size')}, depth {den.get('depth')}, {den.get('num_heads')} heads, "
        f"patch {den.get('patch_size')} (every row), batch {cfg['walt_batch_size']}, precision "
        f"{', '.join(sorted({w.get('precision', '?') for w in walts})) or cfg['walt_precision']}, "
        f"EMA {cfg['walt_ema_decay']:g}; samples: DDIM {cfg['sample_steps']} steps, guidance {cfg['guidance_scale']:g}, "
        f"in {', '.join(sorted({(r.get('timing') or {}).get('sampling_precision', '?') for r in rows})) or 'n/a'}",
        f"- samples per row and weights: {cfg['seed_sets']} seed sets x {cfg['samples_per_seed']} = "
        f"{cfg['seed_sets'] * cfg['samples_per_seed']} (classes cycling), the first {cfg['fvd_clips_per_seed']} of "
        f"each set through the I3D ({cfg['seed_sets'] * cfg['fvd_clips_per_seed']}); the same seeds for every row",
        f"- real clips: held-out sets A and B of {cfg['heldout_clips']} each; every FD is against A at the samples' "
        f"count; reconstructions are of B's first {cfg['seed_sets'] * cfg['samples_per_seed']}",
        f"- classifier: one MotionClassifier for every row, trained on {clf.get('train_clips')} real clips "
        f"({clf.get('steps')} steps); on real held-out clips it is right {iv_cell(ref.get('real_accuracy'))} of the "
        f"time (chance {1 / meta['num_classes']:.3f})",
        f"- differences: each row minus the reference row ({rows[0]['label'] if rows else 'n/a'}), paired bootstrap "
        f"(the same clips / seeds resampled for both); equal steps: every row's EMA at step {a['common_step']}",
    ]
    if meta.get("fvd"):
        f = meta["fvd"]
        lines.append(f"- FVD: protocol {protocol_label(f)}, I3D weights {short_hash(f['i3d_weights_sha256'])}"
                     + ("" if f.get("i3d_is_reference") else " (NOT the reference network)"))
    else:
        lines.append("- FVD: not measured (--no-fvd)")
    ae = a.get("autoencoder")
    if ae:
        q, t = ae["quality"], ae.get("timing") or {}
        lines.append(f"- the shared autoencoder ({meta.get('vae')}): PSNR {iv_cell(q.get('psnr'))} dB, rFVD "
                     f"{iv_cell(q.get('rfvd'))}, class accuracy of its reconstructions {iv_cell(q.get('accuracy'))}; "
                     f"encode {iv_cell(t.get('encode_clips_per_s'))}, decode {iv_cell(t.get('decode_clips_per_s'))} clips/s")
    return lines


def floor_section(meta: dict[str, Any]) -> list[str]:
    ref = meta["analysis"]["reference"] or {}
    body, notes = [], []
    for key, what in (("floor_feature_fd", "feature FD"), ("floor_fvd", "FVD")):
        s = ref.get(key)
        if not s:
            continue
        for n, iv, w in zip(s["counts"], s["intervals"], s["relative_width"]):
            body.append([what, str(n), iv_cell(iv), f"{w:.0%}"])
        rows_n, chosen = s["rows_clips"], s["chosen"]
        if chosen is None:
            notes.append(f"- {what}: no measured count (up to {max(s['counts'])}) makes the floor's interval <= "
                         f"{s['target']:.0%} of it; the rows use {rows_n} clips, the largest this budget affords")
        else:
            meets = "meets it" if rows_n >= chosen else "falls short of it (the largest this budget affords)"
            notes.append(f"- {what}: from {chosen} clips per set the floor's whole interval is <= {s['target']:.0%} "
                         f"of it; the rows use {rows_n}, which {meets}")
    if not body:
        return ["No floor was measured."]
    return [_table(["statistic", "clips per set", "floor [95%]", "interval width / floor"], body), "", *notes]


def _step(r: dict[str, Any], stage: str) -> str:
    s = (r["train"] or {}).get(stage)
    return str(s["steps"]) if s else "n/a"


def cost_table(meta: dict[str, Any]) -> str:
    rows = []
    for r in meta["analysis"]["rows"]:
        t, w = r.get("timing") or {}, (r["train"] or {}).get("walt") or {}
        if meta["kind"] == "encoder":
            shape = "x".join(str(v) for v in w["latent_shape"]) if w.get("latent_shape") else "n/a"
            rows.append([r["label"], shape, str(w.get("tokens_per_clip", "n/a")), num(t.get("encoder_gflop_per_clip")),
                         num(t.get("decoder_gflop_per_clip")), iv_cell(t.get("encode_clips_per_s")),
                         iv_cell(t.get("decode_clips_per_s")), iv_cell(t.get("train_steps_per_s")),
                         iv_cell(t.get("gen_clips_per_s")), _step(r, "vae"), _step(r, "walt")])
        else:
            rows.append([r["label"], w.get("st_window", "n/a") if w.get("attention") != "full" else "full",
                         f"{w['params']:,}" if w.get("params") else "n/a", iv_cell(t.get("train_steps_per_s")),
                         iv_cell(t.get("gen_clips_per_s")), _step(r, "walt")])
    if meta["kind"] == "encoder":
        head = ["design", "latent c x t x h x w", "tokens/clip", "encoder GFLOP/clip", "decoder GFLOP/clip",
                "encode clips/s", "decode clips/s", "denoiser train steps/s", "generated clips/s",
                "autoencoder steps", "denoiser steps"]
    else:
        head = ["variant", "ST window", "denoiser params", "train steps/s", "generated clips/s", "denoiser steps"]
    return _table(head, rows)


def quality_table(meta: dict[str, Any], part: str) -> str:
    a = meta["analysis"]
    metrics = [m for m in PART_METRICS[part] if any(m in r["quality"].get(part, {}) for r in a["rows"])]
    head = ["design" if meta["kind"] == "encoder" else "variant"] + (["step"] if part != "recon" else [])
    for m in metrics:
        head += [METRIC_NAMES[m] if part != "recon" or m != "accuracy" else "class accuracy of reconstructions",
                 "difference vs reference"]
    body = []
    for i, r in enumerate(a["rows"]):
        q, d = r["quality"].get(part), r["diff"].get(part, {})
        if q is None:
            continue
        cells = [r["label"]] + ([str(r.get(f"{part}_step", "n/a"))] if part != "recon" else [])
        for m in metrics:
            cells += [iv_cell(q.get(m)), diff_cell(d.get(m), reference=i == 0)]
        body.append(cells)
    return _table(head, body) if body else "No row has these numbers (see the failures)."


def per_seed_table(meta: dict[str, Any]) -> str:
    body = []
    for r in meta["analysis"]["rows"]:
        for view, seeds in r.get("per_seed", {}).items():
            body.append([r["label"], {"time": "equal wall-clock", "steps": "equal steps"}[view]]
                        + [", ".join(num(v) for v in seeds.get(m, [])) or "n/a" for m in ("accuracy", "feature_fd", "fvd")])
    return _table(["row", "weights", "class accuracy per seed set", "feature FD per seed set", "FVD per seed set"],
                  body) if body else "n/a"


def _agreement(effect: str, d: dict[str, Any] | None) -> str:
    if not d:
        return "n/a"
    if effect == "=":
        return "no difference here either" if not d["established"] else "differs here (established)"
    if not d["established"]:
        return "not established here"
    same = (d["value"] > 0) == (effect == "+")
    return "same direction (established)" if same else "opposite direction (established)"


def paper_table(meta: dict[str, Any]) -> str:
    rows = meta["analysis"]["rows"]
    base = rows[0] if rows else None
    bt = (base or {}).get("timing") or {}
    body = []
    for r in rows[1:]:
        eff, t = r.get("paper_effect") or {}, r.get("timing") or {}
        speed = (f"{t['train_steps_per_s']['value'] / bt['train_steps_per_s']['value']:.2f}x"
                 if t.get("train_steps_per_s") and bt.get("train_steps_per_s") else "n/a")
        pw, bw = (r["train"] or {}).get("walt") or {}, (base["train"] or {}).get("walt") or {}
        params = f"{pw['params'] / bw['params']:.2f}x" if pw.get("params") and bw.get("params") else "n/a"
        cells = [r["label"], r.get("paper") or "n/a"]
        for view in ("time", "steps"):
            d = r["diff"].get(view, {}).get("fvd") or r["diff"].get(view, {}).get("feature_fd")
            cells += [diff_cell(d), _agreement(eff.get("fvd", "="), d)]
        body.append(cells + [speed, params])
    head = ["variant", "paper (vs its baseline)", "FVD (else feature FD) difference, equal wall-clock", "vs the paper",
            "difference, equal steps", "vs the paper", "train steps/s vs baseline", "params vs baseline"]
    return _table(head, body) if body else "n/a"


def csv_row(r: dict[str, Any]) -> dict[str, Any]:
    """One flat results.csv row: design, steps, costs, every quality interval and difference."""
    out: dict[str, Any] = {"name": r["name"], "label": r["label"], **(r.get("design") or {}),
                           "failed": (r.get("failed") or {}).get("error")}
    w, t = (r["train"] or {}).get("walt") or {}, r.get("timing") or {}
    out.update(vae_steps=((r["train"] or {}).get("vae") or {}).get("steps"), walt_steps=w.get("steps"),
               tokens_per_clip=w.get("tokens_per_clip"), walt_params=w.get("params"),
               encoder_gflop_per_clip=t.get("encoder_gflop_per_clip"), decoder_gflop_per_clip=t.get("decoder_gflop_per_clip"))
    for k in ("encode_clips_per_s", "decode_clips_per_s", "train_steps_per_s", "gen_clips_per_s"):
        for f in ("value", "lo", "hi"):
            out[f"{k}{'' if f == 'value' else '_' + f}"] = (t.get(k) or {}).get(f)
    for part, q in r["quality"].items():
        for m, iv in q.items():
            out.update({f"{part}_{m}": iv["value"], f"{part}_{m}_lo": iv["lo"], f"{part}_{m}_hi": iv["hi"]})
            d = r["diff"].get(part, {}).get(m)
            if d:
                out.update({f"{part}_{m}_diff": d["value"], f"{part}_{m}_diff_lo": d["lo"],
                            f"{part}_{m}_diff_hi": d["hi"], f"{part}_{m}_established": d["established"]})
    for view, seeds in r.get("per_seed", {}).items():
        out.update({f"{view}_{m}_per_seed": ";".join(f"{v:.6g}" for v in vals) for m, vals in seeds.items()})
    return out


CAVEATS = (
    "A Fréchet distance from a few hundred clips is biased upwards by the finite sample, more so with fewer "
    "clips: compare FDs only at equal clip counts (every row here uses the same), and against the floor measured "
    "at that count. The intervals are the bootstrap's spread around the estimate (walt.eval.intervals).",
    "A difference is called only when its paired 95% interval excludes zero; 'not established' means this "
    "study cannot tell the two rows apart on that metric, not that they are equal.",
    "The equal-steps view compares the denoisers at the same number of steps, each on its row's equal-time "
    "autoencoder: it isolates the denoiser's per-step learning, not the autoencoders' training speed. At that "
    "step the slowest row has finished its learning-rate schedule and faster rows are still mid-way (EMA weights).",
    "Throughputs come from one sequential pass after training (no other study process running); on a shared "
    "machine other jobs can still move them: the brackets are the spread of the timed calls.",
    "Small models and minutes of training on procedural clips: the trade-offs measured here are this setting's, "
    "not the paper's (UCF-101, 313M-parameter denoisers, 35k-60k steps).",
)
