"""Stage 2 network: the W.A.L.T window-attention diffusion transformer (SPEC §2).

    from walt.denoiser import WALT
    net = WALT.from_preset("tiny" | "L" | "XL", **overrides)
    v = net(x, t, y=None, cond_frames=None, cond_mask=None, self_cond=None, text=None, text_mask=None)

Plain PyTorch; never imports `walt.diffusion`, `walt.pipeline` or `walt.train` (the diffusion
code only calls `net(x, t, ...)`; tests/test_denoiser.py checks this in a fresh interpreter).
Presets (`PRESETS`, a plain dict of config functions) include the text-to-video cascade's.
"""

from walt.denoiser.attention import WindowAttention, WindowCrossAttention, resolve_window, window_partition, window_reverse
from walt.denoiser.adaln_blocks import FinalLayer, WALTBlock
from walt.denoiser.transformer_config import (
    CASCADE_STAGES,
    PAPER_PARAMS,
    PRESETS,
    PresetRegistry,
    WALTConfig,
    get_preset,
    register_preset,
)
from walt.denoiser.transformer import WALT

__all__ = [
    "WALT",
    "WALTConfig",
    "WALTBlock",
    "FinalLayer",
    "WindowAttention",
    "WindowCrossAttention",
    "PRESETS",
    "PAPER_PARAMS",
    "CASCADE_STAGES",
    "PresetRegistry",
    "get_preset",
    "register_preset",
    "resolve_window",
    "window_partition",
    "window_reverse",
]
