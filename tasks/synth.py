"""Synthetic crowd batches modelled on HaGRID: photos, a submissions table and the truth.

``generate_batch`` writes ``photos/``, ``submissions.csv`` (the crowd table the pipeline
ingests) and ``truth.jsonl`` (what the pipeline is expected to decide for each file or row).

The photos are cheap stand-ins for real ones that behave like photographs under perceptual
hashing: an indoor room (walls, floor, furniture, sometimes a bright window), a person, and
hands drawn per gesture class. The room and the person are rendered at quarter resolution
with numpy and upscaled; the hands are drawn at full resolution and the whole picture gets
full-resolution grain and fine texture before JPEG encoding.

Planted on top of the originals: resubmissions (edited copies placed later in the table),
hard negatives (distinct photos of the same room, a "scene family") and broken or
ill-formed files. Everything is a pure function of the arguments: the same call writes the
same bytes, whatever the number of worker processes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
from PIL import Image, ImageChops, ImageFilter, ImageOps

__all__ = [
    "EXPECTED_REASON",
    "HAGRID_V1_GESTURES",
    "NO_GESTURE",
    "PROBLEM_KINDS",
    "RESUBMISSION_KINDS",
    "UNKNOWN_GESTURE",
    "PlannedFile",
    "SynthSummary",
    "generate_batch",
    "plan_batch",
]

HAGRID_V1_GESTURES: tuple[str, ...] = (
    "call", "dislike", "fist", "four", "like", "mute", "ok", "one", "palm", "peace",
    "peace_inverted", "rock", "stop", "stop_inverted", "three", "three2", "two_up",
    "two_up_inverted",
)  # fmt: skip
NO_GESTURE = "no_gesture"
UNKNOWN_GESTURE = "thumbs_sideways"

RESUBMISSION_KINDS: tuple[str, ...] = (
    "exact_resubmission", "recompressed", "resized", "cropped", "brightness", "png",
    "exif_rotated", "blurred", "mirrored",
)  # fmt: skip
PROBLEM_KINDS: tuple[str, ...] = (
    "corrupt", "truncated", "not_image", "zero_byte", "decompression_bomb", "too_small",
    "missing_file", "no_row", "unknown_gesture",
)  # fmt: skip
EXPECTED_REASON: dict[str, str | None] = {
    "original": None,
    "exact_resubmission": "exact_duplicate",
    "mirrored": "mirrored_duplicate",
    **dict.fromkeys(RESUBMISSION_KINDS[1:-1], "near_duplicate"),
    "corrupt": "unreadable",
    "truncated": "unreadable",
    "not_image": "not_an_image",
    "zero_byte": "empty_file",
    "decompression_bomb": "decompression_bomb",
    "too_small": "too_small",
    "missing_file": "missing_file",
    "no_row": "missing_metadata",
    "unknown_gesture": "unknown_gesture",
}

BOMB_SIDE = 15_000
TOO_SMALL_SIZE = (640, 480)
TABLE_COLUMNS = ("file", "user_id", "gesture", "submitted_at")

RGB = tuple[float, float, float]
Box = tuple[float, float, float, float]

# Independent random streams: np.random.default_rng([seed, STREAM, key]).
_PLAN_STREAM, _ROOM_STREAM, _PHOTO_STREAM, _DAMAGE_STREAM = 0, 1, 2, 3
_LOW_RES = 4  # the room and the person are rendered at 1/_LOW_RES of the photo size
_MARGIN = 0.07  # hands keep this fraction of the frame free on every side (crops cut <= 5%)
_EXIF_ORIENTATION = 0x0112
_STORE_FOR_ORIENTATION = {  # pixels stored so that an EXIF-aware viewer shows the picture
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Camera:
    """Where the camera looks into a room: zoom factor and view-centre shift (view fractions)."""

    zoom: float
    shift: tuple[float, float]


@dataclass(frozen=True)
class Lighting:
    """Per-photo light: gain, colour tint, brightness slopes across x/y, window glow, vignette."""

    gain: float
    tint: RGB
    slope: tuple[float, float]
    glow: float
    vignette: float


@dataclass(frozen=True)
class PhotoSpec:
    """Everything that decides one rendered photo; per-image detail comes from (seed, key)."""

    seed: int
    key: int
    size: tuple[int, int]  # displayed width, height
    room: int  # room template key: shared by a scene family
    camera: Camera
    lighting: Lighting
    skin: RGB
    hair: RGB
    gesture: str  # the pose of the leading hand
    leading_hand: str  # "left" or "right"
    free_hand: bool  # a second, relaxed hand fully in frame


@dataclass(frozen=True)
class PhotoGeometry:
    """The displayed size of a photo and its true hand boxes (HaGRID [x, y, w, h], relative)."""

    width: int
    height: int
    bboxes: tuple[Box, ...]
    labels: tuple[str, ...]
    leading_hand: str


@dataclass(frozen=True)
class Edit:
    """How a resubmission was made from its original."""

    kind: str
    quality: int = 90
    scale: float = 1.0
    crop: Box = (0.0, 0.0, 0.0, 0.0)  # fractions cut from the left, top, right, bottom
    factor: float = 1.0  # brightness
    radius: float = 0.0  # blur
    orientation: int = 1  # EXIF tag of an exif_rotated copy


@dataclass(frozen=True)
class PlannedFile:
    """One file and/or one table row of a batch, in table order."""

    file: str
    kind: str
    has_row: bool
    user_id: str | None
    gesture: str | None
    submitted_at: str | None
    scene_family: int | None
    photo: PhotoSpec | None = None
    quality: int = 90
    orientation: int = 1
    source_file: str | None = None
    same_worker: bool | None = None
    edit: Edit | None = None


@dataclass(frozen=True)
class SynthSummary:
    """What `generate_batch` wrote: paths and counts per kind."""

    out_dir: Path
    photos_dir: Path
    submissions_csv: Path
    truth_jsonl: Path
    n_rows: int
    n_files: int
    kinds: dict[str, int]


# ---------------------------------------------------------------------------------------------
# Hand poses


@dataclass(frozen=True)
class HandPose:
    """A hand in the canonical frame: a left hand, palm to the camera, fingers up, thumb at -x."""

    fingers: tuple[float, float, float, float]  # index..little: 0 folded, 1 straight
    spread: tuple[float, float, float, float]  # finger directions, degrees, + towards the little
    thumb: float  # 0 folded across the palm, 1 straight
    thumb_angle: float  # direction of the thumb, degrees; -90 points to -x
    rotation: float  # the whole hand, degrees clockwise
    ok_ring: bool = False  # index and thumb close a ring
    narrow: bool = False  # palm seen edge-on


_FOLDED = (0.0, 0.0, 0.0, 0.0)
_NONE = (0.0, 0.0, 0.0, 0.0)
_UP = HandPose((1, 1, 1, 1), (-2, 0, 1, 3), 1, -22, 0)  # stop
_V = HandPose((1, 1, 0, 0), (-13, 12, 0, 0), 0, 0, 0)  # peace
_TWO = HandPose((1, 1, 0, 0), (-1.5, 1.5, 0, 0), 0, 0, 0)  # two_up
_THUMB = HandPose(_FOLDED, _NONE, 1, -90, 90)  # like
POSES: dict[str, HandPose] = {
    "call": HandPose((0, 0, 0, 1), (0, 0, 0, 38), 1, -112, -15),
    "dislike": replace(_THUMB, rotation=-90),
    "fist": HandPose(_FOLDED, _NONE, 0, 0, 0),
    "four": HandPose((1, 1, 1, 1), (-7, -2, 3, 8), 0, 0, 0),
    "like": _THUMB,
    "mute": HandPose((1, 0, 0, 0), (3, 0, 0, 0), 0, 0, 0, narrow=True),
    "ok": HandPose((1, 1, 1, 1), (0, -3, 6, 15), 1, -40, 0, ok_ring=True),
    "one": HandPose((1, 0, 0, 0), _NONE, 0, 0, 0),
    "palm": HandPose((1, 1, 1, 1), (-17, -5, 7, 19), 1, -68, 0),
    "peace": _V,
    "peace_inverted": replace(_V, rotation=180),
    "rock": HandPose((1, 0, 0, 1), (-7, 0, 0, 12), 0, 0, 0),
    "stop": _UP,
    "stop_inverted": replace(_UP, rotation=180),
    "three": HandPose((1, 1, 0, 0), (-8, 6, 0, 0), 1, -72, 0),
    "three2": HandPose((1, 1, 1, 0), (-9, 0, 9, 0), 0, 0, 0),
    "two_up": _TWO,
    "two_up_inverted": replace(_TWO, rotation=180),
    NO_GESTURE: HandPose((0.55, 0.5, 0.45, 0.45), (-6, -2, 3, 8), 0.5, -35, 180),
    UNKNOWN_GESTURE: replace(_THUMB, rotation=0),
}

# Canonical hand geometry, in units of the hand length (wrist crease to middle fingertip).
_FINGER_BASE = ((-0.15, -0.20), (-0.05, -0.23), (0.05, -0.22), (0.145, -0.18))
_FINGER_LEN = (0.40, 0.45, 0.42, 0.33)
_FINGER_R = (0.047, 0.05, 0.046, 0.04)
_PHALANX = (0.45, 0.30, 0.25)
_THUMB_BASE = (-0.17, 0.10)


# ---------------------------------------------------------------------------------------------
# Shapes: signed distance fields painted with soft edges, relief shading and creases


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


def _shade(color: RGB, factor: float) -> RGB:
    return (color[0] * factor, color[1] * factor, color[2] * factor)


def _jitter(rng: np.random.Generator, color: RGB, amount: float) -> RGB:
    r, g, b = np.clip(np.asarray(color) + rng.uniform(-amount, amount, 3), 0.0, 1.0)
    return (float(r), float(g), float(b))


# ---------------------------------------------------------------------------------------------
# Rooms: one template per scene family, rendered once into an oversized backdrop

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
        wall=_jitter(rng, _WALLS[int(rng.integers(len(_WALLS)))], 0.05),
        floor=_jitter(rng, floor, 0.04),
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
        color = _jitter(rng, _FURNITURE[int(rng.integers(len(_FURNITURE)))], 0.05)
        items.append(RoomItem(kind, (int(x), int(y0), int(x + w), int(y1)), color))
        x += w + rng.uniform(0.02, 0.2) * unit


@lru_cache(maxsize=16)
def room_backdrop(seed: int, room: int, width: int, height: int) -> tuple[Image.Image, np.ndarray]:
    """Render room `room` into an RGB backdrop and a window-glow map (both `width` x `height`)."""
    rng = np.random.default_rng([seed, _ROOM_STREAM, room])
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
                book = _jitter(rng, (0.5, 0.5, 0.5), 0.35)
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
        green = _jitter(rng, (0.25, 0.48, 0.22), 0.08)
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
        paint(img, cushion, _jitter(rng, item.color, 0.12), relief=0.5, crease=1.0)


def _paint_lamp(img: np.ndarray, rng: np.random.Generator, item: RoomItem) -> None:
    x0, y0, x1, y1 = item.box
    cx, t = (x0 + x1) / 2, max(1.0, (x1 - x0) * 0.06)
    _fill(img, (cx - t, y0 + (y1 - y0) * 0.25, cx + t, y1), (0.2, 0.2, 0.2))
    _fill(img, (cx - (x1 - x0) * 0.3, y1 - 2 * t, cx + (x1 - x0) * 0.3, y1), (0.2, 0.2, 0.2))
    shade_y1 = y0 + (y1 - y0) * 0.28
    for i, y in enumerate(np.arange(y0, shade_y1)):
        half = (x1 - x0) * (0.3 + 0.2 * i / max(shade_y1 - y0, 1))
        _fill(img, (cx - half, y, cx + half, y + 1), _jitter(rng, (0.96, 0.92, 0.8), 0.01))


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


# ---------------------------------------------------------------------------------------------
# People and hands (positions in displayed full-resolution pixels)


@dataclass(frozen=True)
class HandPlacement:
    """A hand in a photo: palm centre (px), length (px), rotation, handedness, pose and label."""

    center: tuple[float, float]
    length: float
    rotation: float
    mirror: bool  # True for a right hand (the canonical frame is a left hand)
    outward: int  # +1 if the hand is on the image-right side of its body, else -1
    pose: HandPose
    label: str


@dataclass(frozen=True)
class Figure:
    """A person: face centre and head height (px), clothes, and the visible hands."""

    head: tuple[float, float]
    head_h: float
    hands: tuple[HandPlacement, ...]  # the gesture hand first
    clothes: RGB
    trousers: RGB
    pattern: str
    long_sleeves: bool


_SKINS: tuple[RGB, ...] = (
    (0.96, 0.80, 0.69), (0.92, 0.74, 0.60), (0.85, 0.65, 0.50), (0.76, 0.57, 0.42),
    (0.62, 0.44, 0.30), (0.48, 0.33, 0.22), (0.36, 0.24, 0.16),
)  # fmt: skip
_HAIRS: tuple[RGB, ...] = (
    (0.10, 0.08, 0.07), (0.25, 0.16, 0.10), (0.42, 0.28, 0.16), (0.80, 0.68, 0.45),
    (0.60, 0.60, 0.60), (0.55, 0.25, 0.12),
)  # fmt: skip
_CLOTHES: tuple[RGB, ...] = (
    (0.15, 0.2, 0.4), (0.7, 0.1, 0.12), (0.9, 0.9, 0.88), (0.12, 0.12, 0.12), (0.2, 0.5, 0.3),
    (0.85, 0.65, 0.2), (0.5, 0.5, 0.55), (0.45, 0.3, 0.6), (0.3, 0.6, 0.8), (0.9, 0.5, 0.6),
)  # fmt: skip


def hand_point(hand: HandPlacement, x: float, y: float) -> tuple[float, float]:
    """Map canonical hand coordinates (hand-length units) to image pixels."""
    t = math.radians(hand.rotation)
    rx, ry = math.cos(t) * x - math.sin(t) * y, math.sin(t) * x + math.cos(t) * y
    m = -1.0 if hand.mirror else 1.0
    return hand.center[0] + m * rx * hand.length, hand.center[1] + ry * hand.length


def plan_figure(spec: PhotoSpec, rng: np.random.Generator) -> Figure:
    """Place a person and their hands in the frame of `spec` (hands fully in frame)."""
    width, height = spec.size
    frac = math.exp(rng.uniform(math.log(0.03), math.log(0.15)))  # hand box width / image width
    length = min(frac * width / 0.6, min(width, height) * (1 - 2 * _MARGIN) / 1.6)
    head_h = length / 0.78
    side = -1 if spec.leading_hand == "right" else 1
    hx, hy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.22, 0.5) * height
    hands = [_gesture_hand(spec, rng, (hx, hy), head_h, side, length)]
    if spec.free_hand:
        hands.append(_free_hand(rng, (hx, hy), head_h, -side, length))
    dx, dy = _fit_shift(hands, width, height)
    hands = [
        _clamp_hand(replace(h, center=(h.center[0] + dx, h.center[1] + dy)), width, height)
        for h in hands
    ]
    return Figure(
        head=(hx + dx, hy + dy),
        head_h=head_h,
        hands=tuple(hands),
        clothes=_jitter(rng, _CLOTHES[int(rng.integers(len(_CLOTHES)))], 0.06),
        trousers=_jitter(rng, _CLOTHES[int(rng.integers(len(_CLOTHES)))], 0.06)
        if rng.random() < 0.5
        else _jitter(rng, (0.15, 0.18, 0.3), 0.05),
        pattern=str(rng.choice(["plain", "plain", "stripes", "checks"])),
        long_sleeves=bool(rng.random() < 0.5),
    )


def _gesture_hand(
    spec: PhotoSpec,
    rng: np.random.Generator,
    head: tuple[float, float],
    head_h: float,
    side: int,
    length: float,
) -> HandPlacement:
    hx, hy = head
    if spec.gesture == "mute":
        center = (hx + side * 0.04 * head_h, hy + 0.2 * head_h)
    elif spec.gesture == "call":
        center = (hx + side * 0.78 * head_h, hy + 0.08 * head_h)
    else:
        center = (hx + side * rng.uniform(1.05, 1.6) * head_h, hy + rng.uniform(-0.4, 0.9) * head_h)
    pose = POSES[spec.gesture]
    return HandPlacement(
        center=center,
        length=length,
        rotation=pose.rotation + rng.uniform(-12, 12),
        mirror=spec.leading_hand == "right",
        outward=side,
        pose=pose,
        label=spec.gesture,
    )


def _free_hand(
    rng: np.random.Generator, head: tuple[float, float], head_h: float, side: int, length: float
) -> HandPlacement:
    hx, hy = head
    center = (hx + side * rng.uniform(1.0, 1.5) * head_h, hy + rng.uniform(1.4, 2.6) * head_h)
    pose = POSES[NO_GESTURE]
    return HandPlacement(
        center=center,
        length=length,
        rotation=pose.rotation + rng.uniform(-35, 35),
        mirror=side < 0,
        outward=side,
        pose=pose,
        label=NO_GESTURE,
    )


def _hand_limits(hand: HandPlacement, width: int, height: int) -> tuple[float, ...]:
    reach = 0.78 * hand.length
    return (
        _MARGIN * width + reach,
        (1 - _MARGIN) * width - reach,
        _MARGIN * height + reach,
        (1 - _MARGIN) * height - reach,
    )


def _fit_shift(hands: Sequence[HandPlacement], width: int, height: int) -> tuple[float, float]:
    shift = []
    for axis in (0, 1):
        lo = max(_hand_limits(h, width, height)[2 * axis] - h.center[axis] for h in hands)
        hi = min(_hand_limits(h, width, height)[2 * axis + 1] - h.center[axis] for h in hands)
        shift.append(min(max(0.0, lo), hi) if lo <= hi else (lo + hi) / 2)
    return shift[0], shift[1]


def _clamp_hand(hand: HandPlacement, width: int, height: int) -> HandPlacement:
    x_lo, x_hi, y_lo, y_hi = _hand_limits(hand, width, height)
    x, y = hand.center
    return replace(hand, center=(min(max(x, x_lo), x_hi), min(max(y, y_lo), y_hi)))


def hand_shapes(hand: HandPlacement) -> list[tuple[Shape, float, bool]]:
    """The shapes of a hand, back to front: (shape, skin tone factor, counts for the box)."""
    pose, length = hand.pose, hand.length

    def pt(x: float, y: float) -> tuple[float, float]:
        return hand_point(hand, x, y)

    half = (0.12 if pose.narrow else 0.2, 0.21)
    shapes = [(capsule(pt(0, 0.12), pt(0, 0.46), 0.14 * length), 0.95, False)]
    palm = rounded_box(
        pt(0, 0),
        (half[0] * length, half[1] * length),
        0.08 * length,
        angle=hand.rotation,
        mirror=hand.mirror,
    )
    shapes.append((palm, 1.02, True))
    squeeze = 0.55 if pose.narrow else 1.0
    for i in range(4):
        base = (_FINGER_BASE[i][0] * squeeze, _FINGER_BASE[i][1])
        if pose.ok_ring and i == 0:
            shapes += _ok_ring(hand, base)
        else:
            shapes += _finger(hand, i, base)
    shapes += _thumb(hand)
    return shapes


def _finger(
    hand: HandPlacement, i: int, base: tuple[float, float]
) -> list[tuple[Shape, float, bool]]:
    ext, length = hand.pose.fingers[i], hand.length
    r = _FINGER_R[i] * length
    if ext <= 0:  # folded: a knuckle and the finger lying over the palm
        knuckle = capsule(
            hand_point(hand, base[0], base[1] + 0.02),
            hand_point(hand, base[0], base[1] - 0.05),
            r * 1.1,
        )
        curled = capsule(
            hand_point(hand, base[0], base[1] + 0.04),
            hand_point(hand, base[0] * 0.9, base[1] + 0.15),
            r,
        )
        return [(knuckle, 0.97, True), (curled, 0.9, True)]
    a = math.radians(hand.pose.spread[i])
    dx, dy = math.sin(a), -math.cos(a)
    x, y = base
    shapes = []
    for k, part in enumerate(_PHALANX):
        step = _FINGER_LEN[i] * part * (0.3 + 0.7 * ext)
        nx, ny = x + dx * step, y + dy * step
        shapes.append(
            (
                capsule(hand_point(hand, x, y), hand_point(hand, nx, ny), r * (1 - 0.06 * k)),
                0.98 - 0.02 * k,
                True,
            )
        )
        x, y = nx, ny
    return shapes


def _ok_ring(hand: HandPlacement, base: tuple[float, float]) -> list[tuple[Shape, float, bool]]:
    r, length = _FINGER_R[0] * hand.length, hand.length
    centre = (base[0] - 0.07, base[1] - 0.12)
    stem = capsule(hand_point(hand, *base), hand_point(hand, base[0] - 0.02, base[1] - 0.1), r)
    loop = ring(hand_point(hand, *centre), 0.09 * length, r * 0.95)
    thumb = capsule(
        hand_point(hand, *_THUMB_BASE),
        hand_point(hand, centre[0] - 0.06, centre[1] + 0.07),
        0.055 * length,
    )
    return [(stem, 0.97, True), (loop, 0.96, True), (thumb, 0.97, True)]


def _thumb(hand: HandPlacement) -> list[tuple[Shape, float, bool]]:
    pose, length = hand.pose, hand.length
    if pose.ok_ring:
        return []
    x, y = _THUMB_BASE
    if pose.thumb <= 0:  # folded across the palm
        mid, tip = (-0.07, 0.0), (0.06, -0.06)
        return [
            (capsule(hand_point(hand, x, y), hand_point(hand, *mid), 0.058 * length), 0.97, True),
            (capsule(hand_point(hand, *mid), hand_point(hand, *tip), 0.052 * length), 0.95, True),
        ]
    a = math.radians(pose.thumb_angle)
    dx, dy = math.sin(a), -math.cos(a)
    shapes = []
    for k, step in enumerate((0.2, 0.17)):
        step *= 0.45 + 0.55 * pose.thumb
        nx, ny = x + dx * step, y + dy * step
        shapes.append(
            (
                capsule(
                    hand_point(hand, x, y), hand_point(hand, nx, ny), (0.06 - 0.006 * k) * length
                ),
                0.97,
                True,
            )
        )
        x, y = nx, ny
    return shapes


def paint_hand(
    image: np.ndarray, hand: HandPlacement, skin: np.ndarray
) -> tuple[int, int, int, int]:
    """Draw `hand` into a uint8 image; return its true pixel box (x0, y0, x1, y1)."""
    height, width = image.shape[:2]
    (cx, cy), half = hand.center, 0.85 * hand.length + 3
    y0, y1 = max(int(cy - half), 0), min(int(cy + half) + 1, height)
    x0, x1 = max(int(cx - half), 0), min(int(cx + half) + 1, width)
    patch = image[y0:y1, x0:x1].astype(np.float32) / 255
    cover = np.zeros(patch.shape[:2], np.float32)
    for shape, tone, counts in hand_shapes(hand):
        paint(
            patch,
            shape,
            skin * tone,
            origin=(y0, x0),
            relief=0.35,
            crease=1.3,
            coverage=cover if counts else None,
        )
    image[y0:y1, x0:x1] = to_uint8(patch)
    rows, cols = np.flatnonzero(cover.max(axis=1) > 0.5), np.flatnonzero(cover.max(axis=0) > 0.5)
    return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1


def _arm_path(
    hand: HandPlacement, head_h: float, shoulder: tuple[float, float]
) -> list[tuple[float, float]]:
    """Shoulder, elbow, wrist: a two-link arm bent downwards; a hand close to the shoulder in
    the picture means an arm pointing at the camera, so the links shrink (foreshortening)."""
    wrist = hand_point(hand, 0, 0.3)
    dx, dy = wrist[0] - shoulder[0], wrist[1] - shoulder[1]
    d = max(math.hypot(dx, dy), 1e-3)
    upper = fore = min(max(0.62 * d, 0.3 * head_h), 1.3 * head_h)
    d = min(max(d, 1e-3), 2 * upper - 1e-3)
    bend = math.acos((upper * upper + d * d - fore * fore) / (2 * upper * d))
    base = math.atan2(dy, dx)
    elbows = [
        (
            shoulder[0] + upper * math.cos(base + s * bend),
            shoulder[1] + upper * math.sin(base + s * bend),
        )
        for s in (-1, 1)
    ]
    return [shoulder, max(elbows, key=lambda e: e[1]), wrist]


def paint_figure(canvas: np.ndarray, figure: Figure, skin: RGB, hair: RGB, scale: float) -> None:
    """Paint the body of `figure` (not the hands) on a low-resolution canvas (`scale` x px)."""
    (hx, hy), hh = (figure.head[0] * scale, figure.head[1] * scale), figure.head_h * scale
    shoulder_y = hy + 0.82 * hh
    raised = {h.outward for h in figure.hands}
    for side in (-1, 1):
        if side not in raised:  # an arm hanging down, the hand in a pocket
            path = [
                (hx + side * 0.72 * hh, shoulder_y),
                (hx + side * 0.98 * hh, shoulder_y + 1.3 * hh),
                (hx + side * 0.62 * hh, shoulder_y + 2.5 * hh),
            ]
            _paint_arm(canvas, path, hh, figure, skin)
    for side in (-1, 1):
        leg = capsule(
            (hx + side * 0.33 * hh, hy + 3.6 * hh), (hx + side * 0.4 * hh, hy + 7.4 * hh), 0.3 * hh
        )
        paint(canvas, leg, figure.trousers, relief=0.35, crease=0.8)
    paint(canvas, capsule((hx, hy + 0.3 * hh), (hx, hy + 0.8 * hh), 0.16 * hh), skin, relief=0.4)
    torso = rounded_box((hx, shoulder_y + 1.45 * hh), (0.8 * hh, 1.55 * hh), 0.35 * hh)
    paint(canvas, torso, _clothes_color(figure, hh), relief=0.35, crease=0.8)
    _paint_head(canvas, (hx, hy), hh, skin, hair)
    for hand in figure.hands:
        path = [
            (x * scale, y * scale)
            for x, y in _arm_path(
                hand,
                figure.head_h,
                (
                    figure.head[0] + hand.outward * 0.72 * figure.head_h,
                    figure.head[1] + 0.82 * figure.head_h,
                ),
            )
        ]
        _paint_arm(canvas, path, hh, figure, skin)


def _paint_arm(
    canvas: np.ndarray, path: list[tuple[float, float]], hh: float, figure: Figure, skin: RGB
) -> None:
    paint(canvas, capsule(path[0], path[1], 0.2 * hh), figure.clothes, relief=0.4, crease=0.8)
    forearm = figure.clothes if figure.long_sleeves else skin
    paint(canvas, capsule(path[1], path[2], 0.15 * hh), forearm, relief=0.4, crease=0.8)


def _clothes_color(figure: Figure, hh: float) -> RGB | ColorFn:
    base = np.asarray(figure.clothes, np.float32)
    if figure.pattern == "plain":
        return figure.clothes
    period = max(0.28 * hh, 2.0)

    def color(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        bands = np.sin(yy * (2 * np.pi / period)) > 0
        if figure.pattern == "checks":
            bands = bands ^ (np.sin(xx * (2 * np.pi / period)) > 0)
        return base * np.where(bands, 1.0, 0.72)[..., None]

    return color


def _paint_head(
    canvas: np.ndarray, c: tuple[float, float], hh: float, skin: RGB, hair: RGB
) -> None:
    hx, hy = c
    paint(canvas, ellipse((hx, hy - 0.08 * hh), 0.42 * hh, 0.5 * hh), hair, relief=0.3)
    for side in (-1, 1):
        paint(canvas, ellipse((hx + side * 0.37 * hh, hy + 0.02 * hh), 0.06 * hh, 0.11 * hh), skin)
    paint(canvas, ellipse((hx, hy + 0.04 * hh), 0.36 * hh, 0.47 * hh), skin, relief=0.35)
    paint(canvas, ellipse((hx, hy - 0.36 * hh), 0.36 * hh, 0.16 * hh), hair, relief=0.2)
    dark = (0.12, 0.09, 0.08)
    for side in (-1, 1):
        paint(canvas, ellipse((hx + side * 0.14 * hh, hy - 0.04 * hh), 0.055 * hh, 0.03 * hh), dark)
        paint(canvas, ellipse((hx + side * 0.14 * hh, hy - 0.12 * hh), 0.08 * hh, 0.018 * hh), hair)
    paint(canvas, ellipse((hx, hy + 0.26 * hh), 0.11 * hh, 0.03 * hh), (0.55, 0.22, 0.2))


# ---------------------------------------------------------------------------------------------
# Photos


def light_field(light: Lighting, yy: np.ndarray | float, xx: np.ndarray | float) -> np.ndarray:
    """RGB light multiplier at relative image positions `yy`, `xx` (in [0, 1])."""
    level = light.gain * (1 + light.slope[0] * (xx - 0.5) + light.slope[1] * (yy - 0.5))
    level = level * (1 - light.vignette * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2))
    return np.asarray(level, np.float32)[..., None] * np.asarray(light.tint, np.float32)


def _camera_view(spec: PhotoSpec, lw: int, lh: int) -> tuple[np.ndarray, np.ndarray]:
    bw, bh = round(lw * 1.35), round(lh * 1.35)
    backdrop, glow = room_backdrop(spec.seed, spec.room, bw, bh)
    cw, ch = bw / 1.3 / spec.camera.zoom, bh / 1.3 / spec.camera.zoom
    cx = min(max(bw / 2 + spec.camera.shift[0] * cw, cw / 2), bw - cw / 2)
    cy = min(max(bh / 2 + spec.camera.shift[1] * ch, ch / 2), bh - ch / 2)
    box = (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)
    view = backdrop.resize((lw, lh), Image.Resampling.BILINEAR, box=box)
    glow_view = Image.fromarray(glow).resize((lw, lh), Image.Resampling.BILINEAR, box=box)
    return np.asarray(view, np.float32) / 255, np.asarray(glow_view)


def _scene(spec: PhotoSpec, figure: Figure) -> tuple[np.ndarray, np.ndarray]:
    """The lit low-resolution room and body, and the window glow added to it."""
    width, height = spec.size
    lw, lh = max(width // _LOW_RES, 16), max(height // _LOW_RES, 16)
    canvas, glow = _camera_view(spec, lw, lh)
    canvas = canvas.copy()
    paint_figure(canvas, figure, spec.skin, spec.hair, lw / width)
    yy = (np.arange(lh, dtype=np.float32)[:, None] + 0.5) / lh
    xx = (np.arange(lw, dtype=np.float32)[None, :] + 0.5) / lw
    canvas *= light_field(spec.lighting, yy, xx)
    glow = spec.lighting.glow * 0.35 * glow
    canvas += glow[..., None]
    return canvas, glow


def _add_grain(image: Image.Image, rng: np.random.Generator, gain: float) -> Image.Image:
    """Add sensor-like grain and fine mottled texture at full resolution (cheap, uint8 only).

    Grain: a sum of three random bytes shifted down (near-Gaussian, sd ~4, more in dark
    pictures); mottle: half-resolution random levels upsampled (sd ~3).
    """
    width, height = image.size
    raw = np.frombuffer(rng.bytes(3 * width * height), np.uint8).reshape(3, height, width)
    shift = 5 if gain > 0.9 else 4
    grain = (raw[0] >> shift) + (raw[1] >> shift) + (raw[2] >> 5)
    half = np.frombuffer(rng.bytes((width // 2) * (height // 2)), np.uint8)
    mottle = Image.fromarray(half.reshape(height // 2, width // 2) >> 4)
    noise = Image.fromarray(
        grain + np.asarray(mottle.resize((width, height), Image.Resampling.BILINEAR))
    )
    mean = 2 * ((2 ** (8 - shift) - 1) / 2) + 3.5 + 7.5
    return ImageChops.add(image, Image.merge("RGB", (noise, noise, noise)), 1.0, -round(mean))


def render_photo(spec: PhotoSpec) -> tuple[Image.Image, PhotoGeometry]:
    """Render the displayed picture of `spec` and its true hand boxes."""
    rng = np.random.default_rng([spec.seed, _PHOTO_STREAM, spec.key])
    width, height = spec.size
    figure = plan_figure(spec, rng)
    low, glow = _scene(spec, figure)
    full = np.array(
        Image.fromarray(to_uint8(low)).resize((width, height), Image.Resampling.BICUBIC)
    )
    boxes, labels = [], []
    for hand in figure.hands:
        u, v = hand.center[0] / width, hand.center[1] / height
        lit = light_field(spec.lighting, v, u).reshape(3)
        glow_here = glow[
            min(int(v * glow.shape[0]), glow.shape[0] - 1),
            min(int(u * glow.shape[1]), glow.shape[1] - 1),
        ]
        x0, y0, x1, y1 = paint_hand(full, hand, np.asarray(spec.skin, np.float32) * lit + glow_here)
        boxes.append(_relative_box((x0, y0, x1 - x0, y1 - y0), width, height))
        labels.append(hand.label)
    picture = _add_grain(Image.fromarray(full), rng, spec.lighting.gain)
    return picture, PhotoGeometry(width, height, tuple(boxes), tuple(labels), spec.leading_hand)


def _relative_box(box: Box, width: int, height: int) -> Box:
    x, y, w, h = box
    return (round(x / width, 6), round(y / height, 6), round(w / width, 6), round(h / height, 6))


def encode_jpeg(image: Image.Image, *, quality: int, orientation: int = 1) -> bytes:
    """JPEG bytes of a displayed picture; with `orientation` != 1 the pixels are stored rotated
    and tagged so that an EXIF-aware viewer shows `image`."""
    buf = io.BytesIO()
    if orientation == 1:
        image.save(buf, "JPEG", quality=quality)
        return buf.getvalue()
    exif = Image.Exif()
    exif[_EXIF_ORIENTATION] = orientation
    stored = image.transpose(_STORE_FOR_ORIENTATION[orientation])
    stored.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def damage(data: bytes, how: str, *, seed: int) -> bytes:
    """Break JPEG bytes: "corrupt" overwrites all after ~600 bytes with garbage (no 0xFF, so no
    marker survives and decoding fails); "truncated" keeps the first 60%."""
    if how == "truncated":
        return data[: int(len(data) * 0.6)]
    start = min(600, data.find(b"\xff\xda") if b"\xff\xda" in data else 600)
    garbage = np.random.default_rng([seed, _DAMAGE_STREAM]).integers(0, 255, len(data) - start)
    return data[:start] + garbage.astype(np.uint8).tobytes()


@dataclass(frozen=True)
class PhotoJob:
    """Render one photo and write it: an original or a problem file made from a photo."""

    spec: PhotoSpec
    path: Path
    quality: int
    orientation: int = 1
    damage: str | None = None


def run_photo_job(job: PhotoJob) -> PhotoGeometry:
    """Render, encode (and maybe damage) one photo; return its geometry."""
    picture, geometry = render_photo(job.spec)
    data = encode_jpeg(picture, quality=job.quality, orientation=job.orientation)
    if job.damage:
        data = damage(data, job.damage, seed=job.spec.seed * 1_000_003 + job.spec.key)
    job.path.write_bytes(data)
    return geometry


# ---------------------------------------------------------------------------------------------
# Resubmissions: edits of an original's displayed picture, and what they do to the boxes


def crop_pixels(width: int, height: int, crop: Box) -> tuple[int, int, int, int]:
    """Pixels cut from the left, top, right, bottom for `crop` fractions."""
    left, top, right, bottom = crop
    return (round(left * width), round(top * height), round(right * width), round(bottom * height))


def edited_size(width: int, height: int, edit: Edit) -> tuple[int, int]:
    """Displayed size of a resubmission made by `edit` from a `width` x `height` original."""
    if edit.kind == "resized":
        return round(width * edit.scale), round(height * edit.scale)
    if edit.kind == "cropped":
        left, top, right, bottom = crop_pixels(width, height, edit.crop)
        return width - left - right, height - top - bottom
    return width, height


def edited_geometry(geometry: PhotoGeometry, edit: Edit) -> PhotoGeometry:
    """The true boxes of a resubmission (mirroring also swaps the apparent leading hand)."""
    width, height = edited_size(geometry.width, geometry.height, edit)
    boxes = geometry.bboxes
    leading = geometry.leading_hand
    if edit.kind == "mirrored":
        boxes = tuple((round(1 - x - w, 6), y, w, h) for x, y, w, h in boxes)
        leading = {"left": "right", "right": "left"}.get(leading, leading)
    elif edit.kind == "cropped":
        left, top, _, _ = crop_pixels(geometry.width, geometry.height, edit.crop)
        boxes = tuple(_crop_box(b, geometry, (left, top), (width, height)) for b in boxes)
    return replace(geometry, width=width, height=height, bboxes=boxes, leading_hand=leading)


def _crop_box(
    box: Box, geometry: PhotoGeometry, cut: tuple[int, int], size: tuple[int, int]
) -> Box:
    x0 = max(box[0] * geometry.width - cut[0], 0.0)
    y0 = max(box[1] * geometry.height - cut[1], 0.0)
    x1 = min((box[0] + box[2]) * geometry.width - cut[0], size[0])
    y1 = min((box[1] + box[3]) * geometry.height - cut[1], size[1])
    return _relative_box((x0, y0, x1 - x0, y1 - y0), size[0], size[1])


def apply_edit(image: Image.Image, edit: Edit) -> Image.Image:
    """The displayed picture of a resubmission (before encoding)."""
    if edit.kind == "resized":
        return image.resize(edited_size(*image.size, edit), Image.Resampling.LANCZOS)
    if edit.kind == "cropped":
        left, top, right, bottom = crop_pixels(*image.size, edit.crop)
        return image.crop((left, top, image.width - right, image.height - bottom))
    if edit.kind == "brightness":
        return image.point(lambda v: min(255, round(v * edit.factor)))
    if edit.kind == "blurred":
        return image.filter(ImageFilter.GaussianBlur(edit.radius))
    if edit.kind == "mirrored":
        return ImageOps.mirror(image)
    return image


@dataclass(frozen=True)
class EditJob:
    """Write one resubmission of `source` to `path`."""

    source: Path
    path: Path
    edit: Edit


def run_edit_job(job: EditJob) -> None:
    """Make and write one resubmission from its original's file."""
    if job.edit.kind == "exact_resubmission":
        shutil.copyfile(job.source, job.path)
        return
    with Image.open(job.source) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    picture = apply_edit(image, job.edit)
    if job.edit.kind == "png":
        picture.save(job.path, "PNG", compress_level=3)
        return
    job.path.write_bytes(
        encode_jpeg(picture, quality=job.edit.quality, orientation=job.edit.orientation)
    )


