"""`walt study ablation`: the paper's Table 3 knobs at small scale, each against the baseline.

One autoencoder and one latent cache are shared by every variant: the encoder study's default
design trained the same way (its minutes and recipe), or an existing checkpoint (`vae_path`, e.g.
that study's designs/ft2_fs4_c8_causal/vae/vae.safetensors). Only stage 2 changes; every variant
gets the same denoiser minutes, is scored with the same classifier, seeds and real clips as the
encoder study's rows, and is compared with the baseline by paired bootstrap, at equal wall-clock
and at equal steps. The paper's numbers (W.A.L.T Table 3, UCF-101 FVD; SPEC §2-3):

    default          p_sc 0.9, zero terminal SNR, window attention, AdaLN-LoRA r=2, normalised latents
    no_self_cond     self-conditioning off (p_sc 0; the network has no self-cond input)   FVD 110 vs 61
    no_zero_snr      linear betas without the zero-terminal-SNR rescale                   FVD 91 vs 61
    no_latent_norm   the transformer trains on raw (unnormalised) latents                 FVD 67.9 vs 60.7
    full_attention   every layer attends over the whole latent (no windows)               equal FVD, 1.20 vs 2.00 steps/s
    adaln_lora_0     a separate AdaLN MLP per layer instead of AdaLN-LoRA r=2             similar FVD, 458M vs 313M params
    window_small     (opt-in) spatiotemporal window a quarter of the frame per side instead of half (5x4x4 vs 5x8x8 on
                     16x16 latents)                                                       equal FVD, 2.24 vs 2.00 steps/s

Output folder: study.json, stages/, shared/{vae,cache,eval}, variants/<name>/{walt,eval,stages},
results.csv, report.md, report.json, ablation.png. Resumable like the encoder study.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from walt.study import stages as S
from walt.study.study_config import StudyConfig
from walt.study.encoder import DEFAULT_DESIGN

__all__ = ["AblationVariant", "VARIANTS", "DEFAULT_VARIANTS", "get_variants", "run_ablation_study"]


@dataclass(frozen=True)
class AblationVariant:
    name: str
    description: str
    recipe: S.WaltRecipe
    paper: str = ""  # what the paper reports for this knob
    paper_effect: tuple[tuple[str, str], ...] = ()  # ("fvd", "+"): higher than the baseline; "=": no difference


VARIANTS: dict[str, Callable[[], AblationVariant]] = {
    "default": lambda: AblationVariant("default", "baseline", S.WaltRecipe(), "FVD 60.7 (L, 35k steps)"),
    "no_self_cond": lambda: AblationVariant(
        "no_self_cond", "self-conditioning off (p_sc 0)",
        S.WaltRecipe(walt_overrides=(("self_conditioning", False),), p_self_cond=0.0), "FVD 110 vs 61",
        (("fvd", "+"),)),
    "no_zero_snr": lambda: AblationVariant(
        "no_zero_snr", "no zero-terminal-SNR rescale", S.WaltRecipe(diffusion=(("zero_terminal_snr", False),)),
        "FVD 91 vs 61", (("fvd", "+"),)),
    "no_latent_norm": lambda: AblationVariant(
        "no_latent_norm", "latents not normalised", S.WaltRecipe(normalize=False), "FVD 67.9 vs 60.7",
        (("fvd", "+"),)),
    "full_attention": lambda: AblationVariant(
        "full_attention", "full attention instead of windows", S.WaltRecipe(walt_overrides=(("attention", "full"),)),
        "equal FVD; 1.20 vs 2.00 training steps/s", (("fvd", "="),)),
    "adaln_lora_0": lambda: AblationVariant(
        "adaln_lora_0", "separate AdaLN per layer (LoRA rank 0)", S.WaltRecipe(walt_overrides=(("adaln_lora_rank", 0),)),
        "similar FVD; 458M vs 313M parameters at L size", (("fvd", "="),)),
    "window_small": lambda: AblationVariant(
        "window_small", "smaller spatiotemporal window (1/4 of the frame per side)", S.WaltRecipe(st_window_divisor=4),
        "equal FVD; 2.24 vs 2.00 training steps/s (5x4x4 vs 5x8x8)", (("fvd", "="),)),
}
DEFAULT_VARIANTS = ("default", "no_self_cond", "no_zero_snr", "no_latent_norm", "full_attention", "adaln_lora_0")


def get_variants(names: Iterable[str] | None = None) -> list[AblationVariant]:
    """The named variants (default: DEFAULT_VARIANTS; the first one is every difference's reference)."""
    names = list(DEFAULT_VARIANTS) if names is None else list(names)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown ablation variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    return [VARIANTS[n]() for n in dict.fromkeys(names)]


def run_ablation_study(cfg: StudyConfig, variants: Iterable[AblationVariant], out: str | Path, data=None,
                       device: str | torch.device = "cpu", vae_path: str | Path | None = None, i3d=None,
                       progress: bool = False, command: str | None = None, jobs: int = 1) -> dict[str, Any]:
    """Run (or resume) the ablation into `out`; returns the report's summary (rows, analysis).

    Args:
        vae_path: an autoencoder checkpoint to share (default: train the encoder study's default
            design here, with its minutes). The other arguments are `run_encoder_study`'s.
    """
    from walt.study.sweep import RowSpec, run_study

    variants = list(variants)
    if not variants:
        raise ValueError("no ablation variants given")
    source: dict[str, Any] = {"trained": DEFAULT_DESIGN}
    if vae_path is not None:
        from walt.autoencoder import CausalVAE
        from walt.data.latent_dataset import vae_fingerprint

        source = {"path": str(vae_path), "sha256": vae_fingerprint(CausalVAE.load(vae_path))}
    rows = [RowSpec(v.name, v.description, None, v.recipe, v.paper, v.paper_effect) for v in variants]
    return run_study(cfg, "ablation", rows, out, data, device, i3d, progress, command, jobs, vae_path=vae_path,
                     vae_source=source, shared_design=dict(DEFAULT_DESIGN))
