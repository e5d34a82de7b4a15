"""Phone-like photos for the publish tests: an EXIF orientation tag, a GPS position, Artist
holding a raw worker id, XMP, comments, an ICC profile; and the checks that none is left."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageCms

from tasks.catalog import object_key
from tasks.publish.containers import inspect_member
from tasks.publish.published_image import TURNS
from tasks.storage import Storage
from tests.photos import textured_photo

WORKER = "raw-worker-4711"  # what Artist held: a raw worker id
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:creator>raw-worker-4711</dc:creator></x:xmpmeta>'
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
# how a camera stores pixels it tags with an orientation: the inverse of the viewer's turn
STORE = {**TURNS, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """A small photo-like picture (a textured scene scaled down)."""
    return textured_photo(seed, (320, 240)).resize(size, Image.Resampling.LANCZOS)


def personal_exif(orientation: int) -> Image.Exif:
    """Orientation, Artist, Copyright, a GPS position, a UserComment."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x013B] = WORKER
    exif[0x8298] = "(c) someone"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (55.0, 45.0, 21.0), 3: "E", 4: (37.0, 37.0, 4.0)})
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00at home"
    return exif


def stored_photos(stores: Sequence[Storage], exifs: Sequence[Image.Exif | None]
                  ) -> tuple[list[bytes], list[str], list[str]]:
    """Small 64x48 JPEGs (one per entry, with that EXIF block) stored as objects in every one
    of ``stores``; their bytes, sha256s and object keys."""
    stored = []
    for n, exif in enumerate(exifs):
        buf = io.BytesIO()
        photo(n, (64, 48)).save(buf, "JPEG", quality=90, **({"exif": exif} if exif else {}))
        stored.append(buf.getvalue())
    shas = [hashlib.sha256(d).hexdigest() for d in stored]
    keys = [object_key(sha, "JPEG") for sha in shas]
    for store in stores:
        for key, data in zip(keys, stored, strict=True):
            store.write_bytes(key, data)
    return stored, shas, keys


def pixels(data: bytes) -> np.ndarray:
    """What a HaGRID loader sees: ``Image.open(...).convert("RGB")``, no transpose."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def assert_no_metadata(data: bytes) -> None:
    """Neither Pillow nor a byte search finds EXIF, XMP, comments or the worker id."""
    with Image.open(io.BytesIO(data)) as im:
        assert len(im.getexif()) == 0
        assert not {"exif", "xmp", "XML:com.adobe.xmp", "comment", "photoshop", "Author"} & set(
            im.info)
    for needle in (WORKER.encode(), b"Exif\x00\x00", b"http://ns.adobe.com", b"adobe:ns:meta"):
        assert needle not in data
    assert inspect_member(data).metadata == ()
