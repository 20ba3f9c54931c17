"""`walt demo`: the whole W.A.L.T pipeline, end to end, inside a wall-clock budget.

    stage 1  train the causal 3D CNN autoencoder           (walt.train.train_vae,        SPEC §1)
    stage 2  encode the training clips into a latent cache  (walt.data.latent_cache,     SPEC §1-2)
    stage 3  train the W.A.L.T denoiser from the cache      (walt.train.denoiser_loop,        SPEC §2-3),
             measuring FVD (real Kinetics-400 I3D) at step 0, mid-run and at the end  (walt.demo.fvd_curve)
   [stage 4  with `text_minutes` > 0 (`walt demo --text`): a text-conditioned denoiser on the same
             cache and its captions, held-out prompts -> videos                       (walt.demo.text_stage)]
    last     sample class-conditional videos and frame-prediction continuations of held-out
             clips (walt.pipeline.generate, DDIM), measure, write videos, grids, curves, report

Budget (`walt.experiment.budget`): stage 1 ends at `vae_fraction` of the budget, stage 3 (training
and its FVD evaluations) at `1 - final_fraction` (it gets whatever the cache left); the text stage
has its own `text_minutes` after that. Training stages measure their pace and end at their deadline.

Resuming (`walt.experiment.runner`): `out/stages.json` records finished stages; a rerun with the
same `--out` and the same settings reuses them (an unfinished stage starts over, and so does
everything after it). SIGTERM / SIGINT end the run after the current training step with a
checkpoint (`DemoInterrupted`; `out/interrupted.json` says where and how much of the budget was
spent), and `resume=True` continues that stage from its checkpoint with the rest of the budget.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from walt.config import config_to_dict
from walt.demo.demo_config import DemoConfig
from walt.demo.train_stages import autoencoder_stage, cache_stage, denoiser_stage, load_demo_vae, say
from walt.experiment.budget import clock
from walt.experiment.machine import machine_info
from walt.experiment.runner import SettingsError, StageLog, check_settings, remove
from walt.io import read_json, write_json

__all__ = ["run_demo", "DemoError", "DemoInterrupted", "STAGES"]

STAGES = ("vae", "cache", "classifier", "walt", "text", "samples")
STAGE_TITLES = {
    "vae": "train the causal autoencoder",
    "cache": "encode the latent cache",
    "classifier": "train the motion classifier of the class score",
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
    "fvd_at_start", "score_samples_per_class", "score_heldout_clips",
}


class DemoError(SettingsError):
    """A demo run cannot go on as asked (settings clash with what --out holds, ...): one line for the user."""


class DemoInterrupted(Exception):
    """SIGTERM / SIGINT stopped the run after a checkpoint; `signal` is its name, `stage` where it stopped."""

    def __init__(self, signal: str, stage: str, out: Path):
        super().__init__(f"{signal} during stage {stage!r}")
        self.signal, self.stage, self.out = signal, stage, out

    @property
    def exit_code(self) -> int:
        return 130 if self.signal == "SIGINT" else 143  # 128 + the signal number, as a shell reports it


def _walt_stage(cfg: DemoConfig, out: Path, vae, device, seed: int, deadline: float, progress: bool,
                i3d_source, resume: bool = False, check=None) -> dict[str, Any]:
    """Stage 3 with FVD when the I3D can be had, else with the reason it was skipped."""
    from walt.demo.fvd_curve import DemoFVD, config_skip_reason, save_progress_grid

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
    info = denoiser_stage(cfg, out, device, seed, deadline, progress, fvd=fvd_run, resume=resume,
                          **({"check": check} if check is not None else {}))
    if fvd_run is not None:
        save_progress_grid(out / "fvd_progress.png", fvd_run)
        (out / "fvd.json").write_text(json.dumps(info["fvd"], indent=2))
    else:
        info["fvd"] = {"skipped": skip}
        (out / "fvd_progress.png").unlink(missing_ok=True)
    return info


def run_demo(cfg: DemoConfig, out: str | Path, minutes: float = 15.0, device: str | torch.device = "cpu",
             seed: int = 0, fresh: bool = False, progress: bool = True, preset: str = "custom",
             text_minutes: float = 0.0, text_encoder: Any = None, resume: bool = False,
             pretrained: bool | str | Path = True) -> dict[str, Any]:
    """Run the demo into `out`; returns the summary that report.md is written from.

    Args:
        cfg: what to train and sample (`walt.demo.demo_config.demo_config(name, **overrides)`).
        out: output folder (created); holds stage folders vae/, cache/, walt/ and the results.
        minutes: wall-clock budget for the main stages (they get fixed fractions of it).
        device: torch device; on CUDA the autoencoder and the denoiser train under bf16 autocast.
        seed: seeds data, initialisation, training and sampling.
        fresh: discard whatever `out` holds instead of reusing finished stages.
        text_minutes: > 0 adds the text-to-video stage with this budget of its own (`walt demo --text`).
        text_encoder: an already built `walt.text` encoder for it (default: built from cfg.text_encoder).
        resume: continue a run that a signal stopped (its stage from the checkpoint, the budget
            from what was left); DemoError if `out` holds no such run.
        pretrained: use the committed autoencoder (`walt.demo.pretrained`; or the one at this path)
            when it was made for these settings, giving stage 1's minutes to the denoiser; False
            trains every stage.
    Raises:
        DemoInterrupted: SIGTERM / SIGINT arrived; the current stage saved a checkpoint first.
    """
    from walt.train.distributed import GracefulStop, clear_stop_request

    for name, value in (("minutes", minutes), ("text_minutes", text_minutes)):
        if not math.isfinite(value) or value < 0 or (name == "minutes" and value == 0):
            raise DemoError(f"{name} must be a positive number, got {value}")
    out, device = Path(out), torch.device(device)
    if resume and fresh:
        raise DemoError("--resume continues a stopped run and --fresh discards it: pass one of them")
    if resume and not (out / "settings.json").is_file():
        raise DemoError(f"{out} holds no demo run to resume; drop --resume to start one")
    out.mkdir(parents=True, exist_ok=True)
    if fresh:
        remove(out / name for name in ("vae", "cache", "walt", "walt_text", "stages.json", "settings.json",
                                       "interrupted.json"))
    from walt.demo.pretrained import ASSET, pretrained_for, sha256

    asset_path = ASSET if pretrained is True else Path(pretrained) if pretrained else None
    asset, why_not = pretrained_for(cfg, seed, asset_path) if asset_path else (None, "--from-scratch")
    autoencoder = f"pretrained {sha256(asset)[:16]}" if asset else "trained"
    check_settings(out / "settings.json", {"config": config_to_dict(cfg), "seed": seed, "autoencoder": autoencoder},
                   "a demo run", "pass --fresh to replace it or choose another --out", REUSABLE_CHANGES, error=DemoError)
    # A run a signal stopped says how much of its budget it had spent; one killed outright (no
    # record) resumes its stages from their checkpoints with the whole budget again.
    stopped = (read_json(out / "interrupted.json") or {"stage": None, "signal": None, "elapsed_s": 0.0}) if resume else None
    spent = float(stopped["elapsed_s"]) if stopped else 0.0
    clear_stop_request()
    t_start = time.time() - spent  # a resumed run keeps the budget's original deadlines
    state = {"stage": "vae"}
    with GracefulStop(announce=False):  # signals between training steps (FVD, encoding) are caught too
        try:
            summary = _run_stages(cfg, out, minutes, device, seed, progress, preset, text_minutes, text_encoder,
                                  t_start, stopped, state, asset, why_not)
        except DemoInterrupted as e:
            write_json(out / "interrupted.json", {"signal": e.signal, "stage": e.stage,
                                                  "elapsed_s": time.time() - t_start})
            raise
    (out / "interrupted.json").unlink(missing_ok=True)
    return summary


def _stop_check(state: dict[str, str], out: Path):
    """`check()` for the stages: raise DemoInterrupted once a SIGTERM / SIGINT has arrived."""
    from walt.train.distributed import stop_requested

    def check(step: int | None = None) -> None:
        signal = stop_requested()
        if signal is not None:
            raise DemoInterrupted(signal, state["stage"], out)

    return check


def _run_stages(cfg: DemoConfig, out: Path, minutes: float, device: torch.device, seed: int, progress: bool,
                preset: str, text_minutes: float, text_encoder: Any, t_start: float, stopped: dict | None,
                state: dict[str, str], asset: Path | None, why_not: str) -> dict[str, Any]:
    from walt.demo.fvd_curve import I3DSource, config_skip_reason
    from walt.demo.results import write_outputs

    log = StageLog(out / "stages.json", order=STAGES)
    check = _stop_check(state, out)
    budget = minutes * 60.0
    extra = f" + {text_minutes:g} min text-to-video" if text_minutes else ""
    again = (f"; resuming stage {stopped['stage']!r} stopped by {stopped['signal']}" if stopped and stopped["signal"]
             else "; resuming from the checkpoints in it" if stopped else "")
    say(f"budget {minutes:g} min{extra} on {device} ({torch.get_num_threads()} threads): until "
        f"~{clock(t_start + budget + text_minutes * 60)}; output in {out}{again}")
    # Look the I3D up now: a missing one is fetched in the background while the autoencoder trains.
    i3d_source = I3DSource(device)
    if not log.done("walt") and config_skip_reason(cfg) is None:
        i3d_source.start()
    names = [s for s in STAGES if s != "text" or text_minutes > 0]

    def due(name: str, deadline: float | None) -> bool:
        check()
        state["stage"] = name
        i = names.index(name) + 1
        if log.done(name):
            say(f"[{i}/{len(names)}] {STAGE_TITLES[name]}: reused from {out} (finished earlier; --fresh to redo)")
            return False
        log.forget_from(name)
        say(f"[{i}/{len(names)}] {STAGE_TITLES[name]}" + (f", until ~{clock(deadline)}" if deadline else ""))
        return True

    def resuming(name: str) -> bool:  # continue this stage from its checkpoint (if it has one)
        return stopped is not None

    vae_deadline, walt_deadline = t_start + cfg.vae_fraction * budget, t_start + (1.0 - cfg.final_fraction) * budget
    if asset is not None:
        if due("vae", None):
            from walt.demo.pretrained import install_pretrained

            info = log.finish("vae", install_pretrained(asset, out))
            say(f"  autoencoder: the pretrained one ({info['steps']} steps, {info['trained_seconds'] / 60:.0f} min; "
                f"sha256 {info['sha256'][:16]}); its minutes go to the denoiser (--from-scratch trains it)")
    else:
        if due("vae", vae_deadline):
            say(f"  autoencoder: trained now ({why_not})")
            log.finish("vae", {**autoencoder_stage(cfg, out, device, seed, vae_deadline, progress,
                                                   resume=resuming("vae"), check=check),
                               "pretrained": False, "why_not_pretrained": why_not})
    vae = load_demo_vae(out, device)
    if due("cache", None):
        log.finish("cache", cache_stage(cfg, out, vae, device, seed, progress))
    if due("classifier", None):  # before the denoiser: its time comes out of the denoiser's, not the report's
        from walt.demo.results import demo_classifier

        log.finish("classifier", demo_classifier(cfg, vae, seed)[1])
    if due("walt", walt_deadline):
        log.finish("walt", _walt_stage(cfg, out, vae, device, seed, walt_deadline, progress, i3d_source,
                                       resume=resuming("walt"), check=check))
    if text_minutes > 0:
        from walt.demo.text_stage import text_stage

        settings = {"minutes": text_minutes, "encoder": cfg.text_encoder, "guidance_scale": cfg.text_guidance_scale}
        if log.done("text") and log.get("text").get("settings") != settings:
            log.forget_from("text")  # other text settings: redo only this stage
        if due("text", time.time() + text_minutes * 60):
            info = text_stage(cfg, out, vae, device, seed, minutes=text_minutes, encoder=text_encoder,
                              progress=progress)
            log.finish("text", {"settings": settings, **info})
    check()
    state["stage"] = "samples"
    log.forget_from("samples")
    say(f"[{len(names)}/{len(names)}] {STAGE_TITLES['samples']}")
    t0 = time.time()
    summary = write_outputs(cfg, out, vae, device, seed, log.stages, machine_info(device), minutes, preset,
                            finish_stage=lambda info: log.finish("samples", {"seconds": time.time() - t0, **info}),
                            run_seconds=lambda: time.time() - t_start)
    say(f"done in {(time.time() - t_start) / 60:.1f} min: {out / 'report.md'}")
    return summary
