"""Drawing primitives shared by rooms and people.

Shapes are signed distance fields painted with soft edges, relief shading and creases over
float RGB canvases; smooth noise gives texture; colours are RGB triples in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image

RGB = tuple[float, float, float]
SdfFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
ColorFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class Shape(NamedTuple):
    """A 2-D shape: its pixel bounding box (y0, y1, x0, x1), SDF and half thickness."""

    bbox: tuple[float, float, float, float]
    sdf: SdfFn
    depth: float


def capsule(a: tuple[float, float], b: tuple[float, float], r: float) -> Shape:
    """A segment from `a` to `b` (x, y pixels) thickened by radius `r`."""
    (ax, ay), (bx, by) = a, b
    vx, vy = bx - ax, by - ay
    vv = max(vx * vx + vy * vy, 1e-9)

    def sdf(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        px, py = xx - ax, yy - ay
        h = np.clip((px * vx + py * vy) / vv, 0.0, 1.0)
        return np.hypot(px - vx * h, py - vy * h) - r

    box = (min(ay, by) - r - 1, max(ay, by) + r + 1, min(ax, bx) - r - 1, max(ax, bx) + r + 1)
    return Shape(box, sdf, r)


def ellipse(c: tuple[float, float], rx: float, ry: float) -> Shape:
    """An axis-aligned ellipse centred at `c` (approximate SDF, exact on the axes)."""
    cx, cy = c
    m = min(rx, ry)

    def sdf(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return (np.hypot((xx - cx) / rx, (yy - cy) / ry) - 1.0) * m

    return Shape((cy - ry - 1, cy + ry + 1, cx - rx - 1, cx + rx + 1), sdf, m)


def ring(c: tuple[float, float], radius: float, r: float) -> Shape:
    """A circle of centre line `radius` thickened by `r`."""
    cx, cy = c

    def sdf(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return np.abs(np.hypot(xx - cx, yy - cy) - radius) - r

    e = radius + r + 1
    return Shape((cy - e, cy + e, cx - e, cx + e), sdf, r)


def rounded_box(
    c: tuple[float, float],
    half: tuple[float, float],
    corner: float,
    *,
    angle: float = 0.0,
    mirror: bool = False,
) -> Shape:
    """A rounded rectangle of half size `half`, rotated by `angle` degrees, optionally mirrored."""
    cx, cy = c
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    m = -1.0 if mirror else 1.0
    hx, hy = half[0] - corner, half[1] - corner

    def sdf(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        dx, dy = m * (xx - cx), yy - cy
        qx = np.abs(cos * dx + sin * dy) - hx
        qy = np.abs(-sin * dx + cos * dy) - hy
        outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
        return outside + np.minimum(np.maximum(qx, qy), 0) - corner

    e = math.hypot(*half) + 1
    return Shape((cy - e, cy + e, cx - e, cx + e), sdf, min(half))


def paint(
    canvas: np.ndarray,
    shape: Shape,
    color: RGB | np.ndarray | ColorFn,
    *,
    origin: tuple[int, int] = (0, 0),
    relief: float = 0.3,
    crease: float = 0.0,
    coverage: np.ndarray | None = None,
) -> None:
    """Paint `shape` over a float RGB `canvas` whose pixel (0, 0) sits at `origin` (y, x).

    `relief` darkens towards the edges like a rounded surface; `crease` (pixels) draws a dark
    outline; `coverage`, if given, accumulates the shape's alpha.
    """
    y0, y1, x0, x1 = shape.bbox
    oy, ox = origin
    r0, r1 = max(int(y0) - oy, 0), min(int(y1) + 1 - oy, canvas.shape[0])
    c0, c1 = max(int(x0) - ox, 0), min(int(x1) + 1 - ox, canvas.shape[1])
    if r0 >= r1 or c0 >= c1:
        return
    yy = (np.arange(r0 + oy, r1 + oy, dtype=np.float32) + 0.5)[:, None]
    xx = (np.arange(c0 + ox, c1 + ox, dtype=np.float32) + 0.5)[None, :]
    d = shape.sdf(yy, xx)
    alpha = np.clip(0.5 - d, 0.0, 1.0)
    shade = (1 - relief) + relief * np.sqrt(np.clip(-d / max(shape.depth, 1e-3), 0.0, 1.0))
    if crease:
        shade = shade * np.where(d > -crease, 0.7, 1.0)
    col = color(yy, xx) if callable(color) else np.asarray(color, np.float32)
    region = canvas[r0:r1, c0:c1]
    a = alpha[..., None]
    region *= 1 - a
    region += a * shade[..., None] * col
    if coverage is not None:
        np.maximum(coverage[r0:r1, c0:c1], alpha, out=coverage[r0:r1, c0:c1])


def noise_field(rng: np.random.Generator, h: int, w: int, cell: tuple[float, float]) -> np.ndarray:
    """Smooth noise (about unit variance): a random grid of `cell` (y, x) pixels, upsampled."""
    gh, gw = max(int(h / cell[0]) + 2, 2), max(int(w / cell[1]) + 2, 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC))


def fractal_noise(rng: np.random.Generator, h: int, w: int, cells: Sequence[float]) -> np.ndarray:
    """Multi-scale smooth noise: octaves of `cells` pixels, each half the weight of the last."""
    out = np.zeros((h, w), np.float32)
    for i, cell in enumerate(cells):
        out += noise_field(rng, h, w, (cell, cell)) * 0.5**i
    return out


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] to uint8."""
    scaled: np.ndarray = np.clip(image, 0.0, 1.0) * 255 + 0.5
    return scaled.astype(np.uint8)


def jitter(rng: np.random.Generator, color: RGB, amount: float) -> RGB:
    """`color` with each channel moved by up to `amount`, kept in [0, 1]."""
    r, g, b = np.clip(np.asarray(color) + rng.uniform(-amount, amount, 3), 0.0, 1.0)
    return (float(r), float(g), float(b))
