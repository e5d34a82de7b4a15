"""A photo rendered from its spec: the room through the camera, the person, the light, the
hands, then grain.

The room and the person are rendered at quarter resolution with numpy and upscaled; the
hands are drawn at full resolution and the whole picture gets full-resolution grain and fine
texture (`render_photo`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFont

from tasks.simulation.drawing import to_uint8
from tasks.simulation.people import Figure, paint_figure, paint_hand, plan_figure
from tasks.simulation.photos import (
    PHOTO_STREAM,
    Lighting,
    PhotoGeometry,
    PhotoSpec,
    relative_box,
)
from tasks.simulation.rooms import room_backdrop

_LOW_RES = 4  # the room and the person are rendered at 1/_LOW_RES of the photo size


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
    rng = np.random.default_rng([spec.seed, PHOTO_STREAM, spec.key])
    width, height = spec.size
    figure = plan_figure(spec, rng)
    low, glow = _scene(spec, figure)
    full = np.array(
        Image.fromarray(to_uint8(low)).resize((width, height), Image.Resampling.BICUBIC)
    )
    if spec.inscription:
        full = _inscribe(full, spec.inscription, figure, rng)
    boxes, labels = [], []
    for hand in figure.hands:
        u, v = hand.center[0] / width, hand.center[1] / height
        lit = light_field(spec.lighting, v, u).reshape(3)
        glow_here = glow[
            min(int(v * glow.shape[0]), glow.shape[0] - 1),
            min(int(u * glow.shape[1]), glow.shape[1] - 1),
        ]
        x0, y0, x1, y1 = paint_hand(full, hand, np.asarray(spec.skin, np.float32) * lit + glow_here)
        boxes.append(relative_box((x0, y0, x1 - x0, y1 - y0), width, height))
        labels.append(hand.label)
    picture = _add_grain(Image.fromarray(full), rng, spec.lighting.gain)
    return picture, PhotoGeometry(width, height, tuple(boxes), tuple(labels), spec.leading_hand)


def _inscribe(full: np.ndarray, text: str, figure: Figure, rng: np.random.Generator) -> np.ndarray:
    """Write `text` on the person's shirt, or on a sign on the wall beside them (drawn before
    the hands, so a hand in front covers it). Filtration's ``text`` flag is true for these."""
    image = Image.fromarray(full)
    draw = ImageDraw.Draw(image)
    height, width = full.shape[:2]
    (hx, hy), hh = figure.head, figure.head_h
    if rng.random() < 0.5 and hy + 2.4 * hh < height:  # on the shirt, chest-wide
        size = max(int(0.28 * hh), 12)
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x, y = hx - (right - left) / 2, hy + 1.55 * hh
        shade = int(rng.integers(0, 2)) * 255
        draw.text((x, y), text, font=font, fill=(shade, shade, 255 - shade // 2))
    else:  # a sign on the wall, on the side away from the gesture hand
        size = max(int(min(width, height) * rng.uniform(0.035, 0.06)), 12)
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = size // 2
        w, h = right - left + 2 * pad, bottom - top + 2 * pad
        hand_x = figure.hands[0].center[0] if figure.hands else width / 2
        x = width * 0.04 if hand_x > width / 2 else width * 0.96 - w
        y = height * float(rng.uniform(0.05, 0.25))
        draw.rectangle((x, y, x + w, y + h), fill=(238, 236, 228), outline=(60, 60, 60),
                       width=max(2, size // 12))
        draw.text((x + pad - left, y + pad - top), text, font=font, fill=(25, 25, 30))
    return np.asarray(image).copy()
