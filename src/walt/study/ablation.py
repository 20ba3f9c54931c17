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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from walt.experiment.runner import StageLog
from walt.study import stages as S
from walt.study.config import StudyConfig
from walt.study.encoder import DEFAULT_DESIGN
from walt.study.sweep import Sweep


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


def run_variant(variant: AblationVariant, cfg: StudyConfig, folder: Path, cache: Path, vae, device: torch.device,
                i3d=None, real_feats=None, progress: bool = False) -> dict[str, Any]:
    """Train and evaluate one variant on the shared cache (finished stages are skipped)."""
    store = StageLog(folder / "stages")
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
            "gen_clips_per_s": gen["gen_clips_per_s"], "fvd": gen["fvd"]}


def run_ablation_study(cfg: StudyConfig, variants: Iterable[AblationVariant], out: str | Path, train_data,
                       eval_data, device: str | torch.device = "cpu", vae_path: str | Path | None = None, i3d=None,
                       progress: bool = False, command: str | None = None,
                       data_description: str = "builtin") -> list[dict[str, Any]]:
    """Run (or resume) the ablation into `out`; returns one row per finished variant.

    Args:
        vae_path: an existing autoencoder checkpoint to share (e.g. the default design of an encoder
            study: `designs/ft4_fs8_c8_causal/vae/vae.safetensors`); default: train the default design here.
        The other arguments are those of `walt.study.encoder.run_encoder_study`.
    """
    variants = list(variants)
    if not variants:
        raise ValueError("no ablation variants given")
    vae, vae_source, ae_note = _shared_autoencoder_source(cfg, vae_path, device)
    sweep = Sweep.start(cfg, out, "ablation", {"vae": vae_source}, train_data, eval_data, device, i3d, command,
                        data_description)
    shared = sweep.out / "shared"
    store = StageLog(shared / "stages")
    if vae is None:
        plan = store.run("vae_plan", lambda: S.plan_vae_steps(cfg, DEFAULT_DESIGN, train_data, sweep.device))
        store.run("vae", lambda: S.train_vae_stage(cfg, DEFAULT_DESIGN, train_data, shared / "vae", plan["steps"],
                                                   sweep.device, progress))
        S.remove_training_state(shared / "vae")
        vae = S.load_vae(shared / "vae", sweep.device)
    store.run("cache", lambda: S.cache_stage(vae, train_data, shared / "cache", sweep.device, progress))

    def run_row(i: int, folder: Path) -> dict[str, Any]:
        return run_variant(variants[i], cfg, folder, shared / "cache", vae, sweep.device, sweep.i3d, sweep.real_feats,
                           progress)

    def done_line(row: dict[str, Any]) -> str:
        fvd = "n/a" if row["fvd"] is None else f"{row['fvd']:.1f}"
        return f"loss {row['walt_final_loss']:.4f}, FVD {fvd}, {row['walt_train_steps_per_s']:.2f} train steps/s"

    return sweep.rows([(v.name, v.description) for v in variants], run_row, "variant_s", done_line,
                      autoencoder=ae_note)


def _shared_autoencoder_source(cfg: StudyConfig, vae_path, device):
    """(the loaded autoencoder or None (train it here), its record for study.json, the report's note)."""
    from walt.autoencoder import CausalVAE
    from walt.data.latent_dataset import vae_fingerprint

    if vae_path is not None:
        vae = CausalVAE.load(vae_path, map_location=torch.device(device)).eval().requires_grad_(False)
        source = {"path": str(vae_path), "sha256": vae_fingerprint(vae)}
        return vae, source, f"`{vae_path}` (weights sha256 {source['sha256'][:12]})"
    spent = f"{cfg.vae_steps} steps" if cfg.budget_minutes is None else f"{cfg.vae_fraction * cfg.budget_minutes:g} minutes"
    return None, {"trained": DEFAULT_DESIGN}, f"the default design (f_t=4, f_s=8, c=8, causal) trained here for {spent}"
