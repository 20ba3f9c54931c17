"""WALTConfig: the frozen config of the window-attention denoiser, and its presets (the cascade's too).

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
    mlp_gelu: Literal["tanh", "erf"] = "tanh"  # DiT's tanh-approximate GELU, or the exact one (faster on CPU)
    attention: Literal["window", "full"] = "window"
    spatial_window: tuple[int, int, int] = (1, 16, 16)  # in patches; clamped to the latent at run time
    spatiotemporal_window: tuple[int, int, int] = (5, 8, 8)
    rel_pos_bias: bool = True  # Swin-style relative bias; False lets SDPA use flash kernels on GPU
    qk_norm: Literal["layernorm", "rmsnorm", "none"] = "layernorm"
    adaln_lora_rank: int = 2  # r; 0 = a separate AdaLN MLP per layer
    num_classes: int = 0  # 0 = unconditional; label `num_classes` is the null class
    class_tokens: int = 0  # > 0: the label also enters as K learned tokens every attention reads (besides AdaLN)
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
        for key in ("adaln_lora_rank", "num_classes", "class_tokens", "text_dim", "lowres_channels"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{name}.{key} must be >= 0, got {getattr(self, key)}")
        if self.class_tokens and not self.num_classes:
            raise ConfigError(f"{name}.class_tokens={self.class_tokens} needs a class-conditional network (num_classes > 0)")
        if self.mlp_gelu not in ("tanh", "erf"):
            raise ConfigError(f"{name}.mlp_gelu must be 'tanh' or 'erf', got {self.mlp_gelu!r}")
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


# --- presets: plain functions in a dict (DiT's `DiT_models`) ----------------------------------


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


def _large() -> WALTConfig:
    """W.A.L.T-L, UCF-101 class-conditional (17x128x128 -> 5x16x16x8 latents), ~313M params."""
    return WALTConfig(depth=24, hidden_size=1024, num_heads=16, num_classes=101)


def _xlarge() -> WALTConfig:
    """W.A.L.T-XL, UCF-101 class-conditional, ~460M params."""
    return WALTConfig(depth=28, hidden_size=1152, num_heads=16, num_classes=101)


def _large_k600() -> WALTConfig:
    """W.A.L.T-L for Kinetics-600 frame prediction: unconditional, with frame conditioning."""
    return WALTConfig(depth=24, hidden_size=1024, num_heads=16, num_classes=0, frame_conditioning=True)


# The text-to-video cascade (W.A.L.T §4 / §5.4, SPEC §4): a base model at 17x128x128 (3B; later
# fine-tuned to 128x224), SR-1 2x to 256x448 and SR-2 2x to 512x896. With f_s = 8 and c = 8 every
# stage after the base sees the same 5x16x28 token grid: the patch size grows with the resolution.
# Where the paper is silent (the reasoning and the counts: docs/notes/cascade_presets.md): T5-XL
# text features (2048-d); cross-attention in every SR layer, which lands on the paper's 1.30B /
# 419M; base 32 x 2560 x 20 (3.01B); windows 1x16x28 / 5x8x7 on the 9:16 grid; every stage
# frame-conditioned (image-to-video, long videos). The `-tiny` twins keep the latent sizes, patch
# sizes and windows at width 64, with the tiny autoencoder's c = 4 and MiniLM's 384-d text.
T5_XL_DIM = 2048  # T5-XL (v1.1) encoder width: the paper's text encoder
MINILM_DIM = 384  # all-MiniLM-L6-v2 token states: the offline CPU text encoder of the tiny twins
_T2V = dict(num_classes=0, frame_conditioning=True, self_conditioning=True)
_WIDE_WINDOWS = dict(spatial_window=(1, 16, 28), spatiotemporal_window=(5, 8, 7))  # 5x16x28 grid
_TINY = dict(hidden_size=64, depth=4, num_heads=4, in_channels=4, text_dim=MINILM_DIM)


def _t2v_base() -> WALTConfig:
    """Text-to-video base, 17x128x128 -> latent (5, 16, 16); 32 x 2560 x 20 heads, 3.01B params."""
    return WALTConfig(input_size=(5, 16, 16), depth=32, hidden_size=2560, num_heads=20,
                      text_dim=T5_XL_DIM, cross_attention="spatial", **_T2V)


def _t2v_base_9x16() -> WALTConfig:
    """The base fine-tuned to 128x224 (9:16) -> latent (5, 16, 28): feeds SR-1."""
    return WALTConfig(input_size=(5, 16, 28), depth=32, hidden_size=2560, num_heads=20,
                      text_dim=T5_XL_DIM, cross_attention="spatial", **_WIDE_WINDOWS, **_T2V)


def _sr1() -> WALTConfig:
    """SR-1: 2x to 256x448 -> latent (5, 32, 56), p = 2; 40 x 1408 x 16, cross-attn in every layer, 1.30B."""
    return WALTConfig(input_size=(5, 32, 56), patch_size=2, depth=40, hidden_size=1408, num_heads=16,
                      text_dim=T5_XL_DIM, cross_attention="all", lowres_channels=8, **_WIDE_WINDOWS, **_T2V)


def _sr2() -> WALTConfig:
    """SR-2: 2x to 512x896 -> latent (5, 64, 112), p = 4; 24 x 1024 x 16, cross-attn in every layer, 419M."""
    return WALTConfig(input_size=(5, 64, 112), patch_size=4, depth=24, hidden_size=1024, num_heads=16,
                      text_dim=T5_XL_DIM, cross_attention="all", lowres_channels=8, **_WIDE_WINDOWS, **_T2V)


def _t2v_base_tiny() -> WALTConfig:
    """CPU twin of t2v-base: 128x128 pixels -> latent (5, 16, 16) with the tiny autoencoder (c = 4)."""
    return WALTConfig(input_size=(5, 16, 16), spatial_window=(1, 16, 16), spatiotemporal_window=(5, 8, 8),
                      cross_attention="spatial", **_TINY, **_T2V)


def _t2v_base_9x16_tiny() -> WALTConfig:
    """CPU twin of t2v-base-9x16: 128x224 pixels -> latent (5, 16, 28); feeds sr1-tiny."""
    return WALTConfig(input_size=(5, 16, 28), cross_attention="spatial", **_WIDE_WINDOWS, **_TINY, **_T2V)


def _sr1_tiny() -> WALTConfig:
    """CPU twin of sr1: 256x448 pixels -> latent (5, 32, 56), p = 2 (token grid 5x16x28)."""
    return WALTConfig(input_size=(5, 32, 56), patch_size=2, cross_attention="all", lowres_channels=4,
                      **_WIDE_WINDOWS, **_TINY, **_T2V)


def _sr2_tiny() -> WALTConfig:
    """CPU twin of sr2: 512x896 pixels -> latent (5, 64, 112), p = 4 (token grid 5x16x28)."""
    return WALTConfig(input_size=(5, 64, 112), patch_size=4, cross_attention="all", lowres_channels=4,
                      **_WIDE_WINDOWS, **_TINY, **_T2V)


PRESETS: dict[str, Callable[[], WALTConfig]] = {
    "tiny": _tiny, "L": _large, "XL": _xlarge, "L-k600": _large_k600,
    "t2v-base": _t2v_base, "t2v-base-9x16": _t2v_base_9x16, "sr1": _sr1, "sr2": _sr2,
    "t2v-base-tiny": _t2v_base_tiny, "t2v-base-9x16-tiny": _t2v_base_9x16_tiny,
    "sr1-tiny": _sr1_tiny, "sr2-tiny": _sr2_tiny,
}

# Paper parameter counts (W.A.L.T §5.4 / SPEC §4) of the cascade presets that state one.
PAPER_PARAMS: dict[str, float] = {"t2v-base": 3.0e9, "sr1": 1.3e9, "sr2": 419e6}


@dataclass(frozen=True)
class StageInfo:
    """What a cascade preset is for: its pixel resolution and SR factor (1 for a base model)."""

    resolution: tuple[int, int]  # (H, W) pixels at f_s = 8
    scale: int  # spatial upsampling factor from the previous stage (1 = base)


CASCADE_STAGES: dict[str, StageInfo] = {
    "t2v-base": StageInfo((128, 128), 1),
    "t2v-base-9x16": StageInfo((128, 224), 1),
    "sr1": StageInfo((256, 448), 2),
    "sr2": StageInfo((512, 896), 2),
    "t2v-base-tiny": StageInfo((128, 128), 1),
    "t2v-base-9x16-tiny": StageInfo((128, 224), 1),
    "sr1-tiny": StageInfo((256, 448), 2),
    "sr2-tiny": StageInfo((512, 896), 2),
}

PresetRegistry = dict  # deprecated: PRESETS is a plain dict now


def register_preset(name: str):
    """Decorator: `@register_preset("name")` on a function returning a `WALTConfig` adds it to PRESETS."""

    def deco(fn: Callable[[], WALTConfig]) -> Callable[[], WALTConfig]:
        PRESETS[name] = fn
        return fn

    return deco


def get_preset(name: str) -> WALTConfig:
    """The config of preset `name` (ValueError listing the known presets if there is none)."""
    if name not in PRESETS:
        raise ValueError(f"unknown WALT preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