# ---------------------------------------------------------------------------------------------
# Planning (pure): who submits what, in which order


@dataclass(eq=False)
class _Draft:
    kind: str
    user_id: str | None
    gesture: str | None
    has_row: bool = True
    scene_family: int | None = None
    photo: PhotoSpec | None = None
    quality: int = 90
    orientation: int = 1
    source: _Draft | None = None
    same_worker: bool | None = None
    edit: Edit | None = None
    suffix: str = ".jpg"


@dataclass(frozen=True)
class _Setup:
    """What every planning step needs: the seed, options and the crowd (ids and looks)."""

    seed: int
    gestures: tuple[str, ...]
    size: tuple[int, int]
    quality: int
    user_ids: tuple[str, ...]
    skin: dict[str, RGB]
    hair: dict[str, RGB]

    def jpeg_quality(self, rng: np.random.Generator) -> int:
        """The configured quality give or take 5, as phones and apps differ."""
        return int(np.clip(self.quality + rng.integers(-5, 6), 1, 100))


def plan_batch(
    *,
    n: int,
    seed: int,
    gestures: Sequence[str] = HAGRID_V1_GESTURES,
    dup_rate: float = 0.15,
    problems: bool = True,
    hard_negatives: bool = True,
    size: tuple[int, int] = (1920, 1080),
    quality: int = 90,
) -> list[PlannedFile]:
    """Plan a batch (no I/O): every file and row in table order, with what to render or edit."""
    _check_options(n=n, gestures=gestures, dup_rate=dup_rate, size=size, quality=quality)
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    setup = _plan_setup(rng, seed=seed, n=n, gestures=gestures, size=size, quality=quality)
    originals: list[_Draft] = []
    for family, members in enumerate(_family_sizes(rng, n, hard_negatives)):
        originals += _plan_family(rng, setup, family=family, members=members, key=len(originals))
    count = round(dup_rate * n)
    if dup_rate > 0 and n >= 40:
        count = max(count, len(RESUBMISSION_KINDS))
    resubmissions = _plan_resubmissions(rng, setup, originals, count=count)
    extra = _plan_problems(rng, setup, key=n) if problems else []
    return _finalize(rng, _order(rng, originals, resubmissions, extra))


