"""Reference pictures: one clean drawing per gesture class, for the demo's annotators.

A real campaign photographs its own reference pictures; the demo's are drawn here with the
same hand-drawing code as the photos (``people``): the person's right hand in the gesture's
canonical pose, palm or back to the camera as the pose says, on a plain background, and the
face too where the gesture is shown at it (``call``, ``mute``). Everything is a pure function
of the arguments: the same call writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.simulation.drawing import RGB, to_uint8
from tasks.simulation.people import (
    HAGRID_V1_GESTURES,
    HAIRS,
    POSES,
    SKINS,
    HandPlacement,
    paint_hand,
    paint_head,
)

BACKGROUND: RGB = (0.93, 0.94, 0.96)
_SKIN = np.asarray(SKINS[2], np.float32)
_LENGTH = 240.0  # hand length on the drawing canvas, px (about the picture size)
_HEAD_H = _LENGTH / 0.78  # as in a photo (people._gesture_hand)
_AT_THE_FACE = {"mute": (0.04, 0.2), "call": (0.78, 0.08)}  # hand centre - face centre, / head


def draw_reference(gesture: str, *, size: int = 256) -> Image.Image:
    """A ``size`` x ``size`` picture of ``gesture`` shown with the right hand.

    ``ValueError`` for a gesture the generator cannot draw (it draws HaGRID v1's classes and
    ``no_gesture``).
    """
    if gesture not in POSES:
        raise ValueError(f"no pose to draw for gesture {gesture!r}")
    side = 3 * int(_LENGTH)
    canvas = np.empty((side, side, 3), np.float32)
    canvas[:] = BACKGROUND
    centre = (side / 2, side / 2)
    if gesture in _AT_THE_FACE:  # the person's right hand is on the image's left
        dx, dy = _AT_THE_FACE[gesture]
        face = (centre[0] + dx * _HEAD_H, centre[1] - dy * _HEAD_H)
        paint_head(canvas, face, _HEAD_H, SKINS[2], HAIRS[1])
    pose = POSES[gesture]
    hand = HandPlacement(center=centre, length=_LENGTH, rotation=pose.rotation, mirror=True,
                         outward=-1, pose=pose, label=gesture)
    image = to_uint8(canvas)
    paint_hand(image, hand, _SKIN)
    return _framed(image, size=size)


def _framed(image: np.ndarray, *, size: int) -> Image.Image:
    """The drawn part of ``image`` centred in a square with a margin, resized to ``size``."""
    background = to_uint8(np.asarray(BACKGROUND, np.float32))
    drawn = np.any(image != background, axis=2)
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    half = max(rows[-1] - rows[0], cols[-1] - cols[0]) / 2 * 1.12
    left = round((cols[0] + cols[-1]) / 2 - half)
    top = round((rows[0] + rows[-1]) / 2 - half)
    square = Image.new("RGB", (round(2 * half),) * 2, tuple(int(v) for v in background))
    square.paste(Image.fromarray(image), (-left, -top))
    return square.resize((size, size), Image.Resampling.LANCZOS)


def write_references(out_dir: Path, *, gestures: Sequence[str] = HAGRID_V1_GESTURES,
                     size: int = 256) -> dict[str, Path]:
    """Write ``<gesture>.png`` for every gesture into ``out_dir``: a campaign's reference
    folder (``CrowdBackendOptions.references``). Returns gesture -> file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for gesture in gestures:
        path = out_dir / f"{gesture}.png"
        draw_reference(gesture, size=size).save(path, "PNG", optimize=True)
        written[gesture] = path
    return written
