"""What decides a synthetic photo, what it truly shows, and how it is stored.

A `PhotoSpec` fixes everything about one rendered photo (`tasks.simulation.scenes` renders
it); its `PhotoGeometry` is the displayed size and the true hand boxes; `encode_jpeg` stores
the displayed picture, rotated and EXIF-tagged when asked.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from tasks.simulation.drawing import RGB

Box = tuple[float, float, float, float]

# Independent random streams: np.random.default_rng([seed, STREAM, key]).
PLAN_STREAM, ROOM_STREAM, PHOTO_STREAM, DAMAGE_STREAM = 0, 1, 2, 3

_EXIF_ORIENTATION = 0x0112
_STORE_FOR_ORIENTATION = {  # pixels stored so that an EXIF-aware viewer shows the picture
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


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
    framing: str = "normal"  # FRAMINGS: normal, or a visible break of the mining rules
    inscription: str | None = None  # text drawn on a sign or the shirt (filtration: "text")


# How the person is framed: "normal" keeps every hand in frame at 0.5-4 m; the others break
# a mining rule visibly (validation answers ``no:hand_cut_off`` / ``no:bad_distance``).
FRAMINGS: tuple[str, ...] = ("normal", "hand_cut_off", "too_far", "too_close")


@dataclass(frozen=True)
class PhotoGeometry:
    """The displayed size of a photo and its true hand boxes (HaGRID [x, y, w, h], relative)."""

    width: int
    height: int
    bboxes: tuple[Box, ...]
    labels: tuple[str, ...]
    leading_hand: str


def relative_box(box: Box, width: int, height: int) -> Box:
    """A pixel box (x, y, w, h) relative to a `width` x `height` picture, rounded to 1e-6."""
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
