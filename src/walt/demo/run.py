"""`walt demo`: the whole W.A.L.T pipeline, end to end, inside a wall-clock budget.

    stage 1  train the causal 3D CNN autoencoder           (walt.train.train_vae,        SPEC §1)
    stage 2  encode the training clips into a latent cache  (walt.data.latent_cache,     SPEC §1-2)
    stage 3  train the W.A.L.T denoiser from the cache      (walt.train.denoiser,        SPEC §2-3)
    stage 4  sample class-conditional videos and frame-prediction continuations of held-out
             clips (walt.pipeline.generate, DDIM), measure, write videos, grids, curves, report

Budget: stage 1 ends at `vae_fraction` of the budget, stage 3 at `1 - final_fraction` (it gets
whatever the cache left). A training stage first runs `calibration_steps` steps (all inside the
LR warmup, so timing them changes nothing about the run), reads their per-step time from the
trainer's log, and sets its total step count to end at its deadline, with `*_min_steps` as a
floor. It then trains in segments of at most a minute, re-measuring the pace after each (other
processes may speed up or slow down the machine) and stretching or shortening the cosine tail;
the autoencoder also stops at its deadline mid-segment if the machine slowed down a lot.

Resuming: `out/stages.json` records finished stages; a rerun with the same `--out` and the same
settings reuses them (an unfinished stage starts over, and so does everything after it).
"""

from __future__ import annotations

import csv
import json
import math
import platform
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from walt.config import config_to_dict
from walt.demo.config import DemoConfig

STAGES = ("vae", "cache", "walt", "samples")
STAGE_TITLES = {
    "vae": "train the causal autoencoder",
    "cache": "encode the latent cache",
    "walt": "train the W.A.L.T denoiser",
    "samples": "sample, measure, write the report",
}


# Settings that only change how long the stages train or how the final stage samples: a run
# folder trained with other values is still reused (like a different --minutes).
REUSABLE_CHANGES = {
    "vae_fraction", "final_fraction", "calibration_steps", "vae_min_steps", "walt_min_steps",
    "samples_per_class", "sampler", "sample_steps", "guidance_scale", "context_latent_frames", "fps",
}


class DemoError(ValueError):
    """A demo run cannot go on as asked (settings clash with what --out holds, ...): one line for the user."""


# ----------------------------------------------------------------------------- bookkeeping


@dataclass
class StageLog:
    """Wall-clock times and step counts per stage, persisted in out/stages.json (resumable)."""

    path: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "StageLog":
        data = json.loads(path.read_text()) if path.is_file() else {}
        return cls(path, data.get("stages", {}))

    def done(self, name: str) -> bool:
        return name in self.stages

    def finish(self, name: str, **info: Any) -> None:
        self.stages[name] = info
        self.path.write_text(json.dumps({"stages": self.stages}, indent=2))

    def invalidate_from(self, name: str) -> None:
        """Forget `name` and every later stage (their inputs are about to change)."""
        for s in STAGES[STAGES.index(name):]:
            self.stages.pop(s, None)
        self.path.write_text(json.dumps({"stages": self.stages}, indent=2))