def _check_options(
    *, n: int, gestures: Sequence[str], dup_rate: float, size: tuple[int, int], quality: int
) -> None:
    unknown = sorted(set(gestures) - set(POSES) | ({NO_GESTURE, UNKNOWN_GESTURE} & set(gestures)))
    if unknown:
        raise ValueError(f"no hand pose for gestures {unknown}; known: {sorted(POSES)}")
    if n < 1 or not gestures:
        raise ValueError("need n >= 1 and at least one gesture")
    if not 0 <= dup_rate <= 1 or not 1 <= quality <= 100 or min(size) < 64:
        raise ValueError(f"bad dup_rate {dup_rate}, quality {quality} or size {size}")


def _plan_setup(
    rng: np.random.Generator,
    *,
    seed: int,
    n: int,
    gestures: Sequence[str],
    size: tuple[int, int],
    quality: int,
) -> _Setup:
    count = max(6, n // 3 + 2)
    ids = tuple(f"w{int(v):05d}" for v in rng.choice(np.arange(1, 100_000), count, replace=False))
    skin = {w: _jitter(rng, _SKINS[int(rng.integers(len(_SKINS)))], 0.03) for w in ids}
    hair = {w: _jitter(rng, _HAIRS[int(rng.integers(len(_HAIRS)))], 0.03) for w in ids}
    landscape = (max(size), min(size))
    return _Setup(seed, tuple(gestures), landscape, quality, ids, skin, hair)


def _family_sizes(rng: np.random.Generator, n: int, hard_negatives: bool) -> list[int]:
    if not hard_negatives:
        return [1] * n
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(min(int(rng.integers(2, 7)), n - sum(sizes)))
    return sizes


def _plan_family(
    rng: np.random.Generator, setup: _Setup, *, family: int, members: int, key: int
) -> list[_Draft]:
    """Originals sharing a room (layout and palette): other people, camera, light; often the
    same gesture."""
    width, height = setup.size
    frame = (height, width) if rng.random() < 0.3 else (width, height)
    theme = str(rng.choice(setup.gestures))
    workers = rng.choice(setup.user_ids, members, replace=members > len(setup.user_ids))
    drafts = []
    for i, (camera, worker) in enumerate(zip(_family_cameras(rng, members), workers, strict=True)):
        gesture = theme if rng.random() < 0.7 else str(rng.choice(setup.gestures))
        spec = _photo_spec(rng, setup, str(worker), key=key + i, size=frame, room=family)
        orientation = int(rng.choice([6, 8, 3])) if rng.random() < 0.1 else 1
        draft = _Draft(
            "original", str(worker), gesture, scene_family=family, orientation=orientation
        )
        draft.photo = replace(spec, camera=camera, gesture=gesture)
        draft.quality = setup.jpeg_quality(rng)
        drafts.append(draft)
    return drafts


def _family_cameras(rng: np.random.Generator, members: int) -> list[Camera]:
    """Camera set-ups at least 5% apart in zoom or shift from each other."""
    cameras: list[Camera] = []
    for _ in range(members * 40):
        if len(cameras) == members:
            break
        shift = (float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.06, 0.06)))
        new = Camera(zoom=float(rng.uniform(0.92, 1.2)), shift=shift)
        gaps = [
            max(
                abs(new.zoom - c.zoom),
                abs(new.shift[0] - c.shift[0]),
                abs(new.shift[1] - c.shift[1]),
            )
            for c in cameras
        ]
        if min(gaps, default=1.0) >= 0.05:
            cameras.append(new)
    while len(cameras) < members:
        cameras.append(Camera(zoom=1.0 + 0.05 * len(cameras), shift=(0.0, 0.0)))
    return cameras


