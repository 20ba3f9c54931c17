"""The workload sizes of the cascade benchmark (`walt.bench.cascade_speed`): plain functions in a dict.

`smoke` runs the -tiny twins (seconds; tests only), `cpu` the paper's stages with 1 warm-up + 2
timed steps each and 2 of the 5 latent frames decoded, `full` 2 + 5 steps and the whole decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from walt.cascade.tiling import AUTO_TILE

__all__ = ["CascadeSize", "SIZES"]


@dataclass(frozen=True)
class CascadeSize:
    """What one cascade benchmark run measures (written into cascade.json)."""

    name: str
    description: str
    stages: tuple[str, ...] = ("t2v-base-9x16", "sr1", "sr2")
    vae: str = "ucf101"
    warmup: int = 1  # untimed (FLOP-counted) sampler steps per stage
    steps: int = 2  # timed sampler steps per stage (median -> s/step)
    text_tokens: int = 77  # T5's usual caption length
    guidance: float = 1.0  # != 1: classifier-free guidance (doubles the batch per step)
    dtype: str = "auto"  # auto: bf16 if its matmuls are faster on this device, else fp32 (fastest_dtype)
    decode: bool = True
    decode_latent_frames: int | None = None  # None: the last stage's latent frames (5 -> 17 frames)
    tile: int | None = AUTO_TILE  # latent pixels per spatial tile (64x112 -> 2 tiles of 64x64); None: whole frames
    overlap: int = 8
    pad: int = 2
    decode_latent_hw: tuple[int, int] | None = None  # None: the last stage's latent (h, w); smoke tests only
    isolated: bool = True  # CPU: a fresh process per stage / decode
    peak_n: int = 2048  # matrix size of the matmul-peak measurement (8192 on a GPU)

    def __post_init__(self) -> None:
        if self.warmup < 1 or self.steps < 1:
            raise ValueError(f"warmup and steps must be >= 1 (got {self.warmup}, {self.steps}): the first step is the warm-up")
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise ValueError(f"dtype must be 'auto', 'bf16' or 'fp32', got {self.dtype!r}")
        if self.decode_latent_frames is not None and self.decode_latent_frames < 2:
            raise ValueError(f"decode_latent_frames must be >= 2 (the first chunk decodes 1 frame, the streamed "
                             f"peak needs a full chunk), got {self.decode_latent_frames}")
        if self.text_tokens < 1:
            raise ValueError(f"text_tokens must be >= 1, got {self.text_tokens}")


def _smoke() -> CascadeSize:
    return CascadeSize("smoke", "the -tiny twins and the tiny autoencoder (code path only; numbers mean nothing)",
                       stages=("t2v-base-9x16-tiny", "sr1-tiny", "sr2-tiny"), vae="tiny", steps=1,
                       text_tokens=4, decode_latent_frames=2, decode_latent_hw=(16, 28), tile=16, overlap=6,
                       isolated=False, peak_n=256)


def _cpu() -> CascadeSize:
    return CascadeSize("cpu", "paper stages (t2v-base-9x16, sr1, sr2) with 1 warm-up + 2 timed DDIM steps each "
                              "(50 steps extrapolated); the streamed + tiled 512x896 decode of 2 of the 5 latent "
                              "frames (5 of 17 frames; the 17-frame time and peak extrapolated)",
                       decode_latent_frames=2)


def _full() -> CascadeSize:
    return CascadeSize("full", "paper stages (t2v-base, t2v-base-9x16, sr1, sr2) with 2 warm-up + 5 timed DDIM "
                               "steps each (50 steps extrapolated), and the full 17x512x896 streamed + tiled decode",
                       stages=("t2v-base", "t2v-base-9x16", "sr1", "sr2"), warmup=2, steps=5, peak_n=8192)


SIZES: dict[str, Callable[[], CascadeSize]] = {"smoke": _smoke, "cpu": _cpu, "full": _full}
