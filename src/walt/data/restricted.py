"""The built-in procedural dataset with a restricted appearance: plainer and faster clips.

`SyntheticVideos` draws every appearance parameter independently of the motion class: 8 shapes,
6 textures, 12 colours, 6 backgrounds. At 32x32 pixels most textures (stripes, checkers, dots,
rings) and the textured backgrounds are near the pixel pitch: an autoencoder trained for a few
minutes on 2 CPU cores spends its capacity on that high-frequency detail and loses the small
moving shape. `RestrictedVideos` keeps the generator, its classes, motions, shapes and colours,
and draws backgrounds / textures / shapes only from given subsets, with shapes `shape_scale`
times larger and every motion `speed_scale` times faster (the built-in rates are made for
17-frame clips; over 9 frames a growing shape or a colour pulse at those rates changes by a
pixel or two). The CPU demo (`walt.demo.clips`) and the encoder study (`walt.study`) train on
these clips, so their motion-class scores measure the same thing; why the demo chose its
restriction is docs/demo/NOTES.md's.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from walt.data.synthetic import SyntheticVideos
from walt.data.synthetic_scene import BACKGROUNDS, SHAPES, TEXTURES, ClipParams

__all__ = ["RestrictedVideos"]


class RestrictedVideos(SyntheticVideos):
    """`SyntheticVideos` whose clips draw backgrounds / textures / shapes only from the given subsets.

    A clip whose drawn background (texture, shape) is outside the subset gets one from the subset,
    drawn from its own (seed, index) stream, so `ds[i]` is still a pure function of (seed, i).
    `shape_scale` multiplies every shape's size, `speed_scale` every motion's rate (the clip's
    `speed`: translation, rotation, growth, orbit, slide, pulse, pan and flip alike).
    Empty subsets and both scales 1 give exactly `SyntheticVideos`.
    """

    def __init__(self, num_samples: int, num_frames: int = 17, resolution=64, seed: int = 0, classes=None,
                 backgrounds: tuple[str, ...] = (), textures: tuple[str, ...] = (), shape_scale: float = 1.0,
                 speed_scale: float = 1.0, shapes: tuple[str, ...] = ()):
        super().__init__(num_samples, num_frames, resolution, seed, classes)
        bad = ([b for b in backgrounds if b not in BACKGROUNDS] + [t for t in textures if t not in TEXTURES]
               + [s for s in shapes if s not in SHAPES])
        if bad:
            raise ValueError(f"unknown background/texture/shape {bad[0]!r}; backgrounds: {BACKGROUNDS}, "
                             f"textures: {TEXTURES}, shapes: {SHAPES}")
        if not 0.5 <= shape_scale <= 2.0:
            raise ValueError(f"shape_scale must be in [0.5, 2], got {shape_scale}")
        if not 0.25 <= speed_scale <= 4.0:
            raise ValueError(f"speed_scale must be in [0.25, 4], got {speed_scale}")
        self.backgrounds, self.textures, self.shape_scale = tuple(backgrounds), tuple(textures), float(shape_scale)
        self.speed_scale, self.shapes = float(speed_scale), tuple(shapes)

    def params(self, index: int) -> tuple[int, ClipParams]:
        label, p = super().params(index)
        rng = np.random.default_rng([self.seed, self._check_index(index), 7])
        changes = {}
        if self.backgrounds and p.bg_kind not in self.backgrounds:
            changes["bg_kind"] = str(rng.choice(self.backgrounds))
        if self.textures and p.texture not in self.textures:
            changes["texture"] = str(rng.choice(self.textures))
        if self.shapes and p.shape not in self.shapes:
            changes["shape"] = str(rng.choice(self.shapes))
        if self.shape_scale != 1.0:
            changes["size"] = p.size * self.shape_scale
        if self.speed_scale != 1.0:
            changes["speed"] = p.speed * self.speed_scale
        return label, dataclasses.replace(p, **changes) if changes else p
