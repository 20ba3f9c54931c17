"""The demo's clips: the built-in procedural dataset, optionally plainer and faster.

`SyntheticVideos` draws every appearance parameter independently of the motion class: 8 shapes,
6 textures, 12 colours, 6 backgrounds. At 32x32 pixels most textures (stripes, checkers, dots,
rings) and the textured backgrounds are near the pixel pitch: an autoencoder trained for a few
minutes on 2 CPU cores spends its capacity on that high-frequency detail and loses the small
moving shape (measured: 21.5 dB PSNR, reconstructions with 1/6 of the real clips' motion). The
demo's CPU preset therefore keeps the generator, its classes, motions, shapes and colours, and
restricts the appearance: smooth backgrounds (plain, linear or radial gradient), low-frequency
textures (two-tone, gradient: still anisotropic, so rotation and flipping stay visible), and
shapes `shape_scale` times larger. It also speeds every motion up by `speed_scale`: the built-in
rates are made for 17-frame clips, and over the CPU preset's 9 frames a growing shape, a
rotation or a colour pulse at those rates changes by a pixel or two. Measured on 64 clips of the
held-out seed (shape_scale 1.3), mean |frame t - frame t-1| in [-1, 1] units for growing /
pulsing / rotating / bouncing: 0.005 / 0.008 / 0.013 / 0.026 at the built-in rates, 0.012 /
0.016 / 0.022 / 0.047 at twice them. `shapes` restricts the shape kinds as well
(not used by the CPU preset). The report states which restriction was used.

The clips themselves are `walt.data.restricted.RestrictedVideos` (`DemoVideos` here), which the
encoder study (`walt.study`) draws its clips from as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from walt.data.restricted import RestrictedVideos

if TYPE_CHECKING:
    from walt.demo.demo_config import DemoConfig


DemoVideos = RestrictedVideos  # the demo's name for the restricted clips


def demo_videos(cfg: "DemoConfig", num_samples: int, seed: int, num_frames: int | None = None) -> DemoVideos:
    """`num_samples` clips of `cfg`'s classes, size and restriction (`num_frames`: default `cfg.num_frames`).

    The one place that turns a `DemoConfig` into clips, so every stage (training, held-out,
    FVD, text prompts) draws them the same way.
    """
    return DemoVideos(num_samples, num_frames=num_frames or cfg.num_frames, resolution=cfg.resolution, seed=seed,
                      classes=cfg.classes, backgrounds=cfg.backgrounds, textures=cfg.textures,
                      shape_scale=cfg.shape_scale, speed_scale=cfg.speed_scale, shapes=cfg.shapes)
