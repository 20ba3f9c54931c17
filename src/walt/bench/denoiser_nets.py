"""The networks the denoiser benchmark compares, built at matched sizes.

* W.A.L.T with window attention (the L preset's choices at the requested width / depth / heads:
  AdaLN-LoRA r = 2, qk-norm, relative position bias, self-conditioning input), class-conditional
  or text-conditioned (cross-attention in the spatial layers);
* its `attention="full"` twin: the same config except `attention`, the same weights (every tensor
  whose shape matches is copied; only the relative-position tables, sized by the window, differ);
* diffusers' `LatteTransformer3DModel` at the same width, depth, heads and token count.

Layouts (latent T x H x W, patch p = 1, so tokens = T*H*W per clip):
  paper  5x16x16 (17x128x128 video), spatial window 1x16x16 (a whole frame), spatiotemporal 5x8x8
  sr     5x32x56 (an SR-like 2x layout), spatial window 1x32x56 (a whole frame, as the paper's SR
         stages use), spatiotemporal 5x8x8 (the paper's default; 8 divides 32 and 56)
  tiny   5x8x8, windows 1x8x8 / 5x4x4 (smoke tests only)

Matching Latte (diffusers 0.42): Latte's `num_layers` counts (spatial, temporal) block PAIRS,
i.e. 2 * num_layers transformer blocks, so num_layers = depth / 2 matches W.A.L.T's `depth`
alternating blocks. attention_head_dim = width / heads, cross_attention_dim = width,
activation "gelu-approximate" (W.A.L.T's 4x GELU(tanh) MLP; Latte's default GEGLU would be ~1.5x
the MLP FLOPs), attention_bias=True (W.A.L.T's qkv have biases), norm_type "ada_norm_single",
video_length = T, sample_size = H (a non-square H x W gets Latte's on-the-fly sin-cos table).
Latte cannot run without a caption (its spatial blocks cross-attend), so it always gets random
caption tokens (`text_tokens` x `text_dim`). W.A.L.T is measured twice: text-conditioned, on the
same caption, with cross-attention in its spatial layers (`cross_attention="spatial"`, the paper's
joint image/video setting), no class labels; and class-conditional (the paper's UCF-101 model, no
text path). Architectural differences that remain (and are the point):
W.A.L.T's spatiotemporal layers attend over 5x8x8 = 320-token windows where Latte's temporal
layers attend over T = 5 tokens; W.A.L.T's cross-attention keys are window + text tokens,
Latte's are text tokens only; W.A.L.T has qk-norm, relative position bias and AdaLN-LoRA; Latte
has PixArt's per-block scale-shift tables.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

# Latent layouts: (T, H, W) latents and the two window kinds, in tokens (p = 1).
LAYOUTS: dict[str, dict[str, tuple[int, int, int]]] = {
    "paper": {"input_size": (5, 16, 16), "spatial_window": (1, 16, 16), "spatiotemporal_window": (5, 8, 8)},
    "sr": {"input_size": (5, 32, 56), "spatial_window": (1, 32, 56), "spatiotemporal_window": (5, 8, 8)},
    "tiny": {"input_size": (5, 8, 8), "spatial_window": (1, 8, 8), "spatiotemporal_window": (5, 4, 4)},
}


@dataclass(frozen=True)
class BenchSettings:
    """Everything one benchmark run depends on (written into the JSON)."""

    device: str = "cpu"
    dtype: str = "bf16"  # "bf16": bf16 autocast with fp32 weights; "fp32": plain fp32
    width: int = 256
    depth: int = 4
    heads: int = 4
    batch: int = 1  # clips per step at the paper / tiny layouts
    sr_batch: int = 1  # clips per step at the sr layout
    layouts: tuple[str, ...] = ("paper", "sr")
    steps: int = 3  # timed training steps (median of these)
    repeats: int = 3  # timed forward passes (median)
    sample_steps: int = 5  # DDIM steps per clip
    text_tokens: int = 16
    text_dim: int = 384  # caption feature size (all-MiniLM-L6-v2's 384 in this project)
    rel_pos_bias: bool = True  # False: no relative bias (flash-eligible SDPA on GPU)
    self_cond: bool = False  # add the self-conditioning no-grad pass to every training step
    latte: bool = True
    train: bool = True
    peak_n: int = 2048  # matrix size of the matmul-peak measurement

    def __post_init__(self) -> None:
        if self.dtype not in ("bf16", "fp32"):
            raise ValueError(f"dtype must be 'bf16' or 'fp32', got {self.dtype!r}")
        unknown = [l for l in self.layouts if l not in LAYOUTS]
        if unknown:
            raise ValueError(f"unknown layout(s) {unknown}; choose from {sorted(LAYOUTS)}")
        if self.width % self.heads:
            raise ValueError(f"--width {self.width} is not divisible by --heads {self.heads}")
        if self.latte and self.depth % 2:
            raise ValueError(f"--depth {self.depth} must be even to match Latte's (spatial, temporal) pairs")
        for key in ("width", "depth", "heads", "batch", "sr_batch", "steps", "repeats", "sample_steps", "text_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(self, key)}")

    def batch_for(self, layout: str) -> int:
        return self.sr_batch if layout == "sr" else self.batch


def default_settings(device: str) -> dict[str, Any]:
    """Paper L size on GPU; a reduced size that finishes in minutes on a 2-core CPU."""
    if device.startswith("cuda"):
        return dict(width=1024, depth=24, heads=16, batch=8, sr_batch=1, steps=20, repeats=10,
                    sample_steps=50, peak_n=8192)
    return dict(width=256, depth=4, heads=4, batch=1, sr_batch=1, steps=3, repeats=3, sample_steps=5, peak_n=2048)


def autocast(s: BenchSettings):
    """bf16 autocast on the benchmark's device (weights stay fp32), or nothing for fp32."""
    dev = torch.device(s.device).type
    return torch.autocast(dev, dtype=torch.bfloat16) if s.dtype == "bf16" else nullcontext()


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def build_walt(s: BenchSettings, layout: str, attention: str = "window", text: bool = False):
    """W.A.L.T at the requested width/depth/heads (the L preset's other choices: AdaLN-LoRA r=2,
    qk-norm, self-conditioning input); class-conditional (101 classes) or text-conditioned."""
    from walt.denoiser import WALT

    cond = dict(num_classes=0, text_dim=s.text_dim, cross_attention="spatial") if text else {}
    return WALT.from_preset(
        "L", hidden_size=s.width, depth=s.depth, num_heads=s.heads, attention=attention,
        rel_pos_bias=s.rel_pos_bias, **LAYOUTS[layout], **cond,
    )