def _say(msg: str) -> None:
    print(f"[walt demo] {msg}", flush=True)


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _read_log(path: Path) -> list[dict[str, float]]:
    """A trainer's log.csv as a list of float rows (empty cells dropped)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _seconds_per_step(rows: list[dict[str, float]], batch: int, key: str) -> float:
    """Median seconds per step of the logged steps after the first (which pays one-time costs)."""
    per = []
    for r in rows[1:] if len(rows) > 1 else rows:
        if key == "clips_per_s" and r.get("clips_per_s"):
            per.append(batch / r["clips_per_s"])
        elif key == "sec_per_step" and r.get("sec_per_step"):
            per.append(r["sec_per_step"])
    if not per:
        raise RuntimeError("the trainer logged no timing rows during calibration")
    return statistics.median(per)


def _steps_until(deadline: float, done: int, sec_per_step: float, minimum: int, margin: float = 0.03) -> int:
    """Total step count that ends by `deadline` given the measured pace (>= `minimum`, >= `done`)."""
    left = max(0.0, deadline - time.time()) * (1.0 - margin)
    return max(minimum, done, done + int(left / max(sec_per_step, 1e-6)))


def train_to_deadline(train_until: Callable[[int, int | None], int], pace: Callable[[int], float], deadline: float,
                      calibration_steps: int, min_steps: int, name: str, max_segment: float = 60.0) -> int:
    """Drive a resumable trainer so that it ends at `deadline`; returns the final step count.

    `train_until(total, stop_at)` trains (resuming) towards a run of `total` steps and returns
    the step it stopped at, `stop_at` (None: the end, exporting the weights); `pace(since)` is the
    measured seconds per step of the steps after `since`. The first `calibration_steps` lie inside
    the LR warmup, so the provisional total is irrelevant to them. Then the run goes on in segments
    of at most `max_segment` seconds (at the measured pace), re-measuring the pace and re-setting
    the total after each: a machine that gets busier or quieter moves the end of the cosine tail,
    not the deadline.
    """
    done = train_until(10**7, calibration_steps)
    sec = pace(0)
    total = _steps_until(deadline, done, sec, min_steps)
    _say(f"  {name}: {sec:.3f} s/step measured -> {total} steps (until ~{_clock(time.time() + (total - done) * sec)})")
    while (total - done) * sec > max_segment:
        start = done
        done = train_until(total, done + max(1, min((total - done) // 2, int(max_segment / sec))))
        sec = pace(start)
        new_total = _steps_until(deadline, done, sec, min_steps)
        if abs(new_total - total) > 0.05 * total:
            _say(f"  {name}: now {sec:.3f} s/step at step {done} -> {new_total} steps")
        total = new_total
    return train_until(total, None)


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    info = {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["load_average_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    return info


# ----------------------------------------------------------------------------- datasets


def train_dataset(cfg: DemoConfig, seed: int, num_frames: int | None = None):
    from walt.demo.data import DemoVideos

    return DemoVideos(cfg.train_clips, num_frames=num_frames or cfg.num_frames, resolution=cfg.resolution,
                      seed=seed, classes=cfg.classes, backgrounds=cfg.backgrounds, textures=cfg.textures,
                      shape_scale=cfg.shape_scale)


def heldout_dataset(cfg: DemoConfig, seed: int):
    """Clips the autoencoder and the denoiser never see: same generator, another seed."""
    from walt.demo.data import DemoVideos

    return DemoVideos(cfg.heldout_clips, num_frames=cfg.num_frames, resolution=cfg.resolution,
                      seed=seed + 10_007, classes=cfg.classes, backgrounds=cfg.backgrounds, textures=cfg.textures,
                      shape_scale=cfg.shape_scale)


def _vae_batch_fn(dataset, batch_size: int, seed: int) -> Callable[[int], torch.Tensor]:
    """`step -> (B, 3, T, H, W)`: clips drawn by a generator seeded with (seed, step), as train_vae requires."""

    def batch_fn(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        ids = torch.randint(len(dataset), (batch_size,), generator=g)
        return torch.stack([dataset[int(i)]["video"] for i in ids])  # (B, 3, T, H, W)

    return batch_fn


# ----------------------------------------------------------------------------- stage 1


class _StopHere(Exception):
    """Raised by the batch source to end a `train_vae` call at a checkpointed step."""


def train_vae_stage(cfg: DemoConfig, out: Path, device: torch.device, seed: int, deadline: float,
                    progress: bool) -> dict[str, Any]:
    """Train the autoencoder until `deadline` (>= vae_min_steps); returns stage info."""
    from walt.autoencoder import CausalVAE
    from walt.autoencoder.losses import VAELossConfig
    from walt.train.vae import VAETrainConfig, train_vae

    folder = out / "vae"
    shutil.rmtree(folder, ignore_errors=True)
    torch.manual_seed(seed)
    vae = CausalVAE.from_preset("tiny", **cfg.vae_kwargs()).to(device)
    data = train_dataset(cfg, seed, num_frames=cfg.vae_train_frames)
    clips = _vae_batch_fn(data, cfg.vae_batch_size, seed)
    every = 5  # checkpoint cadence = where a call can stop without losing steps
    stop = {"at": None}

    def batch_fn(step: int) -> torch.Tensor:
        # train_vae has no stop_at: the batch source ends the call at the step a checkpoint was
        # just written for (the run resumes from there with the re-planned total), and at the
        # deadline whatever the plan said (the machine may have slowed down mid-segment).
        if step % every == 0 and step > cfg.vae_warmup_steps:
            late = time.time() > deadline and step >= cfg.vae_min_steps
            if late or (stop["at"] is not None and step >= stop["at"]):
                raise _StopHere
        return clips(step)

    def tcfg(steps: int) -> VAETrainConfig:
        # Reconstruction + small KL only: no pretrained perceptual network exists offline, and an
        # adversarial loss needs far more steps than a demo has to pay off. Adam betas (0.9, 0.99)
        # and a 10x higher peak LR than MAGVIT-v2 (1e-4 for 100k+ steps): here there are ~100s.
        return VAETrainConfig(
            steps=steps, batch_size=cfg.vae_batch_size, lr=cfg.vae_lr, warmup_steps=cfg.vae_warmup_steps,
            betas=(0.9, 0.99), ema_decay=0.99, log_every=1, ckpt_every=every, keep_checkpoints=1, seed=seed,
            precision="bf16" if device.type == "cuda" else "fp32", discriminator=None,
            loss=VAELossConfig(kl_weight=cfg.vae_kl_weight),
        )

    def train_until(total: int, stop_at: int | None) -> int:
        if stop_at is not None and stop_at <= cfg.vae_warmup_steps:
            total = stop_at  # calibration: a short complete run (the schedule is still in warmup)
        stop["at"] = stop_at
        vae.zero_grad(set_to_none=True)
        try:
            return train_vae(tcfg(total), vae, batch_fn, folder, progress=progress).step
        except _StopHere:
            done = _last_step(folder / "log.csv")
        if stop_at is None:  # stopped by the deadline: export the weights as they are
            train_vae(tcfg(done), vae, batch_fn, folder, progress=False)
        return done

    def pace(since: int) -> float:
        rows = [r for r in _read_log(folder / "log.csv") if r["step"] > since]
        return _seconds_per_step(rows, cfg.vae_batch_size, "clips_per_s")

    t0 = time.time()
    steps = train_to_deadline(train_until, pace, deadline, cfg.calibration_steps, cfg.vae_min_steps, "autoencoder")
    rows = _read_log(folder / "log.csv")
    return {"seconds": time.time() - t0, "steps": steps, "params": sum(p.numel() for p in vae.parameters()),
            "clips_per_s": statistics.median([r["clips_per_s"] for r in rows[1:] or rows]),
            "final_train_psnr": statistics.mean(r["psnr"] for r in rows[-5:]) if rows else None}


def _last_step(log_csv: Path) -> int:
    rows = _read_log(log_csv)
    return int(rows[-1]["step"]) if rows else 0


def load_demo_vae(out: Path, device: torch.device):
    from walt.autoencoder import CausalVAE

    # The raw weights: the LR decays to zero, so the last iterate is already smooth, and with a
    # few hundred steps an EMA would still remember the random initialisation.
    return CausalVAE.load(out / "vae" / "vae.safetensors", map_location=device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------- stage 2


def encode_stage(cfg: DemoConfig, out: Path, vae, device: torch.device, seed: int, progress: bool) -> dict[str, Any]:
    from walt.data.latent_cache import encode_dataset

    folder = out / "cache"
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.time()
    info = encode_dataset(vae, train_dataset(cfg, seed), folder, shard_size=256, batch_size=16, device=device,
                          progress=progress, latent_dtype="float32")
    seconds = time.time() - t0
    return {"seconds": seconds, "clips": cfg.train_clips, "clips_per_s": cfg.train_clips / seconds,
            "latent_shape": info.index["latent_shape"]}


# ----------------------------------------------------------------------------- stage 3


def build_walt(cfg: DemoConfig, latent_shape) -> "torch.nn.Module":
    """The denoiser for latents (c, t, h, w): spatial windows = one latent frame, spatiotemporal
    windows = all frames x a quarter of the frame (the paper's 1x16x16 / 5x8x8 on 16x16 latents)."""
    from walt.denoiser import WALT

    c, t, h, w = latent_shape
    return WALT.from_preset(
        "tiny", input_size=(t, h, w), in_channels=c, num_classes=len(cfg.classes), frame_conditioning=True,
        spatial_window=(1, h, w), spatiotemporal_window=(t, max(1, h // 2), max(1, w // 2)), **cfg.walt_kwargs(),
    )


def train_walt_stage(cfg: DemoConfig, out: Path, device: torch.device, seed: int, deadline: float,
                     progress: bool) -> dict[str, Any]:
    from walt.data.latent_cache import LatentDataset
    from walt.diffusion.loss import DiffusionLossConfig
    from walt.train.denoiser import DenoiserTrainConfig, train_denoiser

    folder = out / "walt"
    shutil.rmtree(folder, ignore_errors=True)
    ds = LatentDataset(out / "cache")
    torch.manual_seed(seed)
    net = build_walt(cfg, ds.latent_shape).to(device)
    t_lat = ds.latent_shape[1]
    contexts = tuple(k for k in (1, 2) if k < t_lat) or (1,)
    batch = min(cfg.walt_batch_size, len(ds))

    def segment(steps: int, log_every: int, stop_at: int | None = None):
        # Each call resumes from the previous one's checkpoint (train_denoiser clears stale grads).
        return train_denoiser(tcfg(steps, log_every), net, ds, folder, progress=progress, stop_at=stop_at)

    def tcfg(steps: int, log_every: int) -> DenoiserTrainConfig:
        return DenoiserTrainConfig(
            steps=steps, batch_size=batch, lr=cfg.walt_lr, warmup_steps=cfg.walt_warmup_steps,
            ema_decay=cfg.walt_ema_decay, log_every=log_every, ckpt_every=10**9, keep_checkpoints=1, seed=seed,
            tensorboard=False, loss=DiffusionLossConfig(p_frame_pred=cfg.p_frame_pred, context_frames=contexts),
        )

    def train_until(total: int, stop_at: int | None) -> int:
        # Log every step while the pace is being measured, then every few steps.
        log_every = 1 if total >= 10**7 else max(1, min(10, total // 100))
        return segment(total, log_every, stop_at).step

    def pace(since: int) -> float:
        rows = [r for r in _read_log(folder / "log.csv") if r["step"] > since]
        return _seconds_per_step(rows, batch, "sec_per_step")

    t0 = time.time()
    result_step = train_to_deadline(train_until, pace, deadline, cfg.calibration_steps, cfg.walt_min_steps, "denoiser")
    rows = _read_log(folder / "log.csv")
    tail = rows[len(rows) // 2:] or rows
    return {"seconds": time.time() - t0, "steps": result_step, "params": sum(p.numel() for p in net.parameters()),
            "clips_per_s": statistics.median(r["clips_per_s"] for r in tail),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in tail),
            "final_loss": statistics.mean(r["loss"] for r in rows[-5:]), "batch_size": batch}


# ----------------------------------------------------------------------------- entry point


def run_demo(cfg: DemoConfig, out: str | Path, minutes: float = 15.0, device: str | torch.device = "cpu",
             seed: int = 0, fresh: bool = False, progress: bool = True, preset: str = "custom") -> dict[str, Any]:
    """Run the demo into `out`; returns the summary that report.md is written from.

    Args:
        cfg: what to train and sample (`walt.demo.config.demo_config(name, **overrides)`).
        out: output folder (created); holds stage folders vae/, cache/, walt/ and the results.
        minutes: wall-clock budget for the whole run (stages get fixed fractions of it).
        device: torch device; on CUDA the autoencoder and the denoiser train under bf16 autocast.
        seed: seeds data, initialisation, training and sampling.
        fresh: discard whatever `out` holds instead of reusing finished stages.
    """
    from walt.demo.report import write_outputs

    if not minutes > 0 or not math.isfinite(minutes):
        raise DemoError(f"minutes must be a positive number, got {minutes}")
    out = Path(out)
    device = torch.device(device)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"config": config_to_dict(cfg), "seed": seed}
    settings_path = out / "settings.json"
    if fresh:
        for name in ("vae", "cache", "walt", "stages.json"):
            p = out / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    elif settings_path.is_file():
        old = json.loads(settings_path.read_text())
        diff = sorted(k for k in set(old.get("config", {})) | set(settings["config"])
                      if k not in REUSABLE_CHANGES and old.get("config", {}).get(k) != settings["config"].get(k))
        if diff or old.get("seed") != seed:
            what = ", ".join(diff) if diff else "seed"
            raise DemoError(f"{out} holds a demo run with other settings ({what}); pass --fresh to replace it "
                            "or choose another --out")
    settings_path.write_text(json.dumps(settings, indent=2))
    log = StageLog.load(out / "stages.json")

    t_start = time.time()
    budget = minutes * 60.0
    vae_deadline = t_start + cfg.vae_fraction * budget
    walt_deadline = t_start + (1.0 - cfg.final_fraction) * budget
    _say(f"budget {minutes:g} min on {device} ({torch.get_num_threads()} threads): until ~{_clock(t_start + budget)}; "
         f"output in {out}")

    def announce(i: int, name: str, deadline: float | None) -> bool:
        if log.done(name):
            _say(f"[{i}/4] {STAGE_TITLES[name]}: reused from {out} (finished earlier; --fresh to redo)")
            return False
        log.invalidate_from(name)
        until = f", until ~{_clock(deadline)}" if deadline else ""
        _say(f"[{i}/4] {STAGE_TITLES[name]}{until}")
        return True

    if announce(1, "vae", vae_deadline):
        log.finish("vae", **train_vae_stage(cfg, out, device, seed, vae_deadline, progress))
    vae = load_demo_vae(out, device)
    if announce(2, "cache", None):
        log.finish("cache", **encode_stage(cfg, out, vae, device, seed, progress))
    if announce(3, "walt", walt_deadline):
        log.finish("walt", **train_walt_stage(cfg, out, device, seed, walt_deadline, progress))
    log.invalidate_from("samples")
    _say(f"[4/4] {STAGE_TITLES['samples']}")
    t0 = time.time()
    summary = write_outputs(cfg, out, vae, device, seed, log.stages, machine_info(device), minutes, preset,
                            finish_stage=lambda info: log.finish("samples", seconds=time.time() - t0, **info),
                            run_seconds=lambda: time.time() - t_start)
    _say(f"done in {(time.time() - t_start) / 60:.1f} min: {out / 'report.md'}")
    return summary