def _photo_spec(
    rng: np.random.Generator,
    setup: _Setup,
    worker: str,
    *,
    key: int,
    size: tuple[int, int],
    room: int,
) -> PhotoSpec:
    """A photo of `worker` with random light, gesture, leading hand and maybe a free hand."""
    tint = (float(1 + rng.uniform(-0.07, 0.07)), 1.0, float(1 + rng.uniform(-0.07, 0.07)))
    lighting = Lighting(
        gain=float(rng.uniform(0.75, 1.2)),
        tint=tint,
        slope=(float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.3, 0.2))),
        glow=float(rng.uniform(0.0, 1.0)),
        vignette=float(rng.uniform(0.1, 0.45)),
    )
    camera = Camera(zoom=float(rng.uniform(0.92, 1.2)), shift=(0.0, 0.0))
    return PhotoSpec(
        seed=setup.seed,
        key=key,
        size=size,
        room=room,
        camera=camera,
        lighting=lighting,
        skin=setup.skin[worker],
        hair=setup.hair[worker],
        gesture=str(rng.choice(setup.gestures)),
        leading_hand="right" if rng.random() < 0.6 else "left",
        free_hand=bool(rng.random() < 0.3),
    )


def _plan_resubmissions(
    rng: np.random.Generator, setup: _Setup, originals: list[_Draft], *, count: int
) -> list[_Draft]:
    """`count` edited copies of random originals, every kind once before any repeats; half by
    the same worker, half from another account."""
    kinds = [str(k) for k in rng.permutation(RESUBMISSION_KINDS)][:count]
    kinds += [str(k) for k in rng.choice(RESUBMISSION_KINDS, max(count - len(kinds), 0))]
    sources = rng.choice(len(originals), count, replace=count > len(originals))
    same = rng.permutation(np.arange(count) % 2 == 0)
    drafts = []
    for kind, index, same_worker in zip(kinds, sources, same, strict=True):
        source = originals[int(index)]
        user = source.user_id
        if not same_worker:
            user = str(rng.choice([w for w in setup.user_ids if w != source.user_id]))
        size = source.photo.size if source.photo else setup.size
        draft = _Draft(kind, user, source.gesture, scene_family=source.scene_family)
        draft.source, draft.same_worker = source, bool(same_worker)
        draft.edit = _plan_edit(rng, kind, size, setup.jpeg_quality(rng))
        draft.suffix = ".png" if kind == "png" else ".jpg"
        drafts.append(draft)
    return drafts