def full_twin(net):
    """The `attention="full"` twin of a window WALT with the same weights -> (twin, n_not_copied)."""
    from walt.config import replace_config
    from walt.denoiser import WALT

    twin = WALT(replace_config(net.config, attention="full"))
    own = twin.state_dict()
    shared = {k: v for k, v in net.state_dict().items() if k in own and own[k].shape == v.shape}
    twin.load_state_dict(shared, strict=False)
    return twin, len(own) - len(shared)  # the rest: relative-position tables sized by the window


def build_latte(s: BenchSettings, layout: str):
    """diffusers' LatteTransformer3DModel matched to W.A.L.T's width, depth, heads, tokens."""
    from diffusers import LatteTransformer3DModel

    t, h, _ = LAYOUTS[layout]["input_size"]
    return LatteTransformer3DModel(
        num_attention_heads=s.heads,
        attention_head_dim=s.width // s.heads,
        in_channels=8,  # W.A.L.T's latent channels c (the L preset)
        out_channels=8,
        num_layers=s.depth // 2,  # pairs of (spatial, temporal) blocks
        cross_attention_dim=s.width,
        attention_bias=True,
        sample_size=h,
        patch_size=1,
        activation_fn="gelu-approximate",
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        caption_channels=s.text_dim,
        video_length=t,
    )


def walt_model_fn(s: BenchSettings, net, text: torch.Tensor):
    """The sampler's `model_fn(x_t, t, self_cond) -> v` for a text-conditioned WALT (autocast as set)."""

    def model_fn(x, t, self_cond=None):
        with autocast(s):
            return net(x, t, self_cond=self_cond, text=text).float()

    return model_fn


def walt_class_model_fn(s: BenchSettings, net, text: torch.Tensor):
    """The same for a class-conditional WALT: class 0 for every clip; `text` is not used."""
    y = torch.zeros(text.shape[0], dtype=torch.long, device=text.device)

    def model_fn(x, t, self_cond=None):
        with autocast(s):
            return net(x, t, y=y, self_cond=self_cond).float()

    return model_fn


def latte_model_fn(s: BenchSettings, net, text: torch.Tensor):
    """The same for Latte (`timestep`, `encoder_hidden_states`), output (B, C, T, H, W) float32."""

    def model_fn(x, t, self_cond=None):  # Latte has no self-conditioning input
        with autocast(s):
            return net(x, timestep=t, encoder_hidden_states=text, return_dict=False)[0].float()

    return model_fn
