"""The cost side of a row, measured in one sequential pass after every row has trained and been scored.

Rows train two at a time in separate processes, so a pace measured while training is the pace of
a shared machine. Every throughput of the report therefore comes from this pass: one row after
the other, `timing_threads` torch threads, nothing else of the study running. Each number is the
median of `timing_repeats` timed calls after an untimed warm-up, with the fastest and slowest
call as its range; FLOPs are counted (`walt.eval.flops.count_flops`), not estimated.

    autoencoder  encode / decode clips/s of `timing_clips` held-out clips; GFLOP per clip of each
    generation   DDIM (`sample_steps`, the study's guidance, its sampling precision) + decode: generated clips/s
    training     denoiser optimizer steps/s on the row's cache (batch, precision as trained)
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from walt.study.study_config import StudyConfig

__all__ = ["timed", "autoencoder_timing", "generation_timing", "training_timing", "threads"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> dict[str, float]:
    """Seconds of `fn()`: {"median", "min", "max"} of `repeats` calls after one untimed warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def _rate(count: int, seconds: dict[str, float]) -> dict[str, float]:
    """count / seconds as {"value", "lo", "hi"}: median, slowest and fastest call."""
    return {"value": count / seconds["median"], "lo": count / seconds["max"], "hi": count / seconds["min"]}


class threads:
    """Context manager: torch uses `n` threads inside (the timing pass), the previous count after."""

    def __init__(self, n: int):
        self.n, self.old = int(n), torch.get_num_threads()

    def __enter__(self) -> "threads":
        torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc) -> bool:
        torch.set_num_threads(self.old)
        return False


@torch.no_grad()
def autoencoder_timing(vae, clips: torch.Tensor, cfg: StudyConfig, device: torch.device) -> dict[str, Any]:
    """Encode / decode clips/s of `clips` (N, 3, T, H, W) and GFLOP per clip of the encoder and the decoder."""
    from walt.eval.flops import count_flops

    x = clips[:cfg.timing_clips].to(device)
    z = vae.encode(x)
    enc = timed(lambda: vae.encode(x), device, cfg.timing_repeats)
    dec = timed(lambda: vae.decode(z), device, cfg.timing_repeats)
    return {"encode_clips_per_s": _rate(len(x), enc), "decode_clips_per_s": _rate(len(x), dec),
            "encoder_gflop_per_clip": count_flops(lambda: vae.encode(x[:1])) / 1e9,
            "decoder_gflop_per_clip": count_flops(lambda: vae.decode(z[:1])) / 1e9, "clips": len(x)}


@torch.no_grad()
def generation_timing(weights: Path, vae, cfg: StudyConfig, num_classes: int, device: torch.device) -> dict[str, Any]:
    """Generated clips/s: DDIM sampling of `timing_clips` class-conditional clips + decoding them."""
    from walt.cascade.stage import Stage
    from walt.pipeline import generate
    from walt.study.stages import sampling_precision

    stage = Stage.load(weights).to(device)
    net, n = stage.net, cfg.timing_clips
    shape = (n, net.config.in_channels, *net.config.input_size)
    y = (torch.arange(n) % num_classes).to(device)

    autocast, precision = sampling_precision(cfg, device)

    def run() -> torch.Tensor:
        with autocast:
            z = generate(net, stage.schedule, shape, sampler="ddim", steps=cfg.sample_steps, y=y,
                         guidance_scale=cfg.guidance_scale, seeds=list(range(n)), latent_stats=stage.latent_stats)
        return vae.decode(z.float().to(device))

    return {"gen_clips_per_s": _rate(n, timed(run, device, cfg.timing_repeats)), "clips": n,
            "sample_steps": cfg.sample_steps, "guidance_scale": cfg.guidance_scale, "sampling_precision": precision}


def training_timing(cfg: StudyConfig, recipe, cache: Path, device: torch.device, steps: int = 12) -> dict[str, Any]:
    """Denoiser optimizer steps/s on `cache`: `steps` steps of a fresh network (the row's recipe,
    batch and precision) in a scratch folder; the first two pay one-time costs and are dropped."""
    from walt.experiment.budget import read_log
    from walt.study.stages import build_walt, latent_dataset, walt_train_config
    from walt.train.denoiser_loop import train_denoiser

    ds = latent_dataset(cache, recipe.normalize)
    batch = min(cfg.walt_batch_size, len(ds))
    net = build_walt(cfg, ds.latent_shape, ds.num_classes, cfg.seed, **recipe.build_kwargs()).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        train_denoiser(walt_train_config(cfg, recipe, batch)(steps, 1), net, ds, tmp, progress=False)
        per = [r["sec_per_step"] for r in read_log(Path(tmp) / "log.csv")[2:]]
    sec = {"median": statistics.median(per), "min": min(per), "max": max(per)}
    return {"train_steps_per_s": _rate(1, sec), "batch_size": batch, "timed_steps": len(per)}