def _plan_edit(rng: np.random.Generator, kind: str, size: tuple[int, int], quality: int) -> Edit:
    edit = Edit(kind, quality=quality)
    if kind == "recompressed":
        return replace(edit, quality=int(rng.integers(55, 76)))
    if kind == "resized":  # 1920x1080 -> 1280x720 or 1600x900; short side kept >= 720
        scale, short = float(rng.choice([2 / 3, 5 / 6])), min(size)
        return replace(edit, scale=720 / short if short * scale < 720 <= short else scale)
    if kind == "cropped":
        sides = rng.choice(4, int(rng.integers(1, 3)), replace=False)
        crop = [float(rng.uniform(0.02, 0.05)) if i in sides else 0.0 for i in range(4)]
        return replace(edit, crop=(crop[0], crop[1], crop[2], crop[3]))
    if kind == "brightness":
        factor = rng.uniform(0.75, 0.85) if rng.random() < 0.5 else rng.uniform(1.15, 1.3)
        return replace(edit, factor=float(factor))
    if kind == "blurred":
        return replace(edit, radius=float(rng.uniform(1.5, 3.0)))
    if kind == "exif_rotated":
        return replace(edit, orientation=int(rng.choice([6, 8])))
    return edit


_PHOTO_PROBLEMS = ("corrupt", "truncated", "too_small", "no_row", "unknown_gesture")


