"""Small photo-like test images and their resubmission variants, generated in-process."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter


def textured_photo(seed: int, size: tuple[int, int] = (1280, 720)) -> Image.Image:
    """A textured, varied RGB scene: multi-scale smooth noise plus a few shapes."""
    rng = np.random.default_rng(seed)
    w, h = size
    acc = np.zeros((h, w, 3), np.float32)
    for cells, weight in ((3, 90.0), (9, 45.0), (40, 20.0)):
        small = rng.random((cells, max(2, cells * w // h), 3)).astype(np.float32)
        layer = Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        acc += (np.asarray(layer, np.float32) / 255 - 0.5) * weight
    acc += rng.normal(0, 6, (h, w, 3)).astype(np.float32) + 128
    im = Image.fromarray(np.clip(acc, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x, y = int(rng.integers(0, w - 100)), int(rng.integers(0, h - 100))
        box = (x, y, x + int(rng.integers(60, w // 3)), y + int(rng.integers(60, h // 3)))
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return im


def encode(im: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    """The image's bytes in ``fmt``."""
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def variants(im: Image.Image) -> dict[str, bytes]:
    """Every near-duplicate kind the pipeline must catch, as file bytes."""
    w, h = im.size
    rotated = im.transpose(Image.Transpose.ROTATE_90)  # stored rotated; tag 6 undoes it
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "recompressed": encode(im, quality=60),
        "resized": encode(im.resize((w * 3 // 4, h * 3 // 4), Image.Resampling.LANCZOS), quality=90),
        "cropped": encode(im.crop((int(w * 0.04), int(h * 0.03), w, h)), quality=90),
        "brighter": encode(ImageEnhance.Brightness(im).enhance(1.25), quality=90),
        "darker": encode(ImageEnhance.Brightness(im).enhance(0.8), quality=90),
        "png": encode(im, "PNG"),
        "exif_rotated": encode(rotated, quality=90, exif=exif.tobytes()),
        "blurred": encode(im.filter(ImageFilter.GaussianBlur(2.5)), quality=90),
    }
