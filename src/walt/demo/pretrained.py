"""The demo's committed autoencoder: made once by the project's own command, used when it fits.

    walt demo --make-autoencoder src/walt/demo/assets/autoencoder_cpu.safetensors --minutes 60

trains stage 1 of the CPU preset for the whole budget and writes its weights, with the settings
it was trained for (`DEMO_AUTOENCODER_KEYS`) and how long it trained. A default `walt demo` then
skips stage 1 and gives its minutes to the denoiser, but only if the run's settings match those
exactly (otherwise it trains its own autoencoder and the report says why); `walt demo
--from-scratch` always trains every stage. The asset's sha256 is in docs/demo/NOTES.md.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from walt.demo.demo_config import DemoConfig

__all__ = ["ASSET", "DEMO_AUTOENCODER_KEYS", "pretrained_for", "install_pretrained", "make_autoencoder", "sha256"]

ASSET = Path(__file__).resolve().parent / "assets" / "autoencoder_cpu.safetensors"
# What an autoencoder's weights depend on: its architecture and loss, and the clips it learnt from.
DEMO_AUTOENCODER_KEYS = (
    "vae_overrides", "vae_train_frames", "vae_batch_size", "vae_lr", "vae_warmup_steps", "vae_kl_weight",
    "vae_decoder_noise", "vae_recon_type", "resolution", "classes", "backgrounds", "textures", "shapes",
    "shape_scale", "speed_scale",
)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _settings(cfg: DemoConfig) -> dict[str, Any]:
    import json

    from walt.config import config_to_dict

    full = config_to_dict(cfg)
    return json.loads(json.dumps({k: full[k] for k in DEMO_AUTOENCODER_KEYS}))  # as it reads back from JSON


def pretrained_for(cfg: DemoConfig, seed: int, path: Path = ASSET) -> tuple[Path | None, str]:
    """(the asset, "") when it was made for `cfg` and `seed`, else (None, why not)."""
    from walt.checkpoint import CheckpointError, load_checkpoint

    if not path.is_file():
        return None, f"no pretrained autoencoder at {path}"
    try:
        made = load_checkpoint(path).get("demo_autoencoder") or {}
    except CheckpointError as e:
        return None, f"the pretrained autoencoder cannot be read: {e}"
    want = _settings(cfg)
    differ = [k for k in DEMO_AUTOENCODER_KEYS if made.get("settings", {}).get(k) != want[k]]
    if made.get("seed") != seed:
        differ.append("seed")
    if differ:
        return None, f"the pretrained autoencoder was made for other settings ({', '.join(differ)})"
    return path, ""


def install_pretrained(path: Path, out: Path) -> dict[str, Any]:
    """Copy the asset to out/vae/vae.safetensors -> the stage record of a pretrained stage 1."""
    from walt.checkpoint import load_checkpoint

    folder = out / "vae"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copyfile(path, folder / "vae.safetensors")
    made = load_checkpoint(path)["demo_autoencoder"]
    params = sum(v.numel() for v in load_checkpoint(path)["model"].values())
    return {"pretrained": True, "path": str(path), "sha256": sha256(path), "seconds": 0.0, "steps": made["steps"],
            "trained_seconds": made["seconds"], "params": params, "clips_per_s": made.get("clips_per_s"),
            "final_train_psnr": made.get("final_train_psnr"), "loss": made.get("loss"), "machine": made.get("machine")}


def make_autoencoder(cfg: DemoConfig, path: str | Path, minutes: float, device: torch.device, seed: int = 0,
                     progress: bool = True) -> dict[str, Any]:
    """Train the demo's autoencoder for `minutes` and write it to `path` with what it was made for."""
    from walt.demo.train_stages import autoencoder_stage, load_demo_vae
    from walt.experiment.machine import machine

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="walt-demo-vae-") as tmp:
        t0 = time.time()
        info = autoencoder_stage(cfg, Path(tmp), device, seed, t0 + minutes * 60.0, progress)
        vae = load_demo_vae(Path(tmp), device).cpu()
        made = {"settings": _settings(cfg), "seed": seed, "minutes": minutes, "machine": machine(),
                **{k: info.get(k) for k in ("steps", "seconds", "clips_per_s", "final_train_psnr", "loss")},
                "command": f"walt demo --make-autoencoder {path} --minutes {minutes:g}"}
        path.parent.mkdir(parents=True, exist_ok=True)
        vae.save(path, demo_autoencoder=made)
    return {**made, "path": str(path), "sha256": sha256(path), "bytes": path.stat().st_size}
