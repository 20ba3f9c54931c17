"""A trained W.A.L.T ready to sample: one stage of the cascade, or a model on its own.

    stage = Stage.load("runs/walt/walt_ema.safetensors")   # or a training state: its EMA weights
    z = generate(stage.net, stage.schedule, shape, latent_stats=stage.latent_stats, ...)

`Stage.load` / `Stage.from_state` is the one place a checkpoint becomes what sampling needs:
the network (eval mode, frozen), its diffusion schedule, the statistics that normalised its
latents (SPEC §1) and, for a super-resolution stage (SPEC §4), the statistics of its low-res
conditioning and its `SRConfig`. Both files a run writes are read: the exported weights
(`WALT.save` format) and a training state (`checkpoints/step_*.safetensors`), whose EMA weights
are taken, so a run can be sampled before it finishes. Everything else the checkpoint holds
(fps, class names, text encoder, the autoencoder's hash) stays in `info` for the caller's checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from walt.autoencoder.latent_stats import LatentStats
from walt.cascade.sr import SRConfig
from walt.checkpoint import TRAINING_STATE_KIND, load_checkpoint
from walt.config import config_from_dict
from walt.denoiser.transformer import CHECKPOINT_KIND, WALT
from walt.diffusion.schedule import DiffusionConfig, DiffusionSchedule

__all__ = ["Stage", "CascadeStage"]

_WEIGHTS = ("model", "ema", "optimizer", "rng")  # entries that are not `info`


@dataclass
class Stage:
    """A network with what sampling it needs: schedule, latent statistics, SR conditioning.

    net: `WALT` (an SR stage has config.lowres_channels > 0); schedule: its `DiffusionSchedule`;
    latent_stats: normalisation of its own latents; lowres_stats: normalisation of its low-res
    conditioning as in training (SR only); sr: `SRConfig` (SR only); name: for messages;
    info: the checkpoint's other entries.
    """

    net: nn.Module
    schedule: DiffusionSchedule = field(default_factory=DiffusionSchedule)
    latent_stats: LatentStats | None = None
    lowres_stats: LatentStats | None = None
    sr: SRConfig | None = None
    name: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.is_sr and self.sr is None:
            self.sr = SRConfig()

    @property
    def is_sr(self) -> bool:
        return self.net.config.lowres_channels > 0

    @property
    def vae_sha256(self) -> str | None:
        """Weights hash of the autoencoder whose latents the stage was trained on (None: not recorded)."""
        return self.info.get("vae_sha256") or (self.info.get("cache") or {}).get("vae_sha256")

    def to(self, device: str | torch.device) -> "Stage":
        self.net.to(device)
        return self

    @classmethod
    def from_state(cls, state: dict[str, Any], name: str = "") -> "Stage":
        """From a `load_checkpoint` dict: exported weights or a training state (EMA weights)."""
        if state.get("kind") == TRAINING_STATE_KIND:
            if "walt_config" not in state:
                raise ValueError("this training state is not a WALT run (no walt_config); pass a WALT checkpoint")
            state = {**state, "kind": CHECKPOINT_KIND, "config": state["walt_config"], "model": state["ema"]["shadow"]}
        net = WALT.from_checkpoint_state(state).eval().requires_grad_(False)
        diff = state.get("diffusion_config")
        schedule = DiffusionSchedule(config_from_dict(DiffusionConfig, diff) if isinstance(diff, dict) else None)
        stats = {k: LatentStats.from_dict(state[k]) if isinstance(state.get(k), dict) else None
                 for k in ("latent_stats", "lowres_latent_stats")}
        sr = config_from_dict(SRConfig, state["sr_config"]) if isinstance(state.get("sr_config"), dict) else None
        info = {k: v for k, v in state.items() if k not in _WEIGHTS}
        return cls(net, schedule, stats["latent_stats"], stats["lowres_latent_stats"], sr, name, info)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu", name: str | None = None) -> "Stage":
        """`from_state` of the checkpoint at `path`; the name defaults to the run folder's (or the file's)."""
        path = Path(path)
        if name is None:
            name = path.parent.name if path.name.startswith("walt") else path.stem
        return cls.from_state(load_checkpoint(path, map_location=map_location), name=name)


CascadeStage = Stage  # deprecated name
