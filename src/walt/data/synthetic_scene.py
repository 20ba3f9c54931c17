"""The scene of one procedural clip: what it shows (`ClipParams`, captions) and how it is drawn.

Each clip shows one textured shape moving on a background; the class is the kind of motion:

    bouncing   straight-line motion reflected off the frame edges
    rotating   spinning in place about its centre
    growing    size oscillating (growing and shrinking)
    orbiting   centre moving on a circle
    sliding    sinusoidal left-right motion
    pulsing    static shape whose colours pulse towards white / black
    panning    the camera pans: shape and background translate together
    flipping   turning about its vertical axis like a coin (width ~ cos, back face darker)

Appearance is drawn per sample and is independent of the class: shape (8 kinds), texture
(stripes, checkers, gradient, dots, rings, two-tone; always anisotropic so rotation is
visible), two colours, size, position, speed, phase, direction and background (solid, linear
or radial gradient, smooth noise, stripes, checkers). A sample is fully determined by
`(seed, index)`, at any resolution and frame count: geometry lives in units of the short
side and motion in units of frames, so frame t is the same image whatever `num_frames` is
(the first frame of a clip is the sample's still image).

Rendering is one vectorised torch expression over `(T, H, W)`: signed distance functions in
the shape's own frame with a one-pixel linear edge ramp (analytic anti-aliasing, so sub-pixel
motion is smooth), textures in the shape's frame (they move and rotate with it), backgrounds
as closed-form functions of scene coordinates (so panning needs no resampling).

The datasets over these clips (`SyntheticVideos`, `SyntheticImages`) are in `walt.data.synthetic`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch


CLASS_NAMES: tuple[str, ...] = (
    "bouncing", "rotating", "growing", "orbiting", "sliding", "pulsing", "panning", "flipping",
)
# Motion phrase per class; each contains the class name so captions name the class.
_MOTION_PHRASE = {
    "bouncing": "bouncing around",
    "rotating": "rotating in place",
    "growing": "growing and shrinking",
    "orbiting": "orbiting in a circle",
    "sliding": "sliding left and right",
    "pulsing": "pulsing in colour",
    "panning": "seen by a panning camera",
    "flipping": "flipping like a coin",
}
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond", "ring", "cross")
TEXTURES = ("striped", "checkered", "gradient", "dotted", "ringed", "two-tone")
BACKGROUNDS = ("plain", "gradient", "radial", "noisy", "striped", "checkered")
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15), "orange": (1.00, 0.55, 0.10), "yellow": (0.95, 0.85, 0.15),
    "green": (0.20, 0.72, 0.25), "teal": (0.10, 0.58, 0.58), "blue": (0.15, 0.35, 0.90),
    "purple": (0.55, 0.25, 0.80), "pink": (0.95, 0.50, 0.72), "white": (0.95, 0.95, 0.95),
    "black": (0.08, 0.08, 0.08), "brown": (0.55, 0.35, 0.20), "grey": (0.50, 0.50, 0.50),
}
_NOISE_WAVES = 6


@dataclass(frozen=True)
class ClipParams:
    """Everything random about one clip except its class (see `sample_clip_params`).

    Lengths are in units of the frame's short side; `center` is a fraction of (width, height).
    Motion rates are per frame, multiplied by `speed`.
    """

    shape: str
    texture: str
    color: tuple[float, float, float]
    color2: tuple[float, float, float]
    color_name: str
    color2_name: str
    size: float  # shape radius
    center: tuple[float, float]
    angle: float  # initial rotation (rad)
    speed: float
    phase: float
    direction: float  # heading for bouncing / panning (rad)
    spin: float  # +1 or -1: sense of rotation / orbit
    tex_freq: float
    tex_angle: float
    tex_offset: tuple[float, float]
    bg_kind: str
    bg_color: tuple[float, float, float]
    bg_color2: tuple[float, float, float]
    bg_color_name: str
    bg_angle: float
    bg_freq: float
    bg_point: tuple[float, float]
    bg_waves: tuple[tuple[float, float, float, float], ...]  # (kx, ky, phase, amplitude)


def _luma(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _jitter(rng: np.random.Generator, c, amount=0.06) -> tuple[float, float, float]:
    return tuple(float(x) for x in np.clip(np.asarray(c) + rng.uniform(-amount, amount, 3), 0.0, 1.0))


def sample_clip_params(rng: np.random.Generator) -> ClipParams:
    """Draw one clip's appearance and motion parameters (class-independent)."""
    names = list(PALETTE)
    c1 = names[rng.integers(len(names))]
    # The texture's second colour and the background must contrast with the main colour.
    c2 = rng.choice([n for n in names if n != c1 and abs(_luma(PALETTE[n]) - _luma(PALETTE[c1])) > 0.2])
    bg = rng.choice([
        n for n in names
        if n not in (c1, c2) and min(np.abs(np.subtract(PALETTE[n], PALETTE[c])).sum() for c in (c1, c2)) > 0.5
    ])
    bg_rgb = np.asarray(PALETTE[bg])
    # The background's second tone is a lighter or darker shade of its colour: low contrast, so
    # the shape stays the salient object.
    toward = np.ones(3) if _luma(bg_rgb) < 0.5 else np.zeros(3)
    bg2_rgb = bg_rgb + rng.uniform(0.2, 0.4) * (toward - bg_rgb)
    waves = []
    for _ in range(_NOISE_WAVES):
        k, a = rng.uniform(3.0, 12.0), rng.uniform(0, 2 * math.pi)
        phase, amplitude = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.5, 1.0))
        waves.append((k * math.cos(a), k * math.sin(a), phase, amplitude))
    return ClipParams(
        shape=str(rng.choice(SHAPES)),
        texture=str(rng.choice(TEXTURES)),
        color=_jitter(rng, PALETTE[c1]),
        color2=_jitter(rng, PALETTE[str(c2)]),
        color_name=c1,
        color2_name=str(c2),
        size=float(rng.uniform(0.12, 0.2)),
        center=(float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.35, 0.65))),
        angle=float(rng.uniform(0, 2 * math.pi)),
        speed=float(rng.uniform(0.7, 1.4)),
        phase=float(rng.uniform(0, 2 * math.pi)),
        direction=float(rng.uniform(0, 2 * math.pi)),
        spin=float(rng.choice([-1.0, 1.0])),
        tex_freq=float(rng.uniform(6.0, 11.0)),
        tex_angle=float(rng.uniform(0, math.pi)),
        tex_offset=(float(rng.uniform(-0.4, 0.4)), float(rng.uniform(-0.4, 0.4))),
        bg_kind=str(rng.choice(BACKGROUNDS)),
        bg_color=_jitter(rng, bg_rgb, 0.05),
        bg_color2=tuple(float(x) for x in np.clip(bg2_rgb, 0, 1)),
        bg_color_name=str(bg),
        bg_angle=float(rng.uniform(0, 2 * math.pi)),
        bg_freq=float(rng.uniform(8.0, 20.0)),
        bg_point=(float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8))),
        bg_waves=tuple(waves),
    )


