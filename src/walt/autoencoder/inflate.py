"""Inflate a trained image autoencoder into a video autoencoder (MAGVIT-v2 Sec. 3.2; SPEC §1).

The image model is a `CausalVAE` with temporal_factor=1, normally with temporal_kernel_size=1
(`config.image_config(video_cfg)`): a true 2D model whose (1, k, k) kernels cost nothing extra in
time. A k_t > 1 image model trained on single frames is accepted too: with replicate padding
(causal_conv.py) its (k_t, k, k) kernel sees k_t copies of the one frame, so it acts exactly as
the 2D kernel W.sum(t), which is what we inflate.

Causal inflation puts each 2D kernel in the LAST temporal slice of the 3D kernel and zeros in the
others (the centre slice for a non-causal target), so at initialisation every conv looks only at
the current frame. Depth-to-space convs that gain a temporal factor replicate their weights over
the s_t temporal sub-positions, and transitions that exist only in the video model (temporal-only
strides) start as identities. Hence, before any video training, the inflated model on a 1-frame
input, and on a static video frame by frame, reproduces the image model exactly.
"""

from __future__ import annotations

import torch

from walt.autoencoder.conv_blocks import Downsample, Upsample
from walt.autoencoder.causal_conv import CausalConv3d
from walt.autoencoder.causal_vae_config import CausalVAEConfig
from walt.autoencoder.causal_vae import CausalVAE

# Config fields that must agree between the image and the video model.
_SHARED_FIELDS = ("in_channels", "latent_channels", "spatial_factor", "base_channels", "num_res_blocks",
                  "kl", "norm_groups")


def _to_2d(w: torch.Tensor) -> torch.Tensor:
    """(O, I, k_t, kh, kw) image kernel -> the (O, I, kh, kw) 2D kernel it applies to one frame."""
    return w[:, :, 0] if w.shape[2] == 1 else w.sum(dim=2)


def _inflate(w2d: torch.Tensor, kernel_t: int, causal: bool) -> torch.Tensor:
    """(O, I, kh, kw) -> (O, I, k_t, kh, kw) with the 2D kernel in the last (causal) or centre slice."""
    w = w2d.new_zeros(w2d.shape[0], w2d.shape[1], kernel_t, *w2d.shape[2:])
    w[:, :, kernel_t - 1 if causal else kernel_t // 2] = w2d
    return w


def _check_configs(image_cfg: CausalVAEConfig, video_cfg: CausalVAEConfig) -> None:
    if image_cfg.temporal_factor != 1:
        raise ValueError(
            f"inflate_image_to_video needs an image model (temporal_factor=1), got temporal_factor="
            f"{image_cfg.temporal_factor}; build one with walt.autoencoder.image_config(video_config)"
        )
    for name in _SHARED_FIELDS:
        a, b = getattr(image_cfg, name), getattr(video_cfg, name)
        if a != b:
            raise ValueError(f"image and video configs differ in {name} ({a} vs {b}); they must match to inflate")
    if image_cfg.level_channels != video_cfg.level_channels:
        raise ValueError(
            f"image and video models have different levels {image_cfg.level_channels} vs "
            f"{video_cfg.level_channels}; use the same channel_multipliers (and enough levels for temporal_factor)"
        )


def inflate_image_to_video(image_vae_or_state_dict, video_config: CausalVAEConfig) -> CausalVAE:
    """Build a `CausalVAE(video_config)` whose weights are inflated from an image autoencoder.

    Args:
        image_vae_or_state_dict: a `CausalVAE` with temporal_factor=1, or its state_dict.
        video_config: the target config (same widths / levels / latent channels as the image model).
    Returns the inflated video model (on the CPU, float32 weights of the source dtype).
    """
    if isinstance(image_vae_or_state_dict, CausalVAE):
        _check_configs(image_vae_or_state_dict.config, video_config)
        source = image_vae_or_state_dict.state_dict()
    elif isinstance(image_vae_or_state_dict, dict):
        source = image_vae_or_state_dict
    else:
        raise TypeError("inflate_image_to_video expects a CausalVAE or its state_dict")
    source = {k: v.detach().cpu() for k, v in source.items()}

    video = CausalVAE(video_config)
    target = video.state_dict()
    new: dict[str, torch.Tensor] = {}

    # 1) Every causal conv: collapse the image kernel to 2D, re-inflate in time. Transition
    #    modules that the image model lacks (temporal-only strides) become identities.
    for name, module in video.named_modules():
        if isinstance(module, (Downsample, Upsample)):
            w_key, b_key = f"{name}.conv.conv.weight", f"{name}.conv.conv.bias"
            if w_key not in source:
                new[w_key], new[b_key] = _identity_transition(module, target[w_key])
                continue
            w2d, bias = _to_2d(source[w_key]), source[b_key]
            if isinstance(module, Upsample) and module.stride_t > 1:
                # Image channels are ordered (c sh sw); video ones (c st sh sw): copy over st.
                c = w2d.shape[0] // module.stride_s**2
                w2d = w2d.view(c, 1, -1, *w2d.shape[1:]).expand(-1, module.stride_t, -1, -1, -1, -1)
                w2d = w2d.reshape(-1, *w2d.shape[3:])
                bias = bias.view(c, 1, -1).expand(-1, module.stride_t, -1).reshape(-1)
            new[w_key] = _inflate(w2d, module.conv.kernel_t, module.conv.causal)
            new[b_key] = bias.clone()
        elif isinstance(module, CausalConv3d) and f"{name}.conv.weight" not in new:
            w_key = f"{name}.conv.weight"
            if w_key not in source:
                raise ValueError(f"the image state_dict has no {w_key!r}; was it built with the same layout?")
            new[w_key] = _inflate(_to_2d(source[w_key]), module.kernel_t, module.causal)
            new[f"{name}.conv.bias"] = source[f"{name}.conv.bias"].clone()

    # 2) Everything else (norms, adaptive-norm projections, 1x1 shortcuts) is copied as is.
    for key in target:
        if key in new:
            continue
        if key not in source:
            raise ValueError(f"the image state_dict has no {key!r}; image and video layouts differ")
        new[key] = source[key].clone()
    unexpected = sorted(set(source) - set(target))
    if unexpected:
        raise ValueError(f"the image state_dict has keys the video model lacks: {unexpected[:3]} ...")
    for key, value in new.items():
        if value.shape != target[key].shape:
            raise ValueError(
                f"{key}: image weight inflates to {tuple(value.shape)} but the video model needs "
                f"{tuple(target[key].shape)}; the two configs do not match"
            )
    video.load_state_dict(new, strict=True)
    return video


def _identity_transition(module, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights making a temporal-only Downsample (keep every s_t-th frame) or Upsample (repeat
    each frame s_t times) an identity on the current frame; used where the image model had no layer."""
    w = torch.zeros_like(weight)  # (O, I, k_t, 3, 3)
    conv = module.conv
    t_slice = conv.kernel_t - 1 if conv.causal else conv.kernel_t // 2
    channels = w.shape[1]
    for c in range(channels):
        if isinstance(module, Upsample):  # out channel order (c st), stride_s is 1 here
            for s in range(module.stride_t):
                w[c * module.stride_t + s, c, t_slice, 1, 1] = 1.0
        else:
            w[c, c, t_slice, 1, 1] = 1.0
    return w, torch.zeros(w.shape[0], dtype=w.dtype)
