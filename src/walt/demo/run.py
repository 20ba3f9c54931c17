"""`walt demo`: the whole W.A.L.T pipeline, end to end, inside a wall-clock budget.

    stage 1  train the causal 3D CNN autoencoder           (walt.train.train_vae,        SPEC §1)
    stage 2  encode the training clips into a latent cache  (walt.data.latent_cache,     SPEC §1-2)
    stage 3  train the W.A.L.T denoiser from the cache      (walt.train.denoiser,        SPEC §2-3),
             measuring FVD (real Kinetics-400 I3D) at step 0, mid-run and at the end  (walt.demo.fvd)
   [stage 4  with `text_minutes` > 0 (`walt demo --text`): a text-conditioned denoiser on the same
             cache and its captions, held-out prompts -> videos                       (walt.demo.text)]
    last     sample class-conditional videos and frame-prediction continuations of held-out
             clips (walt.pipeline.generate, DDIM), measure, write videos, grids, curves, report

Budget (`walt.experiment.budget`): stage 1 ends at `vae_fraction` of the budget, stage 3 (training
and its FVD evaluations) at `1 - final_fraction` (it gets whatever the cache left); the text stage
has its own `text_minutes` after that. Training stages measure their pace and end at their deadline.

Resuming (`walt.experiment.runner`): `out/stages.json` records finished stages; a rerun with the
same `--out` and the same settings reuses them (an unfinished stage starts over, and so does
everything after it).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from walt.config import config_to_dict
from walt.demo.config import DemoConfig
from walt.demo.stages import autoencoder_stage, cache_stage, denoiser_stage, load_demo_vae, say
from walt.experiment.budget import clock
from walt.experiment.machine import machine_info
from walt.experiment.runner import SettingsError, StageLog, check_settings, remove

__all__ = ["run_demo", "DemoError", "STAGES"]

STAGES = ("vae", "cache", "walt", "text", "samples")
STAGE_TITLES = {
    "vae": "train the causal autoencoder",
    "cache": "encode the latent cache",
    "walt": "train the W.A.L.T denoiser (and measure its FVD)",
    "text": "train the text-to-video denoiser",
    "samples": "sample, measure, write the report",
}

# Settings that only change how long the stages train, how the final stage samples, what the text
# stage does (it checks its own settings) or how a *new* stage 3 measures FVD (a reused one keeps
# the FVD it measured, recorded with its protocol): a run folder trained with other values is
# still reused (like a different --minutes).
REUSABLE_CHANGES = {
    "vae_fraction", "final_fraction", "calibration_steps", "vae_min_steps", "walt_min_steps",
    "samples_per_class", "sampler", "sample_steps", "guidance_scale", "context_latent_frames", "fps",
    "text_encoder", "text_guidance_scale", "fvd_clips", "fvd_checkpoints", "fvd_sample_steps", "fvd_max_share",
}


class DemoError(SettingsError):
    """A demo run cannot go on as asked (settings clash with what --out holds, ...): one line for the user."""


def _walt_stage(cfg: DemoConfig, out: Path, vae, device, seed: int, deadline: float, progress: bool,
                i3d_source) -> dict[str, Any]:
    """Stage 3 with FVD when the I3D can be had, else with the reason it was skipped."""
    from walt.demo.fvd import DemoFVD, config_skip_reason, save_progress_grid

    skip, fvd_run = config_skip_reason(cfg), None
    if skip is None:
        # A background fetch still running gets a bounded wait (it comes out of the training time).
        i3d, why = i3d_source.get(timeout=max(10.0, min(120.0, 0.2 * (deadline - time.time()))))
        if i3d is None:
            skip = f"the Kinetics-400 I3D weights could not be had: {why}"
        else:
            fvd_run = DemoFVD(cfg, vae, i3d, device, seed)
    if skip is not None:
        say(f"  FVD skipped: {skip}")
    info = denoiser_stage(cfg, out, device, seed, deadline, progress, fvd=fvd_run)
    if fvd_run is not None:
        save_progress_grid(out / "fvd_progress.png", fvd_run)
        (out / "fvd.json").write_text(json.dumps(info["fvd"], indent=2))
    else:
        info["fvd"] = {"skipped": skip}
        (out / "fvd_progress.png").unlink(missing_ok=True)
    return info


def run_demo(cfg: DemoConfig, out: str | Path, minutes: float = 15.0, device: str | torch.device = "cpu",
             seed: int = 0, fresh: bool = False, progress: bool = True, preset: str = "custom",
             text_minutes: float = 0.0, text_encoder: Any = None) -> dict[str, Any]:
    """Run the demo into `out`; returns the summary that report.md is written from.

    Args:
        cfg: what to train and sample (`walt.demo.config.demo_config(name, **overrides)`).
        out: output folder (created); holds stage folders vae/, cache/, walt/ and the results.
        minutes: wall-clock budget for the main stages (they get fixed fractions of it).
        device: torch device; on CUDA the autoencoder and the denoiser train under bf16 autocast.
        seed: seeds data, initialisation, training and sampling.
        fresh: discard whatever `out` holds instead of reusing finished stages.
        text_minutes: > 0 adds the text-to-video stage with this budget of its own (`walt demo --text`).
        text_encoder: an already built `walt.text` encoder for it (default: built from cfg.text_encoder).
    """
    from walt.demo.fvd import I3DSource, config_skip_reason
    from walt.demo.report import write_outputs

    for name, value in (("minutes", minutes), ("text_minutes", text_minutes)):
        if not math.isfinite(value) or value < 0 or (name == "minutes" and value == 0):
            raise DemoError(f"{name} must be a positive number, got {value}")
    out, device = Path(out), torch.device(device)
    out.mkdir(parents=True, exist_ok=True)
    if fresh:
        remove(out / name for name in ("vae", "cache", "walt", "walt_text", "stages.json", "settings.json"))
    check_settings(out / "settings.json", {"config": config_to_dict(cfg), "seed": seed}, "a demo run",
                   "pass --fresh to replace it or choose another --out", REUSABLE_CHANGES, error=DemoError)
    log = StageLog(out / "stages.json", order=STAGES)
    t_start, budget = time.time(), minutes * 60.0
    extra = f" + {text_minutes:g} min text-to-video" if text_minutes else ""
    say(f"budget {minutes:g} min{extra} on {device} ({torch.get_num_threads()} threads): until "
        f"~{clock(t_start + budget + text_minutes * 60)}; output in {out}")
    # Look the I3D up now: a missing one is fetched in the background while the autoencoder trains.
    i3d_source = I3DSource(device)
    if not log.done("walt") and config_skip_reason(cfg) is None:
        i3d_source.start()
    names = [s for s in STAGES if s != "text" or text_minutes > 0]

    def due(name: str, deadline: float | None) -> bool:
        i = names.index(name) + 1
        if log.done(name):
            say(f"[{i}/{len(names)}] {STAGE_TITLES[name]}: reused from {out} (finished earlier; --fresh to redo)")
            return False
        log.forget_from(name)
        say(f"[{i}/{len(names)}] {STAGE_TITLES[name]}" + (f", until ~{clock(deadline)}" if deadline else ""))
        return True

    vae_deadline, walt_deadline = t_start + cfg.vae_fraction * budget, t_start + (1.0 - cfg.final_fraction) * budget
    if due("vae", vae_deadline):
        log.finish("vae", autoencoder_stage(cfg, out, device, seed, vae_deadline, progress))
    vae = load_demo_vae(out, device)
    if due("cache", None):
        log.finish("cache", cache_stage(cfg, out, vae, device, seed, progress))
    if due("walt", walt_deadline):
        log.finish("walt", _walt_stage(cfg, out, vae, device, seed, walt_deadline, progress, i3d_source))
    if text_minutes > 0:
        from walt.demo.text import text_stage

        settings = {"minutes": text_minutes, "encoder": cfg.text_encoder, "guidance_scale": cfg.text_guidance_scale}
        if log.done("text") and log.get("text").get("settings") != settings:
            log.forget_from("text")  # other text settings: redo only this stage
        if due("text", time.time() + text_minutes * 60):
            info = text_stage(cfg, out, vae, device, seed, minutes=text_minutes, encoder=text_encoder,
                              progress=progress)
            log.finish("text", {"settings": settings, **info})
    log.forget_from("samples")
    say(f"[{len(names)}/{len(names)}] {STAGE_TITLES['samples']}")
    t0 = time.time()
    summary = write_outputs(cfg, out, vae, device, seed, log.stages, machine_info(device), minutes, preset,
                            finish_stage=lambda info: log.finish("samples", {"seconds": time.time() - t0, **info}),
                            run_seconds=lambda: time.time() - t_start)
    say(f"done in {(time.time() - t_start) / 60:.1f} min: {out / 'report.md'}")
    return summary

