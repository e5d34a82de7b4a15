"""Rooms: one template per scene family, rendered once into an oversized backdrop.

A room is a wall (plain, striped or blotched), a floor (planks, tiles or carpet), sometimes
a corner with a side wall, and furniture or fixtures along the wall; windows also cast a
glow that the photo's lighting adds on top.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from tasks.simulation.drawing import (
    RGB,
    capsule,
    ellipse,
    fractal_noise,
    jitter,
    noise_field,
    paint,
    rounded_box,
    to_uint8,
)
from tasks.simulation.photos import ROOM_STREAM

_WALLS: tuple[RGB, ...] = (
    (0.86, 0.82, 0.74), (0.78, 0.80, 0.78), (0.70, 0.78, 0.86), (0.80, 0.85, 0.72),
    (0.92, 0.90, 0.86), (0.85, 0.74, 0.66), (0.58, 0.60, 0.64), (0.90, 0.84, 0.60),
)  # fmt: skip
_FLOORS: tuple[tuple[RGB, str], ...] = (
    ((0.55, 0.38, 0.24), "planks"), ((0.68, 0.52, 0.35), "planks"), ((0.38, 0.27, 0.20), "planks"),
    ((0.62, 0.62, 0.60), "tiles"), ((0.78, 0.74, 0.66), "tiles"), ((0.33, 0.37, 0.46), "carpet"),
    ((0.55, 0.50, 0.44), "carpet"),
)  # fmt: skip
_FURNITURE: tuple[RGB, ...] = (
    (0.45, 0.30, 0.18), (0.85, 0.84, 0.80), (0.25, 0.22, 0.20), (0.62, 0.46, 0.30),
    (0.35, 0.42, 0.50), (0.55, 0.20, 0.18), (0.30, 0.45, 0.32), (0.70, 0.66, 0.58),
)  # fmt: skip
# kind: (width range, height range) in units of the frame's short side; on the floor or wall
_ITEM_SIZE: dict[str, tuple[tuple[float, float], tuple[float, float], bool]] = {
    "window": ((0.40, 0.60), (0.32, 0.45), False),
    "door": ((0.20, 0.28), (0.55, 0.66), True),
    "shelf": ((0.25, 0.45), (0.38, 0.62), True),
    "cabinet": ((0.30, 0.50), (0.18, 0.28), True),
    "plant": ((0.10, 0.16), (0.22, 0.36), True),
    "sofa": ((0.60, 0.85), (0.20, 0.28), True),
    "lamp": ((0.08, 0.12), (0.42, 0.56), True),
    "picture": ((0.15, 0.30), (0.12, 0.24), False),
    "clock": ((0.08, 0.11), (0.08, 0.11), False),
}
_ITEM_WEIGHT = {"window": 3, "door": 2, "shelf": 3, "cabinet": 2, "plant": 2, "sofa": 2,
                "lamp": 1, "picture": 3, "clock": 1}  # fmt: skip


@dataclass(frozen=True)
class RoomItem:
    """A piece of furniture or a wall fixture; `box` is x0, y0, x1, y1 in backdrop pixels."""

    kind: str
    box: tuple[int, int, int, int]
    color: RGB


@dataclass(frozen=True)
class RoomLayout:
    """A room template: palette, wall/floor/ceiling lines (fractions), corner and items."""

    wall: RGB
    floor: RGB
    floor_style: str
    wallpaper: str
    floor_y: float
    ceiling_y: float
    corner: float  # x of a wall corner, side wall beyond it; < 0 for none
    corner_left: bool
    items: tuple[RoomItem, ...]


def room_layout(rng: np.random.Generator, width: int, height: int) -> RoomLayout:
    """Draw a room template for a backdrop of `width` x `height` pixels."""
    floor, style = _FLOORS[int(rng.integers(len(_FLOORS)))]
    floor_y = float(rng.uniform(0.6, 0.78) if width > height else rng.uniform(0.62, 0.74))
    corner = float(rng.uniform(0.08, 0.3)) if rng.random() < 0.5 else -1.0
    left = bool(rng.random() < 0.5)
    if corner < 0:
        span = (0.02, 0.98)
    else:
        span = (corner + 0.02, 0.98) if left else (0.02, 0.98 - corner)
    items = _room_items(rng, width, height, floor_y=floor_y, span=span)
    return RoomLayout(
        wall=jitter(rng, _WALLS[int(rng.integers(len(_WALLS)))], 0.05),
        floor=jitter(rng, floor, 0.04),
        floor_style=style,
        wallpaper=str(rng.choice(["plain", "plain", "stripes", "blotches"])),
        floor_y=floor_y,
        ceiling_y=float(rng.uniform(-0.1, 0.12)),
        corner=corner,
        corner_left=left,
        items=items,
    )


def _room_items(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    floor_y: float,
    span: tuple[float, float],
) -> tuple[RoomItem, ...]:
    kinds = list(_ITEM_WEIGHT)
    p = np.array([_ITEM_WEIGHT[k] for k in kinds], float)
    unit, base = min(width, height), int(floor_y * height)
    items: list[RoomItem] = []
    x = span[0] * width + rng.uniform(0, 0.08) * unit
    while True:
        kind = str(rng.choice(kinds, p=p / p.sum()))
        (w_lo, w_hi), (h_lo, h_hi), on_floor = _ITEM_SIZE[kind]
        w, h = rng.uniform(w_lo, w_hi) * unit, rng.uniform(h_lo, h_hi) * unit
        if x + w > span[1] * width:
            return tuple(items)
        y1 = base + 0.02 * unit if on_floor else base - rng.uniform(0.3, 0.45) * unit
        y0 = max(y1 - h, 0.02 * height)
        color = jitter(rng, _FURNITURE[int(rng.integers(len(_FURNITURE)))], 0.05)
        items.append(RoomItem(kind, (int(x), int(y0), int(x + w), int(y1)), color))
        x += w + rng.uniform(0.02, 0.2) * unit


@lru_cache(maxsize=16)
def room_backdrop(seed: int, room: int, width: int, height: int) -> tuple[Image.Image, np.ndarray]:
    """Render room `room` into an RGB backdrop and a window-glow map (both `width` x `height`)."""
    rng = np.random.default_rng([seed, ROOM_STREAM, room])
    layout = room_layout(rng, width, height)
    img = np.empty((height, width, 3), np.float32)
    _paint_shell(img, rng, layout)
    for item in layout.items:
        _ITEM_PAINTERS[item.kind](img, rng, item)
    return Image.fromarray(to_uint8(img)), _window_glow(layout, width, height)


def _shell_lines(layout: RoomLayout, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xx = (np.arange(w, dtype=np.float32) + 0.5) / w
    beyond: np.ndarray = np.zeros(w, np.float32)
    if layout.corner >= 0:
        past = (layout.corner - xx) if layout.corner_left else (xx - (1 - layout.corner))
        beyond = np.clip(past, 0, None) * (w / h)
    floor_line = (layout.floor_y + 0.55 * beyond) * h
    ceiling_line = (layout.ceiling_y - 0.35 * beyond) * h
    return beyond > 0, floor_line, ceiling_line


def _paint_shell(img: np.ndarray, rng: np.random.Generator, layout: RoomLayout) -> None:
    h, w = img.shape[:2]
    side, floor_line, ceiling_line = _shell_lines(layout, w, h)
    yy = np.arange(h, dtype=np.float32)[:, None] + 0.5
    wall = 1 + 0.045 * fractal_noise(rng, h, w, (h / 2, h / 6, h / 20))
    if layout.wallpaper == "stripes":
        period = rng.uniform(0.03, 0.08) * w
        wall += 0.05 * np.sign(np.sin(np.arange(w) * (2 * np.pi / period)))[None, :]
    elif layout.wallpaper == "blotches":
        wall += 0.06 * np.tanh(3 * noise_field(rng, h, w, (h / 40, h / 40)))
    wall *= np.where(side, 0.8, 1.0)[None, :]
    img[:] = wall[..., None] * np.asarray(layout.wall, np.float32)
    ceiling = yy < ceiling_line[None, :]
    img[ceiling] = np.asarray((0.93, 0.93, 0.91), np.float32) * wall[ceiling][:, None] * 0.97
    floor = yy > floor_line[None, :]
    img[floor] = _floor_texture(rng, layout, h, w)[floor]
    board = (yy > floor_line[None, :] - 0.015 * h) & ~floor
    img[board] = np.asarray((0.9, 0.89, 0.86), np.float32)


def _floor_texture(rng: np.random.Generator, layout: RoomLayout, h: int, w: int) -> np.ndarray:
    horizon = (layout.floor_y - 0.3) * h
    yy = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(w, dtype=np.float32)[None, :] + 0.5
    dist = np.maximum(yy - horizon, 1.0)
    depth, lateral = 0.3 * h / dist, (xx - rng.uniform(0.3, 0.7) * w) / dist
    shade = 1 + 0.06 * fractal_noise(rng, h, w, (h / 8, h / 30))
    if layout.floor_style == "planks":
        row = np.floor(depth * 9)
        col = np.floor(lateral * 1.2 + row * 0.37)
        tone = rng.uniform(0.85, 1.12, 97)[((row * 31 + col) % 97).astype(int)]
        grain = 1 + 0.07 * noise_field(rng, h, w, (2, 24))
        seams = (np.mod(depth * 9, 1) < 0.06) | (np.mod(lateral * 1.2 + row * 0.37, 1) < 0.015)
        shade = shade * tone * grain * np.where(seams, 0.7, 1.0)
    elif layout.floor_style == "tiles":
        grout = (np.mod(depth * 5, 1) < 0.05) | (np.mod(lateral * 2, 1) < 0.04)
        shade = np.where(grout, 0.75, shade)
    else:
        shade = shade + 0.08 * noise_field(rng, h, w, (1.5, 1.5))
    return shade[..., None] * np.asarray(layout.floor, np.float32)


def _window_glow(layout: RoomLayout, w: int, h: int) -> np.ndarray:
    glow = np.zeros((h, w), np.float32)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    for item in layout.items:
        if item.kind == "window":
            x0, y0, x1, y1 = item.box
            sx, sy = (x1 - x0) * 0.9, (y1 - y0) * 1.1
            gx, gy = (xx - (x0 + x1) / 2) / sx, (yy - (y0 + y1) / 2) / sy
            glow += np.exp(-0.5 * (gx * gx + gy * gy))
    return glow


def _region(img: np.ndarray, box: Iterable[float]) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = img.shape[:2]
    return img[max(y0, 0) : max(min(y1, h), 0), max(x0, 0) : max(min(x1, w), 0)]


def _fill(
    img: np.ndarray,
    box: Iterable[float],
    color: RGB,
    *,
    texture: float = 0.0,
    rng: np.random.Generator | None = None,
) -> None:
    region = _region(img, box)
    region[:] = np.asarray(color, np.float32)
    if texture and rng is not None and region.size:
        h, w = region.shape[:2]
        region *= 1 + texture * noise_field(rng, h, w, (max(h / 6, 1), max(w / 6, 1)))[..., None]


def _frame(img: np.ndarray, box: tuple[int, int, int, int], t: int, color: RGB) -> None:
    x0, y0, x1, y1 = box
    for edge in (
        (x0, y0, x1, y0 + t),
        (x0, y1 - t, x1, y1),
        (x0, y0, x0 + t, y1),
        (x1 - t, y0, x1, y1),
    ):
        _fill(img, edge, color)


def _shade(color: RGB, factor: float) -> RGB:
    return (color[0] * factor, color[1] * factor, color[2] * factor)


def _paint_window(img: np.ndarray, rng: np.random.Generator, item: RoomItem) -> None:
    x0, y0, x1, y1 = item.box
    cw = (x1 - x0) // 6
    for cx0 in (x0, x1 - cw):  # curtains
        region = _region(img, (cx0, y0 - 2, cx0 + cw, y1 + 6))
        folds = 0.8 + 0.2 * np.sin(np.arange(region.shape[1]) * rng.uniform(0.6, 1.4))
        region[:] = np.asarray(item.color, np.float32) * folds[None, :, None]
    gx0, gx1 = x0 + cw, x1 - cw
    sky = _region(img, (gx0, y0, gx1, y1))
    h, w = sky.shape[:2]
    sky[:] = np.linspace(1.0, 0.86, max(h, 1), dtype=np.float32)[:, None, None] * np.asarray(
        (0.88, 0.94, 1.0), np.float32
    )
    trees = noise_field(rng, h, w, (max(h / 5, 1), max(h / 5, 1)))
    leafy = (trees + np.linspace(-1.5, 1.2, max(h, 1))[:, None]) > 0.4
    sky[leafy] = np.asarray((0.42, 0.55, 0.36), np.float32) * (0.9 + 0.1 * trees[leafy, None])
    t = max(2, (gx1 - gx0) // 18)
    _frame(img, (gx0, y0, gx1, y1), t, (0.94, 0.94, 0.92))
    _fill(img, ((gx0 + gx1) // 2 - t // 2, y0, (gx0 + gx1) // 2 + t // 2 + 1, y1), (0.94,) * 3)
    _fill(img, (gx0, (y0 + y1) // 2 - t // 2, gx1, (y0 + y1) // 2 + t // 2 + 1), (0.94,) * 3)


def _paint_door(img: np.ndarray, rng: np.random.Generator, item: RoomItem) -> None:
    x0, y0, x1, y1 = item.box
    _fill(img, item.box, item.color, texture=0.05, rng=rng)
    t = max(2, (x1 - x0) // 12)
    dark = _shade(item.color, 0.7)
    _frame(img, item.box, t, dark)
    rows = int(rng.integers(2, 5))
    ph = (y1 - y0 - 2 * t) / rows
    for i in range(rows):
        py0 = int(y0 + t + i * ph + ph * 0.12)
        _frame(img, (x0 + 2 * t, py0, x1 - 2 * t, int(py0 + ph * 0.76)), max(1, t // 2), dark)
    kx, ky, kr = x1 - 2.5 * t, (y0 + y1) * 0.55, max(1.5, t * 0.6)
    paint(img, ellipse((kx, ky), kr, kr), (0.8, 0.75, 0.55), relief=0.6)


def _paint_shelf(img: np.ndarray, rng: np.random.Generator, item: RoomItem) -> None:
    x0, y0, x1, y1 = item.box
    _fill(img, item.box, item.color, texture=0.05, rng=rng)
    t = max(2, (x1 - x0) // 20)
    _fill(img, (x0 + t, y0 + t, x1 - t, y1 - t), _shade(item.color, 0.55))
    rows = int(rng.integers(3, 6))
    sh = (y1 - y0 - t) / rows
    for i in range(rows):
        top, bottom = int(y0 + t + i * sh), int(y0 + (i + 1) * sh)
        x = x0 + t + int(rng.integers(0, 4))
        while x < x1 - 2 * t:
            bw = int(rng.integers(max(2, (x1 - x0) // 40), max(3, (x1 - x0) // 12)))
            if rng.random() < 0.85:
                bh = (bottom - top) * rng.uniform(0.55, 0.92)
                book = jitter(rng, (0.5, 0.5, 0.5), 0.35)
                _fill(img, (x, bottom - bh, min(x + bw, x1 - t), bottom), book)
            x += bw + int(rng.integers(0, 2))
        _fill(img, (x0, bottom, x1, bottom + t), item.color)


def _paint_cabinet(img: np.ndarray, rng: np.random.Generator, item: RoomItem) -> None:
    x0, y0, x1, y1 = item.box
    _fill(img, item.box, item.color, texture=0.06, rng=rng)
    rows, cols = int(rng.integers(2, 4)), int(rng.integers(1, 3))
    dark = _shade(item.color, 0.65)
    for i in range(rows):
        for j in range(cols):
            bx0, bx1 = x0 + (x1 - x0) * j / cols, x0 + (x1 - x0) * (j + 1) / cols
            by0, by1 = y0 + (y1 - y0) * i / rows, y0 + (y1 - y0) * (i + 1) / rows
            _frame(img, (int(bx0), int(by0), int(bx1), int(by1)), 1, dark)
            cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
            _fill(
                img,
                (cx - (bx1 - bx0) * 0.1, cy - 1, cx + (bx1 - bx0) * 0.1, cy + 1),
                (0.2, 0.2, 0.2),
            )


def _paint_plant(img: np.ndarray, rng: np.random.Generator, item: RoomItem) -> None:
    x0, y0, x1, y1 = item.box
    pot_top = y1 - (y1 - y0) * 0.3
    _fill(
        img,
        (x0 + (x1 - x0) * 0.2, pot_top, x1 - (x1 - x0) * 0.2, y1),
        item.color,
        texture=0.1,
        rng=rng,
    )
    for _ in range(int(rng.integers(10, 22))):
        cx = rng.uniform(x0, x1)
        cy = rng.uniform(y0 + (y1 - y0) * 0.1, pot_top)
        rx, ry = (x1 - x0) * rng.uniform(0.08, 0.2), (y1 - y0) * rng.uniform(0.04, 0.1)
        green = jitter(rng, (0.25, 0.48, 0.22), 0.08)
        paint(img, ellipse((cx, cy), rx, ry), green, relief=0.5)


def _paint_sofa(img: np.ndarray, rng: np.random.Generator, item: RoomItem) -> None:
    x0, y0, x1, y1 = item.box
    arm = (x1 - x0) * 0.08
    back = rounded_box(
        ((x0 + x1) / 2, y0 + (y1 - y0) * 0.35),
        ((x1 - x0) / 2 - arm, (y1 - y0) * 0.35),
        (y1 - y0) * 0.1,
    )
    paint(img, back, _shade(item.color, 0.9), relief=0.4)
    seat = ((x0 + x1) / 2, y0 + (y1 - y0) * 0.72)
    paint(
        img, rounded_box(seat, ((x1 - x0) / 2, (y1 - y0) * 0.28), arm * 0.6), item.color, relief=0.4
    )
    n = int(rng.integers(2, 4))
    for i in range(n):
        cx = x0 + arm + (x1 - x0 - 2 * arm) * (i + 0.5) / n
        cushion = rounded_box(
            (cx, y0 + (y1 - y0) * 0.38),
            ((x1 - x0 - 2 * arm) / n / 2.3, (y1 - y0) * 0.22),
            (y1 - y0) * 0.08,
        )
        paint(img, cushion, jitter(rng, item.color, 0.12), relief=0.5, crease=1.0)


def _paint_lamp(img: np.ndarray, rng: np.random.Generator, item: RoomItem) -> None:
    x0, y0, x1, y1 = item.box
    cx, t = (x0 + x1) / 2, max(1.0, (x1 - x0) * 0.06)
    _fill(img, (cx - t, y0 + (y1 - y0) * 0.25, cx + t, y1), (0.2, 0.2, 0.2))
    _fill(img, (cx - (x1 - x0) * 0.3, y1 - 2 * t, cx + (x1 - x0) * 0.3, y1), (0.2, 0.2, 0.2))
    shade_y1 = y0 + (y1 - y0) * 0.28
    for i, y in enumerate(np.arange(y0, shade_y1)):
        half = (x1 - x0) * (0.3 + 0.2 * i / max(shade_y1 - y0, 1))
        _fill(img, (cx - half, y, cx + half, y + 1), jitter(rng, (0.96, 0.92, 0.8), 0.01))


def _paint_picture(img: np.ndarray, rng: np.random.Generator, item: RoomItem) -> None:
    x0, y0, x1, y1 = item.box
    t = max(2, (x1 - x0) // 14)
    inner = _region(img, (x0 + t, y0 + t, x1 - t, y1 - t))
    h, w = inner.shape[:2]
    if h and w:
        cell = (max(h / 3, 1), max(w / 3, 1))
        art = np.stack([noise_field(rng, h, w, cell) for _ in range(3)], axis=-1)
        inner[:] = np.clip(0.5 + 0.25 * art, 0, 1)
    _frame(img, item.box, t, item.color)


def _paint_clock(img: np.ndarray, rng: np.random.Generator, item: RoomItem) -> None:
    x0, y0, x1, y1 = item.box
    c, r = ((x0 + x1) / 2, (y0 + y1) / 2), (x1 - x0) / 2
    paint(img, ellipse(c, r, r), item.color, relief=0.2)
    paint(img, ellipse(c, r * 0.85, r * 0.85), (0.95, 0.95, 0.93), relief=0.1)
    for length, angle in ((0.5, rng.uniform(0, 2 * np.pi)), (0.75, rng.uniform(0, 2 * np.pi))):
        tip = (c[0] + np.sin(angle) * r * length, c[1] - np.cos(angle) * r * length)
        paint(img, capsule(c, tip, max(r * 0.05, 0.5)), (0.1, 0.1, 0.1), relief=0.0)


_ITEM_PAINTERS: dict[str, Callable[[np.ndarray, np.random.Generator, RoomItem], None]] = {
    "window": _paint_window, "door": _paint_door, "shelf": _paint_shelf,
    "cabinet": _paint_cabinet, "plant": _paint_plant, "sofa": _paint_sofa, "lamp": _paint_lamp,
    "picture": _paint_picture, "clock": _paint_clock,
}  # fmt: skip
