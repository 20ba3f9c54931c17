"""`walt study ablation`: the paper's Table 3 knobs at small scale, each against the default.

One autoencoder and one latent cache are shared by every variant (trained here, or an existing
checkpoint via `vae_path`); only stage 2 changes. Each variant trains a W.A.L.T under the same
budget, then samples with DDIM and is scored by FVD, final training loss, training steps/s and
sampling clips/s. Variants (paper numbers are UCF-101 FVD, W.A.L.T Table 3 / SPEC §2-3):

    default          p_sc 0.9, zero terminal SNR, window attention, AdaLN-LoRA r=2, normalised latents
    no_self_cond     self-conditioning off (p_sc 0; the network has no self-cond input)   paper: 110 vs 61
    no_zero_snr      linear betas without the zero-terminal-SNR rescale                   paper:  91 vs 61
    window_small     spatiotemporal window a quarter of the latent frame per side (5x4x4 on 16x16)
                     instead of half (5x8x8); on the CPU preset's 5x4x4 latent: 5x1x1 vs 5x2x2
                                                                                          paper: equal FVD, 2.24 vs 2.00 steps/s
    full_attention   every layer attends over the whole latent (no windows)               paper: equal FVD, 1.20 vs 2.00 steps/s
    adaln_lora_0     a separate AdaLN MLP per layer instead of AdaLN-LoRA r=2             paper: 458M vs 313M params
    no_latent_norm   the transformer trains on raw (unnormalised) latents                 paper: 67.9 vs 60.7

Output folder: study.json, shared/{vae,cache,stages}, variants/<name>/{walt,stages}, results.csv,
report.md, ablation.png. Resumable like the encoder study (finished variants / stages are reused).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from walt.config import config_to_dict
from walt.study import common as C
from walt.study import stages as S
from walt.study.encoder import DEFAULT_DESIGN


@dataclass(frozen=True)
class AblationVariant:
    name: str
    description: str
    recipe: S.WaltRecipe
    paper: str = ""  # what the paper reports for this knob


VARIANTS: dict[str, Callable[[], AblationVariant]] = {
    "default": lambda: AblationVariant("default", "paper defaults", S.WaltRecipe(), "FVD 60.7 (L, 35k steps)"),
    "no_self_cond": lambda: AblationVariant(
        "no_self_cond", "self-conditioning off (p_sc 0)",
        S.WaltRecipe(walt_overrides=(("self_conditioning", False),), p_self_cond=0.0), "FVD 110 vs 61"),
    "no_zero_snr": lambda: AblationVariant(
        "no_zero_snr", "no zero-terminal-SNR rescale", S.WaltRecipe(diffusion=(("zero_terminal_snr", False),)),
        "FVD 91 vs 61"),
    "window_small": lambda: AblationVariant(
        "window_small", "smaller spatiotemporal window (1/4 of the frame per side)", S.WaltRecipe(st_window_divisor=4),
        "equal FVD; 2.24 vs 2.00 training steps/s (5x4x4 vs 5x8x8)"),
    "full_attention": lambda: AblationVariant(
        "full_attention", "full attention instead of windows", S.WaltRecipe(walt_overrides=(("attention", "full"),)),
        "equal FVD; 1.20 vs 2.00 training steps/s"),
    "adaln_lora_0": lambda: AblationVariant(
        "adaln_lora_0", "separate AdaLN per layer (LoRA rank 0)", S.WaltRecipe(walt_overrides=(("adaln_lora_rank", 0),)),
        "458M vs 313M parameters at L size"),
    "no_latent_norm": lambda: AblationVariant(
        "no_latent_norm", "latents not normalised", S.WaltRecipe(normalize=False), "FVD 67.9 vs 60.7"),
}


def get_variants(names: Iterable[str] | None = None) -> list[AblationVariant]:
    names = list(VARIANTS) if names is None else list(names)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown ablation variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    return [VARIANTS[n]() for n in dict.fromkeys(names)]


def run_variant(variant: AblationVariant, cfg: C.StudyConfig, folder: Path, cache: Path, vae, device: torch.device,
                i3d=None, real_feats=None, progress: bool = False, fvd_record: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """Train and evaluate one variant on the shared cache (finished stages are skipped)."""
    store = C.StageStore(folder)
    r = variant.recipe
    plan = store.run("walt_plan", lambda: S.plan_walt_steps(cfg, r, cache, device))
    walt = store.run("walt", lambda: S.train_walt_stage(cfg, r, cache, folder / "walt", plan["steps"], device, progress))
    gen = store.run("generate", lambda: S.generate_stage(cfg, folder / "walt", vae, device, i3d, real_feats))
    S.remove_training_state(folder / "walt")
    return {"variant": variant.name, "label": variant.description, "paper": variant.paper,
            "attention": walt.get("attention"),
            "st_window": "full" if walt.get("attention") == "full" else walt.get("st_window"),
            "walt_params": walt["params"], "walt_steps": walt["steps"], "walt_train_s": walt["seconds"],
            "walt_final_loss": walt["final_loss"], "walt_train_steps_per_s": walt["train_steps_per_s"],
            "tokens_per_clip": walt["tokens_per_clip"], "sample_clips_per_s": gen["sample_clips_per_s"],
            "gen_clips_per_s": gen["gen_clips_per_s"], "fvd": gen["fvd"], **C.fvd_identity(fvd_record)}


def run_ablation_study(cfg: C.StudyConfig, variants: Iterable[AblationVariant], out: str | Path, train_data,
                       eval_data, device: str | torch.device = "cpu", vae_path: str | Path | None = None, i3d=None,
                       progress: bool = False, command: str | None = None,
                       data_description: str = "builtin") -> list[dict[str, Any]]:
    """Run (or resume) the ablation into `out`; returns one row per finished variant.

    Args:
        vae_path: an existing autoencoder checkpoint to share (e.g. the default design of an encoder
            study: `designs/ft4_fs8_c8_causal/vae/vae.safetensors`); default: train the default design here.
        The other arguments are those of `walt.study.encoder.run_encoder_study`.
    """
    from walt.autoencoder import CausalVAE
    from walt.data.latent_dataset import vae_fingerprint
    from walt.study.report import write_study_report

    out, device = Path(out), torch.device(device)
    variants = list(variants)
    if not variants:
        raise ValueError("no ablation variants given")
    if len(eval_data) < cfg.eval_clips:
        raise ValueError(f"the held-out set has {len(eval_data)} clips but eval_clips={cfg.eval_clips}; lower it")
    out.mkdir(parents=True, exist_ok=True)
    shared = out / "shared"
    if vae_path is not None:
        vae = CausalVAE.load(vae_path, map_location=device).eval().requires_grad_(False)
        vae_source = {"path": str(vae_path), "sha256": vae_fingerprint(vae)}
        ae_note = f"`{vae_path}` (weights sha256 {vae_source['sha256'][:12]})"
    else:
        vae_source = {"trained": DEFAULT_DESIGN}
        spent = (f"{cfg.vae_steps} steps" if cfg.budget_minutes is None
                 else f"{cfg.vae_fraction * cfg.budget_minutes:g} minutes")
        ae_note = f"the default design (f_t=4, f_s=8, c=8, causal) trained here for {spent}"
    i3d, fvd_record = C.prepare_fvd(cfg, i3d, device)
    C.check_settings(out, {"kind": "ablation", "config": config_to_dict(cfg), "data": data_description,
                           "vae": vae_source, "fvd": fvd_record})
    store = C.StageStore(shared)
    if vae_path is None:
        plan = store.run("vae_plan", lambda: S.plan_vae_steps(cfg, DEFAULT_DESIGN, train_data, device))
        store.run("vae", lambda: S.train_vae_stage(cfg, DEFAULT_DESIGN, train_data, shared / "vae", plan["steps"],
                                                   device, progress))
        S.remove_training_state(shared / "vae")
        vae = S.load_vae(shared / "vae", device)
    store.run("cache", lambda: S.cache_stage(vae, train_data, shared / "cache", device, progress))
    real = C.stack_videos(eval_data, range(cfg.eval_clips))
    real_feats = C.real_features(i3d, real, cfg, out / "real_i3d.npy") if i3d is not None else None
    floor = C.real_vs_real_fvd(i3d, train_data, real_feats, cfg, out / "train_i3d.npy") if i3d is not None else None

    t_start, rows = time.time(), []
    for i, v in enumerate(variants):
        folder = out / "variants" / v.name
        done = C.StageStore(folder).get("result")
        if done is not None:
            C.say(f"[{i + 1}/{len(variants)}] {v.name}: finished earlier, reused")
            rows.append(done)
            continue
        C.say(f"[{i + 1}/{len(variants)}] {v.name} ({v.description})")
        t0 = time.time()
        row = run_variant(v, cfg, folder, shared / "cache", vae, device, i3d, real_feats, progress, fvd_record)
        row["variant_s"] = time.time() - t0
        row["load_1min"] = C.load_1min()
        C.write_json(folder / "stages" / "result.json", row)
        rows.append(row)
        fvd = "n/a" if row["fvd"] is None else f"{row['fvd']:.1f}"
        C.say(f"  done in {row['variant_s'] / 60:.1f} min: loss {row['walt_final_loss']:.4f}, FVD {fvd}, "
              f"{row['walt_train_steps_per_s']:.2f} train steps/s")
        write_study_report(out, rows, "ablation", cfg, C.machine_info(device), command, data_description,
                           fvd_record, fvd_floor=floor, plots=False, autoencoder=ae_note)  # plots at the end
    write_study_report(out, rows, "ablation", cfg, C.machine_info(device), command, data_description,
                           fvd_record, autoencoder=ae_note, fvd_floor=floor)
    C.say(f"{len(rows)} variants in {(time.time() - t_start) / 60:.1f} min this run: {out / 'report.md'}")
    return rows