def caption_for(label_name: str, p: ClipParams) -> str:
    """A short caption, e.g. "a red and white striped square bouncing around on a blue gradient background"."""
    bg = {"plain": f"plain {p.bg_color_name}", "radial": f"{p.bg_color_name} radial gradient"}.get(
        p.bg_kind, f"{p.bg_color_name} {p.bg_kind}"
    )
    motion = _MOTION_PHRASE[label_name]
    return f"{_a(p.color_name)} and {p.color2_name} {p.texture} {p.shape} {motion} on {_a(bg)} background"


def _a(phrase: str) -> str:
    """English indefinite article: "an orange ...", "a red ..."."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


# ---------------------------------------------------------------------------- rendering
# Rendering uses float32 numpy rather than torch: it is single-threaded by construction, so
# it neither fights a training loop for cores nor pays OpenMP start-up on small arrays.

_F32 = np.float32


def _shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) of a unit-radius shape, in the shape's own units.

    Exact near the edges for the convex polygons (max of half-planes); the star's polar
    distance is divided by its gradient norm so its edge ramp stays about one pixel wide.
    """
    if shape == "circle":
        return np.sqrt(u * u + v * v) - 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8
    if shape == "diamond":
        return (np.abs(u) + np.abs(v) - 1.0) * (1.0 / math.sqrt(2.0))
    if shape == "ring":
        return np.abs(np.sqrt(u * u + v * v) - 0.72) - 0.28
    if shape == "cross":
        a, b = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(a - 0.9, b - 0.32), np.maximum(a - 0.32, b - 0.9))
    if shape in ("triangle", "hexagon"):
        n, apothem = (3, 0.55) if shape == "triangle" else (6, 0.87)
        d = None
        for k in range(n):
            a = -math.pi / 2 + math.pi / n + 2 * math.pi * k / n
            dk = u * math.cos(a) + v * math.sin(a) - apothem
            d = dk if d is None else np.maximum(d, dk)
        return d
    if shape == "star":
        points, r_in = 5, 0.45
        rho = np.sqrt(u * u + v * v)
        frac = np.remainder(np.arctan2(v, u) * (points / (2 * math.pi)), 1.0)
        radius = r_in + (1.0 - r_in) * np.abs(2.0 * frac - 1.0)
        slope = (1.0 - r_in) * 2.0 * points / (2 * math.pi)  # |dR/dphi|
        return (rho - radius) / np.sqrt(1.0 + (slope / np.maximum(rho, 0.1)) ** 2)
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def _texture(p: ClipParams, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mix weight in [0, 1] between `color` and `color2`, in the shape's frame (soft edges)."""
    ca, sa = math.cos(p.tex_angle), math.sin(p.tex_angle)
    a = u * ca + v * sa  # along the texture direction
    f, (ox, oy) = p.tex_freq, p.tex_offset
    if p.texture == "striped":
        w = 0.5 + 2.0 * np.sin(f * a + ox * 7.0)
    elif p.texture == "checkered":
        b = v * ca - u * sa
        w = 0.5 + 3.0 * np.sin(0.8 * f * a + ox * 7.0) * np.sin(0.8 * f * b + oy * 7.0)
    elif p.texture == "gradient":
        w = 0.5 + 0.55 * a
    elif p.texture == "dotted":
        b = v * ca - u * sa
        period = 2 * math.pi / f * 1.6
        fa = np.remainder(a * (1.0 / period) + ox, 1.0) - 0.5
        fb = np.remainder(b * (1.0 / period) + oy, 1.0) - 0.5
        w = (0.3 - np.sqrt(fa * fa + fb * fb)) * 12.0 + 0.5
    elif p.texture == "ringed":
        w = 0.5 + 2.0 * np.sin(f * np.sqrt((u - ox) ** 2 + (v - oy) ** 2))
    elif p.texture == "two-tone":
        w = 0.5 + 6.0 * (a - 0.25 * ox)
    else:
        raise ValueError(f"unknown texture {p.texture!r}; choose from {TEXTURES}")
    return np.clip(w, 0.0, 1.0)


def _background(p: ClipParams, x: np.ndarray, y: np.ndarray, aspect: tuple[float, float]) -> np.ndarray:
    """Mix weight in [0, 1] between `bg_color` and `bg_color2` at scene coordinates.

    `x` is (T', 1, W) and `y` is (T', H, 1) with T' = T when panning, else 1.
    """
    ca, sa = math.cos(p.bg_angle), math.sin(p.bg_angle)
    if p.bg_kind == "plain":
        return np.zeros((1, 1, 1), _F32)
    if p.bg_kind == "gradient":
        centre = (aspect[0] * ca + aspect[1] * sa) / 2
        return np.clip(0.5 + 0.9 * (x * ca + y * sa - centre), 0.0, 1.0)
    if p.bg_kind == "radial":
        px, py = p.bg_point[0] * aspect[0], p.bg_point[1] * aspect[1]
        return np.clip(1.0 - 1.3 * np.sqrt((x - px) ** 2 + (y - py) ** 2), 0.0, 1.0)
    if p.bg_kind == "noisy":
        # A sum of random plane waves: smooth and cloud-like. Each wave is separable,
        # sin(kx x + ky y + ph) = sin(kx x + ph) cos(ky y) + cos(kx x + ph) sin(ky y),
        # so only (T, 1, W) and (T, H, 1) arrays see a transcendental.
        total = sum(w[3] for w in p.bg_waves)
        n = 0.0
        for kx, ky, ph, amp in p.bg_waves:
            n = n + amp * (np.sin(kx * x + ph) * np.cos(ky * y) + np.cos(kx * x + ph) * np.sin(ky * y))
        return 0.5 + (0.8 / total) * n
    if p.bg_kind == "striped":
        return np.clip(0.5 + 1.5 * np.sin(p.bg_freq * (x * ca + y * sa)), 0.0, 1.0)
    if p.bg_kind == "checkered":
        f = 0.6 * p.bg_freq
        return np.clip(0.5 + 3.0 * np.sin(f * (x * ca + y * sa)) * np.sin(f * (y * ca - x * sa)), 0.0, 1.0)
    raise ValueError(f"unknown background {p.bg_kind!r}; choose from {BACKGROUNDS}")


def _fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect x into [lo, hi] (elastic bounces off both walls): a triangle wave."""
    span = max(hi - lo, 1e-6)
    y = np.remainder(x - lo, 2 * span)
    return lo + span - np.abs(y - span)


def render_clip(label: int | str, params: ClipParams, num_frames: int, height: int, width: int) -> torch.Tensor:
    """Render one clip of class `label` (index into CLASS_NAMES, or its name) with `params`.

    Returns float32 `(3, T, H, W)` in [-1, 1]. Deterministic: same arguments, same pixels;
    frame t does not depend on `num_frames`.
    """
    name = CLASS_NAMES[label] if not isinstance(label, str) else label
    if name not in CLASS_NAMES:
        raise ValueError(f"unknown motion class {label!r}; choose from {CLASS_NAMES}")
    p = params
    T, H, W = int(num_frames), int(height), int(width)
    S = float(min(H, W))
    aspect = (W / S, H / S)  # frame extent in short-side units
    t = np.arange(T, dtype=_F32)  # frame index; every rate below is per frame
    sp = p.speed

    # Per-frame trajectory: centre, rotation, scale, horizontal flip, colour pulse, camera pan.
    cx = np.full(T, p.center[0] * aspect[0], _F32)
    cy = np.full(T, p.center[1] * aspect[1], _F32)
    theta = np.full(T, p.angle, _F32)
    scale, flip, pulse = np.ones(T, _F32), np.ones(T, _F32), np.zeros(T, _F32)
    pan_x = pan_y = None
    size = p.size
    if name == "bouncing":
        v, lo = 0.035 * sp, size * 1.15
        cx = _fold(cx + v * math.cos(p.direction) * t, lo, aspect[0] - lo)
        cy = _fold(cy + v * math.sin(p.direction) * t, lo, aspect[1] - lo)
    elif name == "rotating":
        theta = theta + p.spin * 0.2 * sp * t
    elif name == "growing":
        scale = 1.0 + 0.45 * np.sin(0.3 * sp * t + p.phase)
        size = min(size, 0.14)  # keep the largest size inside the frame
    elif name == "orbiting":
        r, w = 0.2, p.spin * 0.25 * sp
        cx = aspect[0] / 2 + r * np.cos(w * t + p.phase)
        cy = aspect[1] / 2 + r * np.sin(w * t + p.phase)
        size = min(size, 0.15)
    elif name == "sliding":
        cx = aspect[0] / 2 + (aspect[0] / 2 - size - 0.04) * np.sin(0.3 * sp * t + p.phase)
    elif name == "pulsing":
        pulse = 0.5 - 0.5 * np.cos(0.45 * sp * t + p.phase)
    elif name == "panning":
        v = 0.025 * sp
        pan_x, pan_y = v * math.cos(p.direction) * t, v * math.sin(p.direction) * t
    elif name == "flipping":
        flip = np.cos(0.3 * sp * t + p.phase)

    # Pixel centres in short-side units; while panning, shifted per frame into scene
    # coordinates (the shape sits at a fixed scene point, so it moves with the background).
    X = ((np.arange(W, dtype=_F32) + 0.5) / S).reshape(1, 1, W)
    Y = ((np.arange(H, dtype=_F32) + 0.5) / S).reshape(1, H, 1)
    if pan_x is not None:
        X, Y = X + pan_x.reshape(T, 1, 1), Y + pan_y.reshape(T, 1, 1)  # (T, 1, W), (T, H, 1)

    # Shape frame: translate, rotate by -theta, divide by the per-axis radius.
    sx = (size * scale * np.maximum(np.abs(flip), 0.04)).astype(_F32).reshape(T, 1, 1)
    sy = (size * scale).astype(_F32).reshape(T, 1, 1)
    cos, sin = np.cos(theta).reshape(T, 1, 1), np.sin(theta).reshape(T, 1, 1)
    dx = X - cx.reshape(T, 1, 1)  # (T, 1, W)
    dy = Y - cy.reshape(T, 1, 1)  # (T, H, 1)
    u = (cos / sx) * dx + (sin / sx) * dy  # (T, H, W)
    v = (cos / sy) * dy - (sin / sy) * dx
    sdf = _shape_sdf(p.shape, u, v)
    # Signed distance in pixels (the smaller axis radius bounds the local-to-pixel scale);
    # a one-pixel linear ramp is the anti-aliased coverage of the edge.
    alpha = np.clip(0.5 - sdf * (np.minimum(sx, sy) * S), 0.0, 1.0)  # (T, H, W)

    c1 = np.asarray(p.color, _F32).reshape(3, 1, 1, 1)
    c2 = np.asarray(p.color2, _F32).reshape(3, 1, 1, 1)
    if name == "pulsing":  # both colours pulse towards white (dark shapes) or black (light ones)
        target = _F32(1.0) if _luma(p.color) < 0.55 else _F32(0.0)
        k = 0.75 * pulse.reshape(1, T, 1, 1)
        c1, c2 = c1 + k * (target - c1), c2 + k * (target - c2)
    if name == "flipping":  # the back face (cos < 0) is a darker shade
        shade = np.where(flip < 0, 0.45, 1.0).astype(_F32).reshape(1, T, 1, 1)
        c1, c2 = c1 * shade, c2 * shade
    tex = _texture(p, u, v)[None]  # (1, T, H, W)
    fg = c1 + tex * (c2 - c1)  # (3, T, H, W)

    b1 = np.asarray(p.bg_color, _F32).reshape(3, 1, 1, 1)
    b2 = np.asarray(p.bg_color2, _F32).reshape(3, 1, 1, 1)
    bg = b1 + _background(p, X, Y, aspect)[None] * (b2 - b1)  # (3, T or 1, H, W)
    video = bg + alpha[None] * (fg - bg)  # (3, T, H, W)
    video = np.clip(video, 0.0, 1.0) * 2.0 - 1.0
    return torch.from_numpy(np.ascontiguousarray(video, dtype=_F32))


def params_to_dict(p: ClipParams) -> dict:
    """ClipParams -> plain dict (for logging / JSON)."""
    return {f.name: getattr(p, f.name) for f in fields(p)}
