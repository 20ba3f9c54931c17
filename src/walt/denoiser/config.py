"""WALTConfig: the frozen config of the window-attention denoiser, and its presets.

Paper sizes (W.A.L.T, arXiv 2312.06662, Table/§4 and SPEC §2), all with latent c = 8, patch p = 1
and AdaLN-LoRA rank r = 2:

    L   24 layers, width 1024, 16 heads   313M parameters   (separate per-layer AdaLN: 458-460M)
    XL  28 layers, width 1152, 16 heads   460M parameters

Project choices (the paper is silent; kept configurable):
  * `L` / `XL` default to the UCF-101 class-conditional setting: `num_classes=101`,
    self-conditioning on (the paper trains with p_sc = 0.9), frame conditioning off (the paper uses
    it only for the Kinetics-600 frame-prediction model: see the `L-k600` preset).
  * Blocks alternate spatial / spatiotemporal windows starting with a spatial one.
  * `attention="full"` (the paper's full-attention baseline of the window ablation) attends over
    all tokens of a sample in every layer; images still pass through the spatiotemporal-kind layers
    unchanged, so "full" is exactly "window" with windows covering the whole latent.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Callable, Literal

from walt.config import ConfigError


@dataclass(frozen=True)
class WALTConfig:
    """Hyper-parameters of `walt.denoiser.WALT` (SPEC §2)."""

    input_size: tuple[int, int, int] = (5, 16, 16)  # latent (T_max, H, W); T may be 1..T_max at run time
    in_channels: int = 8  # latent channels c (output channels too: v-prediction, no learned sigma)
    patch_size: int = 1  # p: per-frame p x p patches, no temporal patching
    hidden_size: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    attention: Literal["window", "full"] = "window"
    spatial_window: tuple[int, int, int] = (1, 16, 16)  # in patches; clamped to the latent at run time
    spatiotemporal_window: tuple[int, int, int] = (5, 8, 8)
    rel_pos_bias: bool = True  # Swin-style relative bias; False lets SDPA use flash kernels on GPU
    qk_norm: Literal["layernorm", "rmsnorm", "none"] = "layernorm"
    adaln_lora_rank: int = 2  # r; 0 = a separate AdaLN MLP per layer
    num_classes: int = 0  # 0 = unconditional; label `num_classes` is the null class
    self_conditioning: bool = True  # input gets concat(x, x0_prev) on channels
    frame_conditioning: bool = False  # input gets concat(mask * cond_frames, mask) on channels
    text_dim: int = 0  # > 0 enables text cross-attention on (B, L, text_dim) token features
    cross_attention: Literal["spatial", "all", "none"] = "spatial"  # which layers, when text_dim > 0
    lowres_channels: int = 0  # > 0: super-resolution conditioning (low-res latent + noise level)
    frequency_embedding_size: int = 256  # sinusoidal timestep features before the MLP (DiT)

    def __post_init__(self) -> None:
        name = type(self).__name__
        if len(self.input_size) != 3 or min(self.input_size) < 1:
            raise ConfigError(f"{name}.input_size must be 3 positive ints (T, H, W), got {self.input_size}")
        for key in ("in_channels", "patch_size", "hidden_size", "depth", "num_heads", "frequency_embedding_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{name}.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("adaln_lora_rank", "num_classes", "text_dim", "lowres_channels"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{name}.{key} must be >= 0, got {getattr(self, key)}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"{name}.hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                "pick a width that is a multiple of the head count"
            )
        _, h, w = self.input_size
        if h % self.patch_size or w % self.patch_size:
            raise ConfigError(
                f"{name}: latent size {h}x{w} is not divisible by patch_size={self.patch_size}"
            )
        for key in ("spatial_window", "spatiotemporal_window"):
            win = getattr(self, key)
            if len(win) != 3 or min(win) < 1:
                raise ConfigError(f"{name}.{key} must be 3 positive ints (Wt, Wh, Ww), got {win}")
        if self.spatial_window[0] != 1:
            raise ConfigError(
                f"{name}.spatial_window must span one frame (1, Wh, Ww), got {self.spatial_window}"
            )
        if self.attention == "window":
            # Run-time T may be shorter than T_max and is checked again in the forward pass.
            from walt.denoiser.attention import resolve_window

            for key in ("spatial_window", "spatiotemporal_window"):
                try:
                    resolve_window(getattr(self, key), self.token_grid)
                except ValueError as e:
                    raise ConfigError(f"{name}.{key}: {e}") from None

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """(T_max, H/p, W/p): the largest token grid the network accepts."""
        t, h, w = self.input_size
        return t, h // self.patch_size, w // self.patch_size

    @property
    def input_channels(self) -> int:
        """Channels of the network's input after the conditioning concatenations."""
        c = self.in_channels
        c += self.in_channels if self.self_conditioning else 0
        c += self.in_channels + 1 if self.frame_conditioning else 0
        return c + self.lowres_channels


