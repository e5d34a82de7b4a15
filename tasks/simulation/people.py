"""People and their hands: gesture poses, where the hands go, and how a person is drawn.

Hands are drawn per gesture class from a canonical pose at full resolution (their true boxes
are measured from what was painted); the body, arms and head are painted on the
low-resolution scene canvas. Positions are in displayed full-resolution pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from tasks.simulation.drawing import (
    RGB,
    ColorFn,
    Shape,
    capsule,
    ellipse,
    jitter,
    paint,
    ring,
    rounded_box,
    to_uint8,
)
from tasks.simulation.photos import PhotoSpec

HAGRID_V1_GESTURES: tuple[str, ...] = (
    "call", "dislike", "fist", "four", "like", "mute", "ok", "one", "palm", "peace",
    "peace_inverted", "rock", "stop", "stop_inverted", "three", "three2", "two_up",
    "two_up_inverted",
)  # fmt: skip
NO_GESTURE = "no_gesture"
UNKNOWN_GESTURE = "thumbs_sideways"
_MARGIN = 0.07  # hands keep this fraction of the frame free on every side (crops cut <= 5%)


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
# Hands and figures in a photo


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


# A worker's skin and hair are drawn from these once per batch (tasks.simulation.planning).
SKINS: tuple[RGB, ...] = (
    (0.96, 0.80, 0.69), (0.92, 0.74, 0.60), (0.85, 0.65, 0.50), (0.76, 0.57, 0.42),
    (0.62, 0.44, 0.30), (0.48, 0.33, 0.22), (0.36, 0.24, 0.16),
)  # fmt: skip
HAIRS: tuple[RGB, ...] = (
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
    """Place a person and their hands in the frame of `spec`: hands fully in frame, unless
    ``spec.framing`` breaks a rule (the gesture hand over the edge, the person too far or
    too close)."""
    width, height = spec.size
    length = _hand_length(spec, rng)
    head_h = length / 0.78
    side = -1 if spec.leading_hand == "right" else 1
    hx, hy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.22, 0.5) * height
    hands = [_gesture_hand(spec, rng, (hx, hy), head_h, side, length)]
    if spec.free_hand:
        hands.append(_free_hand(rng, (hx, hy), head_h, -side, length))
    margin = 0.0 if spec.framing == "too_close" else _MARGIN
    dx, dy = _fit_shift(hands, width, height, margin)
    hands = [
        _clamp_hand(replace(h, center=(h.center[0] + dx, h.center[1] + dy)), width, height,
                    margin)
        for h in hands
    ]
    if spec.framing == "hand_cut_off":  # the arm reaches out to it; the body stays
        hands[0] = _cut_by_frame(hands[0], rng, width, height)
    return Figure(
        head=(hx + dx, hy + dy),
        head_h=head_h,
        hands=tuple(hands),
        clothes=jitter(rng, _CLOTHES[int(rng.integers(len(_CLOTHES)))], 0.06),
        trousers=jitter(rng, _CLOTHES[int(rng.integers(len(_CLOTHES)))], 0.06)
        if rng.random() < 0.5
        else jitter(rng, (0.15, 0.18, 0.3), 0.05),
        pattern=str(rng.choice(["plain", "plain", "stripes", "checks"])),
        long_sleeves=bool(rng.random() < 0.5),
    )


def _hand_length(spec: PhotoSpec, rng: np.random.Generator) -> float:
    """Hand length in pixels: the gesture hand's box is 3-15% of the frame width at 0.5-4 m
    (HaGRID's range); ``too_far`` puts it at 0.8-1.4% (beyond 4 m), ``too_close`` fills
    half the frame's short side or more (nearer than 0.5 m)."""
    width, height = spec.size
    if spec.framing == "too_close":
        return float(min(width, height) * rng.uniform(0.55, 0.68))
    low, high = (0.008, 0.014) if spec.framing == "too_far" else (0.03, 0.15)
    frac = math.exp(rng.uniform(math.log(low), math.log(high)))  # box width / image width
    return min(frac * width / 0.6, min(width, height) * (1 - 2 * _MARGIN) / 1.6)


def _cut_by_frame(hand: HandPlacement, rng: np.random.Generator, width: int,
                  height: int) -> HandPlacement:
    """Move the gesture hand over the frame edge on its own side (or the top), so that 35-60%
    of its reach is outside."""
    reach = 0.78 * hand.length
    outside = rng.uniform(0.35, 0.6)
    cx, cy = hand.center
    if rng.random() < 0.3:  # over the top edge
        new = (cx, reach - 2 * reach * outside)
    elif hand.outward > 0:  # over the right edge
        new = (width - reach + 2 * reach * outside, cy)
    else:
        new = (reach - 2 * reach * outside, cy)
    return replace(hand, center=new)


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


def _hand_limits(hand: HandPlacement, width: int, height: int,
                 margin: float = _MARGIN) -> tuple[float, ...]:
    reach = 0.78 * hand.length
    return (
        margin * width + reach,
        (1 - margin) * width - reach,
        margin * height + reach,
        (1 - margin) * height - reach,
    )


def _fit_shift(hands: Sequence[HandPlacement], width: int, height: int,
               margin: float = _MARGIN) -> tuple[float, float]:
    shift = []
    for axis in (0, 1):
        lo = max(_hand_limits(h, width, height, margin)[2 * axis] - h.center[axis]
                 for h in hands)
        hi = min(_hand_limits(h, width, height, margin)[2 * axis + 1] - h.center[axis]
                 for h in hands)
        shift.append(min(max(0.0, lo), hi) if lo <= hi else (lo + hi) / 2)
    return shift[0], shift[1]


def _clamp_hand(hand: HandPlacement, width: int, height: int,
                margin: float = _MARGIN) -> HandPlacement:
    x_lo, x_hi, y_lo, y_hi = _hand_limits(hand, width, height, margin)
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
    if not len(rows):  # the hand is wholly outside the frame
        return x0, y0, x0, y0
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
    paint_head(canvas, (hx, hy), hh, skin, hair)
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


def paint_head(
    canvas: np.ndarray, c: tuple[float, float], hh: float, skin: RGB, hair: RGB
) -> None:
    """Paint a head of height `hh` centred at `c` (face, ears, hair, eyes, mouth)."""
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
