"""`walt study encoder`: the causal encoder's design vs generation quality and throughput (SPEC §6).

For each autoencoder design (temporal factor f_t, spatial factor f_s, latent channels c, causal or
not), under the SAME training budget (steps, or wall-clock minutes), the study

    1. trains the autoencoder on the training pool,
    2. reconstructs held-out clips: PSNR, SSIM, rFVD; times encode / decode (clips/s),
    3. encodes the training pool into a latent cache (tokens per clip = t * h/p * w/p),
    4. trains a small W.A.L.T on the cache (same budget for every design),
    5. samples clips with DDIM, decodes them, times it (clips/s) and measures FVD,

and writes one row per design (CSV, Markdown, Pareto plots; `walt.study.report`).

The grid is a one-factor-at-a-time sweep around the paper's default (f_t=4, f_s=8, c=8, causal;
W.A.L.T §3.1) unless `full_factorial`, e.g. grid "full" = 1 + 3 + 2 + 3 + 1 = 10 designs:

    f_t in 1, 2, 4, 8   x   f_s in 4, 8, 16   x   c in 4, 8, 16, 32   x   causal / non-causal

The paper's own sweep (c = 4/8/16/32: rFVD 37.7/17.1/8.2/3.5, FVD 86.4/75.4/67.0/83.4) is the
channel axis of this grid.

Output folder layout (resumable: finished designs and finished stages are reused):
    study.json                        the settings; a rerun with other settings is refused
    real_i3d.npy                      I3D features of the real held-out clips (computed once)
    designs/<name>/stages/*.json      one file per finished stage
    designs/<name>/{vae,cache,walt}/  the trained models, the latent cache
    designs/<name>/result.json        the finished row (written last, atomically)
    results.csv, report.md, pareto_*.png
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from walt.experiment.runner import StageLog
from walt.study import stages as S
from walt.study.config import StudyConfig
from walt.study.sweep import Sweep

DEFAULT_DESIGN = dict(temporal_factor=4, spatial_factor=8, latent_channels=8, causal=True)
FULL_AXES = dict(temporal_factor=(1, 2, 4, 8), spatial_factor=(4, 8, 16), latent_channels=(4, 8, 16, 32),
                 causal=(True, False))


@dataclass(frozen=True)
class EncoderDesign:
    """One autoencoder design of the sweep (the CausalVAEConfig fields it sets)."""

    temporal_factor: int = 4
    spatial_factor: int = 8
    latent_channels: int = 8
    causal: bool = True

    @property
    def name(self) -> str:
        return (f"ft{self.temporal_factor}_fs{self.spatial_factor}_c{self.latent_channels}_"
                f"{'causal' if self.causal else 'noncausal'}")

    def vae_kwargs(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        """Short plot label: what differs from the default."""
        diff = [f"{k}={v}" for k, v in (("f_t", self.temporal_factor), ("f_s", self.spatial_factor),
                                         ("c", self.latent_channels)) if v != DEFAULT_DESIGN[_FIELD[k]]]
        if not self.causal:
            diff.append("non-causal")
        return ", ".join(diff) or "default"


_FIELD = {"f_t": "temporal_factor", "f_s": "spatial_factor", "c": "latent_channels"}


def one_factor_grid(axes: dict[str, Sequence[Any]], default: dict[str, Any] = DEFAULT_DESIGN) -> list[EncoderDesign]:
    """The default design, then each axis value changed alone (no duplicates)."""
    designs = [EncoderDesign(**default)]
    for key, values in axes.items():
        for v in values:
            d = EncoderDesign(**{**default, key: v})
            if d not in designs:
                designs.append(d)
    return designs


def factorial_grid(axes: dict[str, Sequence[Any]]) -> list[EncoderDesign]:
    keys = list(FULL_AXES)
    values = [axes.get(k, (DEFAULT_DESIGN[k],)) for k in keys]
    return [EncoderDesign(**dict(zip(keys, combo))) for combo in itertools.product(*values)]


def small_grid() -> list[EncoderDesign]:
    """Seven designs that fit a 2-core CPU: default, f_t=1, f_t=2, f_s=4, c=4, c=16, non-causal."""
    return one_factor_grid(dict(temporal_factor=(1, 2), spatial_factor=(4,), latent_channels=(4, 16), causal=(False,)))


def design_grid(grid: str = "small", full_factorial: bool = False, **axes: Sequence[Any]) -> list[EncoderDesign]:
    """Designs of grid "small", "full" or "custom" (axes given as temporal_factor=(..), spatial_factor=.., ...)."""
    unknown = sorted(set(axes) - set(FULL_AXES))
    if unknown:
        raise ValueError(f"unknown design axis {unknown[0]!r}; choose from {sorted(FULL_AXES)}")
    if grid == "small":
        if full_factorial or axes:
            raise ValueError("grid 'small' is a fixed list; use grid 'custom' (or 'full') with axes / full_factorial")
        return small_grid()
    if grid == "full":
        axes = {**FULL_AXES, **axes}
    elif grid == "custom":
        if not axes:
            raise ValueError("grid 'custom' needs at least one axis (--temporal, --spatial, --channels or --causal)")
    else:
        raise ValueError(f"unknown grid {grid!r}; choose small, full or custom")
    return factorial_grid(axes) if full_factorial else one_factor_grid(axes)


def check_design(design: EncoderDesign, cfg: StudyConfig) -> None:
    """ValueError if the clips do not fit the design (frames 1 + f_t k, size a multiple of f_s * p)."""
    ft, fs = design.temporal_factor, design.spatial_factor
    if (cfg.num_frames - 1) % ft or (cfg.vae_train_frames - 1) % ft:
        raise ValueError(f"design {design.name}: frames {cfg.num_frames} / training crops {cfg.vae_train_frames} "
                         f"must be 1 + {ft}k; use 17 and 9 frames for every f_t up to 8")
    if cfg.resolution % (fs * cfg.patch_size):
        raise ValueError(f"design {design.name}: resolution {cfg.resolution} is not a multiple of f_s x patch = "
                         f"{fs} x {cfg.patch_size}; use a multiple of {fs * cfg.patch_size}")


# ----------------------------------------------------------------------------- one design


def run_design(design: EncoderDesign, cfg: StudyConfig, folder: Path, train_data, real: torch.Tensor,
               device: torch.device, i3d=None, real_feats=None, progress: bool = False) -> dict[str, Any]:
    """Every stage of one design (each skipped when already finished); returns its result row."""
    store = StageLog(folder / "stages")
    kw = design.vae_kwargs()
    vae_plan = store.run("vae_plan", lambda: S.plan_vae_steps(cfg, kw, train_data, device))
    vae_info = store.run("vae", lambda: S.train_vae_stage(cfg, kw, train_data, folder / "vae", vae_plan["steps"],
                                                          device, progress))
    vae = S.load_vae(folder / "vae", device)
    recon = store.run("recon", lambda: S.recon_stage(vae, real, cfg, device, i3d, real_feats))
    cache = store.run("cache", lambda: S.cache_stage(vae, train_data, folder / "cache", device, progress))
    recipe = S.WaltRecipe()
    walt_plan = store.run("walt_plan", lambda: S.plan_walt_steps(cfg, recipe, folder / "cache", device))
    walt = store.run("walt", lambda: S.train_walt_stage(cfg, recipe, folder / "cache", folder / "walt",
                                                        walt_plan["steps"], device, progress))
    gen = store.run("generate", lambda: S.generate_stage(cfg, folder / "walt", vae, device, i3d, real_feats))
    S.remove_training_state(folder / "vae")
    S.remove_training_state(folder / "walt")

    c, t, h, w = recon["latent_shape"]
    T, H, W = cfg.num_frames, cfg.resolution, cfg.resolution
    return {
        "design": design.name, "label": design.label(), **kw,
        "latent_shape": f"{c}x{t}x{h}x{w}", "latent_tokens": t * h * w, "tokens_per_clip": walt["tokens_per_clip"],
        "compression": 3 * T * H * W / (c * t * h * w),
        "vae_params": vae_info["params"], "vae_steps": vae_info["steps"], "vae_train_s": vae_info["seconds"],
        "psnr": recon["psnr"], "ssim": recon["ssim"], "rfvd": recon["rfvd"],
        "encode_clips_per_s": recon["encode_clips_per_s"], "decode_clips_per_s": recon["decode_clips_per_s"],
        "walt_params": walt["params"], "walt_steps": walt["steps"], "walt_train_s": walt["seconds"],
        "walt_final_loss": walt["final_loss"], "walt_train_steps_per_s": walt["train_steps_per_s"],
        "sample_clips_per_s": gen["sample_clips_per_s"], "gen_clips_per_s": gen["gen_clips_per_s"],
        "fvd": gen["fvd"], "cache_s": cache["seconds"],
    }


# ----------------------------------------------------------------------------- the sweep


def run_encoder_study(cfg: StudyConfig, designs: Iterable[EncoderDesign], out: str | Path, train_data, eval_data,
                      device: str | torch.device = "cpu", i3d=None, progress: bool = False,
                      command: str | None = None, data_description: str = "builtin") -> list[dict[str, Any]]:
    """Run (or resume) the sweep into `out`; returns the rows of the finished designs, in grid order.

    Args:
        cfg: shared settings (`study_config("cpu" | "gpu" | "micro", **overrides)`).
        designs: the grid (`design_grid(...)`).
        train_data: dataset of dicts {"video": (3, T, H, W) in [-1, 1], "label", ...}: the training pool.
        eval_data: held-out clips (first `cfg.eval_clips` used): reconstruction and FVD reference.
        i3d: the FVD network (default: the Kinetics-400 I3D when cfg.fvd, loaded once); tests inject a fake.
        command: the command line, recorded in the report.
    """
    designs = list(designs)
    if not designs:
        raise ValueError("the design grid is empty")
    for d in designs:
        check_design(d, cfg)
    sweep = Sweep.start(cfg, out, "encoder", {}, train_data, eval_data, device, i3d, command, data_description)

    def run_row(i: int, folder: Path) -> dict[str, Any]:
        return run_design(designs[i], cfg, folder, train_data, sweep.real, sweep.device, sweep.i3d, sweep.real_feats,
                          progress)

    def done_line(row: dict[str, Any]) -> str:
        return (f"PSNR {row['psnr']:.2f} dB, rFVD {_fmt(row['rfvd'])}, FVD {_fmt(row['fvd'])}, "
                f"{row['gen_clips_per_s']:.2f} generated clips/s")

    return sweep.rows([(d.name, d.label()) for d in designs], run_row, "design_s", done_line)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"