def _plan_problems(rng: np.random.Generator, setup: _Setup, *, key: int) -> list[_Draft]:
    """One of each problem kind; those made from a real photo get their own private room."""
    drafts = []
    for i, kind in enumerate(PROBLEM_KINDS):
        worker = str(rng.choice(setup.user_ids))
        draft = _Draft(kind, worker, str(rng.choice(setup.gestures)))
        draft.quality = setup.jpeg_quality(rng)
        if kind in _PHOTO_PROBLEMS:
            size = TOO_SMALL_SIZE if kind == "too_small" else setup.size
            spec = _photo_spec(rng, setup, worker, key=key + i, size=size, room=key + i)
            pose = UNKNOWN_GESTURE if kind == "unknown_gesture" else str(draft.gesture)
            draft.photo = replace(spec, gesture=pose)
        if kind == "unknown_gesture":
            draft.gesture = UNKNOWN_GESTURE
        elif kind == "no_row":
            draft.has_row, draft.user_id, draft.gesture = False, None, None
        elif kind == "decompression_bomb":
            draft.suffix = ".png"
        drafts.append(draft)
    return drafts


def _order(
    rng: np.random.Generator,
    originals: list[_Draft],
    resubmissions: list[_Draft],
    extra: list[_Draft],
) -> list[_Draft]:
    """Originals shuffled; each resubmission somewhere after its original; problems anywhere."""
    order = [originals[int(i)] for i in rng.permutation(len(originals))]
    for draft in resubmissions:
        after = next(i for i, d in enumerate(order) if d is draft.source) + 1
        order.insert(int(rng.integers(after, len(order) + 1)), draft)
    for draft in extra:
        order.insert(int(rng.integers(0, len(order) + 1)), draft)
    return order


