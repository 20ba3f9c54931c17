"""Test helpers of the studies: a fast stand-in for the FVD network (importable by worker processes)."""

from __future__ import annotations

import torch
from torch import nn


class FakeI3D(nn.Module):
    """(B, 3, T, 224, 224) -> (B, 400): fast and deterministic; NOT the FVD network."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.pool = nn.AdaptiveAvgPool3d((2, 2, 2))
        self.fc = nn.Linear(24, 400)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(400, 24, generator=g) * 0.2)
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))
