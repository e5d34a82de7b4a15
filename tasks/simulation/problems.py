"""Planted problems: resubmissions (edited copies of an original) and broken or ill-formed
files, with the reason the pipeline is expected to reject each kind for.

Edits act on an original's displayed picture; `edited_geometry` says what they do to its
true hand boxes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from schemas.reasons import Reason
from tasks.simulation.photos import DAMAGE_STREAM, Box, PhotoGeometry, relative_box

RESUBMISSION_KINDS: tuple[str, ...] = (
    "exact_resubmission", "recompressed", "resized", "cropped", "brightness", "png",
    "exif_rotated", "blurred", "mirrored",
)  # fmt: skip
PROBLEM_KINDS: tuple[str, ...] = (
    "corrupt", "truncated", "not_image", "zero_byte", "decompression_bomb", "too_small",
    "missing_file", "no_row", "unknown_gesture",
)  # fmt: skip
EXPECTED_REASON: dict[str, Reason | None] = {
    "original": None,
    "exact_resubmission": Reason.EXACT_DUPLICATE,
    "mirrored": Reason.MIRRORED_DUPLICATE,
    **dict.fromkeys(RESUBMISSION_KINDS[1:-1], Reason.NEAR_DUPLICATE),
    "corrupt": Reason.UNREADABLE,
    "truncated": Reason.UNREADABLE,
    "not_image": Reason.NOT_AN_IMAGE,
    "zero_byte": Reason.EMPTY_FILE,
    "decompression_bomb": Reason.DECOMPRESSION_BOMB,
    "too_small": Reason.TOO_SMALL,
    "missing_file": Reason.MISSING_FILE,
    "no_row": Reason.MISSING_METADATA,
    "unknown_gesture": Reason.UNKNOWN_GESTURE,
}

BOMB_SIDE = 15_000
TOO_SMALL_SIZE = (640, 480)


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
    return relative_box((x0, y0, x1 - x0, y1 - y0), size[0], size[1])


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


# ---------------------------------------------------------------------------------------------
# Broken files


def damage(data: bytes, how: str, *, seed: int) -> bytes:
    """Break JPEG bytes: "corrupt" overwrites all after ~600 bytes with garbage (no 0xFF, so no
    marker survives and decoding fails); "truncated" keeps the first 60%."""
    if how == "truncated":
        return data[: int(len(data) * 0.6)]
    start = min(600, data.find(b"\xff\xda") if b"\xff\xda" in data else 600)
    garbage = np.random.default_rng([seed, DAMAGE_STREAM]).integers(0, 255, len(data) - start)
    return data[:start] + garbage.astype(np.uint8).tobytes()


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