def _finalize(rng: np.random.Generator, order: list[_Draft]) -> list[PlannedFile]:
    """Name files by position (photos/000001.jpg ...) and stamp rows with increasing times."""
    names = {id(d): f"photos/{i + 1:06d}{d.suffix}" for i, d in enumerate(order)}
    clock = datetime(2024, 1, 8, 8, 0, tzinfo=UTC) + timedelta(days=int(rng.integers(0, 300)))
    planned = []
    for d in order:
        stamp = None
        if d.has_row:
            clock += timedelta(seconds=int(rng.integers(20, 900)))
            stamp = clock.strftime("%Y-%m-%dT%H:%M:%SZ")
        source = names[id(d.source)] if d.source is not None else None
        planned.append(
            PlannedFile(
                file=names[id(d)],
                kind=d.kind,
                has_row=d.has_row,
                user_id=d.user_id,
                gesture=d.gesture,
                submitted_at=stamp,
                scene_family=d.scene_family,
                photo=d.photo,
                quality=d.quality,
                orientation=d.orientation,
                source_file=source,
                same_worker=d.same_worker,
                edit=d.edit,
            )
        )
    return planned


# ---------------------------------------------------------------------------------------------
# Writing a batch

_Job = TypeVar("_Job")
_Result = TypeVar("_Result")


