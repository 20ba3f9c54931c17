"""`walt study encoder`: the causal encoder's design vs generation quality and throughput (SPEC §6).

Each autoencoder design (temporal factor f_t, spatial factor f_s, latent channels c, causal or
not, time compressed in the early or the late levels) is one row. Every row gets the same
wall-clock minutes of training (`walt.study.stages`): it trains the autoencoder, encodes the
training pool into a latent cache and trains the same W.A.L.T on it, keeping EMA snapshots so
that rows can also be compared at equal denoiser steps. Then every row is scored the same way
(`walt.study.evaluate`: reconstruction, class-conditional samples under one motion classifier
and the I3D), timed alone (`walt.study.timing`), and compared with the first design, the
reference, by paired bootstrap (`walt.study.analysis`). `walt.study.sweep` runs the phases.

Grids (one factor at a time around the first design, unless `full_factorial`):
    small   the demo's autoencoder (f_t=2, f_s=4, c=8, causal, late) and f_t 1 / 4, f_s 8, c 4 / 16,
            non-causal, early time compression: 8 rows for 2 CPU cores
    paper   W.A.L.T's Table 3f at 17x128x128: f_t=4, f_s=8, causal, c = 8 (reference) / 4 / 16 / 32
    full    every value of FULL_AXES, one at a time around the small grid's reference
    custom  the axes given

Output folder (resumable: finished stages are reused):
    study.json                       the settings; a rerun with other settings is refused
    stages/                          the study's own stages (reference, common step, analysis)
    shared/                          the classifier, real features, the floor (walt.study.reference)
    designs/<name>/{vae,cache,walt,eval,stages}/   one row; failed.json when it failed
    results.csv, report.md, analysis.json, *.png  (walt.study.report)
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from walt.study.study_config import StudyConfig

DEFAULT_DESIGN = dict(temporal_factor=2, spatial_factor=4, latent_channels=8, causal=True, temporal_downsampling="late")
PAPER_DESIGN = dict(DEFAULT_DESIGN, temporal_factor=4, spatial_factor=8)
FULL_AXES = dict(temporal_factor=(1, 2, 4, 8), spatial_factor=(4, 8, 16), latent_channels=(4, 8, 16, 32),
                 causal=(True, False), temporal_downsampling=("late", "early"))
_SHORT = (("temporal_factor", "f_t"), ("spatial_factor", "f_s"), ("latent_channels", "c"))


@dataclass(frozen=True)
class EncoderDesign:
    """One autoencoder design (the CausalVAEConfig fields it sets)."""

    temporal_factor: int = 2
    spatial_factor: int = 4
    latent_channels: int = 8
    causal: bool = True
    temporal_downsampling: str = "late"  # "late": MAGVIT-v2 (the paper); "early": CogVideoX

    @property
    def name(self) -> str:
        early = "_early" if self.temporal_downsampling == "early" else ""
        return (f"ft{self.temporal_factor}_fs{self.spatial_factor}_c{self.latent_channels}_"
                f"{'causal' if self.causal else 'noncausal'}{early}")

    def vae_kwargs(self) -> dict[str, Any]:
        return asdict(self)

    def label(self, reference: "EncoderDesign | None" = None) -> str:
        """Short label: what differs from `reference` (default: the small grid's reference)."""
        ref = reference or EncoderDesign(**DEFAULT_DESIGN)
        diff = [f"{short}={getattr(self, k)}" for k, short in _SHORT if getattr(self, k) != getattr(ref, k)]
        if self.causal != ref.causal:
            diff.append("causal" if self.causal else "non-causal")
        if self.temporal_downsampling != ref.temporal_downsampling:
            diff.append(f"{self.temporal_downsampling} time compression")
        return ", ".join(diff) or "default"


def one_factor_grid(axes: dict[str, Sequence[Any]], default: dict[str, Any] = DEFAULT_DESIGN) -> list[EncoderDesign]:
    """The default design, then each axis value changed alone (no duplicates)."""
    designs = [EncoderDesign(**default)]
    for key, values in axes.items():
        for v in values:
            d = EncoderDesign(**{**default, key: v})
            if d not in designs:
                designs.append(d)
    return designs


def factorial_grid(axes: dict[str, Sequence[Any]], default: dict[str, Any] = DEFAULT_DESIGN) -> list[EncoderDesign]:
    keys = list(FULL_AXES)
    values = [axes.get(k, (default[k],)) for k in keys]
    return [EncoderDesign(**dict(zip(keys, combo))) for combo in itertools.product(*values)]


def small_grid() -> list[EncoderDesign]:
    """Eight rows for 2 CPU cores: the demo's autoencoder, f_t 1 / 4, f_s 8, c 4 / 16, non-causal, early."""
    return one_factor_grid(dict(temporal_factor=(1, 4), spatial_factor=(8,), latent_channels=(4, 16), causal=(False,),
                                temporal_downsampling=("early",)))


def paper_grid() -> list[EncoderDesign]:
    """W.A.L.T Table 3f: c = 8 (the paper's default, the reference), 4, 16, 32 at f_t=4, f_s=8 (SPEC §5:
    rFVD 37.7 / 17.1 / 8.2 / 3.5 and FVD 86.4 / 75.4 / 67.0 / 83.4 for c = 4 / 8 / 16 / 32)."""
    return one_factor_grid(dict(latent_channels=(4, 16, 32)), PAPER_DESIGN)


def design_grid(grid: str = "small", full_factorial: bool = False, **axes: Sequence[Any]) -> list[EncoderDesign]:
    """Designs of grid "small", "paper", "full" or "custom" (axes as temporal_factor=(..), causal=(..), ...)."""
    unknown = sorted(set(axes) - set(FULL_AXES))
    if unknown:
        raise ValueError(f"unknown design axis {unknown[0]!r}; choose from {sorted(FULL_AXES)}")
    if grid in ("small", "paper"):
        if full_factorial or axes:
            raise ValueError(f"grid {grid!r} is a fixed list; use grid 'custom' (or 'full') with axes / full_factorial")
        return small_grid() if grid == "small" else paper_grid()
    if grid == "full":
        axes = {**FULL_AXES, **axes}
    elif grid == "custom":
        if not axes:
            raise ValueError("grid 'custom' needs at least one axis (--temporal, --spatial, --channels, --causal "
                             "or --time-compression)")
    else:
        raise ValueError(f"unknown grid {grid!r}; choose small, paper, full or custom")
    return factorial_grid(axes) if full_factorial else one_factor_grid(axes)


def check_design(design: EncoderDesign, cfg: StudyConfig) -> None:
    """ValueError if the clips do not fit the autoencoder (frames 1 + f_t k, size a multiple of f_s).

    Whether the latent tokens fit the denoiser's patch and windows is the row's own business: a
    misfit is recorded as that row's failure and the others go on."""
    ft, fs = design.temporal_factor, design.spatial_factor
    if (cfg.num_frames - 1) % ft or (cfg.vae_train_frames - 1) % ft:
        raise ValueError(f"design {design.name}: frames {cfg.num_frames} / training crops {cfg.vae_train_frames} "
                         f"must be 1 + {ft}k; use e.g. 9 frames and 5-frame crops for f_t up to 4")
    if cfg.resolution % fs:
        raise ValueError(f"design {design.name}: resolution {cfg.resolution} is not a multiple of f_s = {fs}; "
                         f"use a multiple of {fs}")


def run_encoder_study(cfg: StudyConfig, designs: Iterable[EncoderDesign], out: str | Path, data=None,
                      device: str | torch.device = "cpu", i3d=None, progress: bool = False, command: str | None = None,
                      jobs: int = 1) -> dict[str, Any]:
    """Run (or resume) the design sweep into `out`; returns the report's summary (rows, analysis).

    Args:
        cfg: shared settings (`study_config("cpu" | "paper" | "micro", **overrides)`).
        designs: the grid (`design_grid(...)`); the first one is the reference of every difference.
        data: a `walt.study.clip_sets.StudyData` (default: the built-in clips of `cfg`).
        i3d: the FVD network: None loads the Kinetics-400 I3D when cfg.fvd (tests inject a fake).
        command: the command line, recorded in the report.
        jobs: rows trained (and evaluated) at a time, each in its own 1-thread process.
    """
    from walt.study.sweep import RowSpec, run_study

    designs = list(designs)
    if not designs:
        raise ValueError("the design grid is empty")
    for d in designs:
        check_design(d, cfg)
    rows = [RowSpec(d.name, d.label(designs[0]), d.vae_kwargs()) for d in designs]
    return run_study(cfg, "encoder", rows, out, data, device, i3d, progress, command, jobs)