# --- presets: functions in a registry dict --------------------------------------------------

# Modules that register more presets when imported: the text-to-video cascade ("t2v-base",
# "t2v-base-9x16", "sr1", "sr2" and their "-tiny" twins). They are imported on the first lookup of
# the registry, not when this module is imported: `import walt.denoiser` then loads no other walt
# package, and those modules may import this one freely (no import cycle).
PRESET_MODULES: tuple[str, ...] = ("walt.cascade.presets",)


class PresetRegistry(MutableMapping):
    """name -> function returning a `WALTConfig`; `PRESET_MODULES` are imported on first read.

    Looking up a name not registered yet (`reg[name]`, `name in reg`), iterating and `len` import
    the modules once; registering (`register_preset`, `reg[name] = fn`) does not, so a preset
    module that registers itself while it is being imported never recurses.
    """

    def __init__(self, modules: tuple[str, ...] = ()):
        self._presets: dict[str, Callable[[], WALTConfig]] = {}
        self._modules = modules
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # first: the modules read the registry while they are imported
        try:
            for module in self._modules:
                importlib.import_module(module)
        except BaseException:
            self._loaded = False
            raise

    def __getitem__(self, name: str) -> Callable[[], WALTConfig]:
        if name not in self._presets:  # the built-in presets need no import
            self._load()
        return self._presets[name]

    def __setitem__(self, name: str, fn: Callable[[], WALTConfig]) -> None:
        self._presets[name] = fn

    def __delitem__(self, name: str) -> None:
        del self._presets[name]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._presets))

    def __len__(self) -> int:
        self._load()
        return len(self._presets)

    def __repr__(self) -> str:
        return f"PresetRegistry({sorted(self)})"


PRESETS = PresetRegistry(PRESET_MODULES)


def register_preset(name: str):
    """Decorator: `@register_preset("name")` on a function returning a `WALTConfig`."""

    def deco(fn: Callable[[], WALTConfig]) -> Callable[[], WALTConfig]:
        PRESETS[name] = fn
        return fn

    return deco


def get_preset(name: str) -> WALTConfig:
    """The config of preset `name` (ValueError listing the known presets if there is none)."""
    if name not in PRESETS:
        raise ValueError(f"unknown WALT preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


@register_preset("tiny")
def _tiny() -> WALTConfig:
    """CPU tests and demos: 4 layers, width 64, 4 heads, latent 5x8x8x4."""
    return WALTConfig(
        input_size=(5, 8, 8),
        in_channels=4,
        hidden_size=64,
        depth=4,
        num_heads=4,
        spatial_window=(1, 8, 8),
        spatiotemporal_window=(5, 4, 4),
        num_classes=10,
    )


@register_preset("L")
def _large() -> WALTConfig:
    """W.A.L.T-L, UCF-101 class-conditional (17x128x128 -> 5x16x16x8 latents), ~313M params."""
    return WALTConfig(depth=24, hidden_size=1024, num_heads=16, num_classes=101)


@register_preset("XL")
def _xlarge() -> WALTConfig:
    """W.A.L.T-XL, UCF-101 class-conditional, ~460M params."""
    return WALTConfig(depth=28, hidden_size=1152, num_heads=16, num_classes=101)


@register_preset("L-k600")
def _large_k600() -> WALTConfig:
    """W.A.L.T-L for Kinetics-600 frame prediction: unconditional, with frame conditioning."""
    return WALTConfig(depth=24, hidden_size=1024, num_heads=16, num_classes=0, frame_conditioning=True)