def _run_all(fn: Callable[[_Job], _Result], jobs: Sequence[_Job], workers: int) -> list[_Result]:
    if workers <= 1 or len(jobs) <= 1:
        return [fn(job) for job in jobs]
    chunk = max(1, len(jobs) // (workers * 6))
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return list(pool.map(fn, jobs, chunksize=chunk))


def bomb_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG declaring `width` x `height` pixels, tiny on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    packer = zlib.compressobj(9)
    block = packer.compress(row * 500)
    body = [block] * (height // 500) + [packer.compress(row * (height % 500)), packer.flush()]
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(body))
    return png + chunk(b"IEND", b"")


def _write_plain_problem(path: Path, kind: str) -> PhotoGeometry | None:
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "not_image":
        path.write_text("IMG_2231 - hand photo\nsent from my phone, will upload later\n")
    elif kind == "decompression_bomb":
        path.write_bytes(bomb_png(BOMB_SIDE, BOMB_SIDE))
        return PhotoGeometry(BOMB_SIDE, BOMB_SIDE, (), (), "")
    return None


def _photo_jobs(out_dir: Path, plan: list[PlannedFile]) -> list[PhotoJob]:
    jobs = []
    for p in plan:
        if p.photo is not None:
            how = p.kind if p.kind in ("corrupt", "truncated") else None
            jobs.append(PhotoJob(p.photo, out_dir / p.file, p.quality, p.orientation, how))
    return sorted(jobs, key=lambda j: (j.spec.room, j.spec.key))  # room cache locality


def write_files(
    out_dir: Path, plan: list[PlannedFile], *, workers: int
) -> dict[str, PhotoGeometry | None]:
    """Write every planned file under `out_dir`; return the geometry of each (None: no image)."""
    jobs = _photo_jobs(out_dir, plan)
    rendered = _run_all(run_photo_job, jobs, workers)
    geometry = {
        j.path.relative_to(out_dir).as_posix(): g for j, g in zip(jobs, rendered, strict=True)
    }
    edits = [
        EditJob(out_dir / str(p.source_file), out_dir / p.file, p.edit)
        for p in plan
        if p.edit is not None
    ]
    _run_all(run_edit_job, edits, workers)
    found: dict[str, PhotoGeometry | None] = {}
    for p in plan:
        if p.edit is not None:
            found[p.file] = edited_geometry(geometry[str(p.source_file)], p.edit)
        elif p.photo is None:
            found[p.file] = _write_plain_problem(out_dir / p.file, p.kind)
        else:
            found[p.file] = None if p.kind in ("corrupt", "truncated") else geometry[p.file]
    return found


def truth_record(planned: PlannedFile, geometry: PhotoGeometry | None) -> dict[str, object]:
    """The truth line for one planned file or row."""
    reason = EXPECTED_REASON[planned.kind]
    return {
        "file": planned.file,
        "kind": planned.kind,
        "expected_outcome": "accepted" if reason is None else "rejected",
        "expected_reason": reason,
        "duplicate_of_file": planned.source_file,
        "same_worker": planned.same_worker,
        "user_id": planned.user_id,
        "gesture": planned.gesture,
        "scene_family": planned.scene_family,
        "width": geometry.width if geometry else None,
        "height": geometry.height if geometry else None,
        "bboxes": [list(b) for b in geometry.bboxes] if geometry else [],
        "labels": list(geometry.labels) if geometry else [],
        "leading_hand": (geometry.leading_hand or None) if geometry else None,
    }


def _write_tables(
    out_dir: Path, plan: list[PlannedFile], geometry: dict[str, PhotoGeometry | None]
) -> None:
    with (out_dir / "submissions.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(TABLE_COLUMNS)
        for p in plan:
            if p.has_row:
                writer.writerow([p.file, p.user_id, p.gesture, p.submitted_at])
    with (out_dir / "truth.jsonl").open("w", encoding="utf-8") as f:
        for p in plan:
            f.write(json.dumps(truth_record(p, geometry[p.file])) + "\n")


def generate_batch(
    out_dir: Path,
    *,
    n: int,
    seed: int,
    gestures: Sequence[str] = HAGRID_V1_GESTURES,
    dup_rate: float = 0.15,
    problems: bool = True,
    hard_negatives: bool = True,
    workers: int = 2,
    size: tuple[int, int] = (1920, 1080),
    quality: int = 90,
) -> SynthSummary:
    """Write a synthetic crowd batch of `n` distinct originals plus planted cases to `out_dir`.

    Writes `photos/`, `submissions.csv` (file, user_id, gesture, submitted_at) and
    `truth.jsonl` (expected outcome and reason, true boxes, per file or row). The output
    depends only on the arguments, not on `workers`. Refuses an `out_dir` whose photos/ has
    files in it, so that stale files never mix with a new batch.
    """
    plan = plan_batch(
        n=n,
        seed=seed,
        gestures=gestures,
        dup_rate=dup_rate,
        problems=problems,
        hard_negatives=hard_negatives,
        size=size,
        quality=quality,
    )
    out_dir = Path(out_dir)
    photos = out_dir / "photos"
    if photos.is_dir() and any(photos.iterdir()):
        raise FileExistsError(f"{photos} is not empty")
    photos.mkdir(parents=True, exist_ok=True)
    geometry = write_files(out_dir, plan, workers=workers)
    _write_tables(out_dir, plan, geometry)
    return SynthSummary(
        out_dir=out_dir,
        photos_dir=photos,
        submissions_csv=out_dir / "submissions.csv",
        truth_jsonl=out_dir / "truth.jsonl",
        n_rows=sum(p.has_row for p in plan),
        n_files=sum(p.kind != "missing_file" for p in plan),
        kinds=dict(sorted(Counter(p.kind for p in plan).items())),
    )
