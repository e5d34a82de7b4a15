"""The bytes a release publishes for one image: upright, and without metadata.

``published_image`` makes every published image, and nothing else does:

- EXIF orientation other than 1 (the one ingest recorded in the catalog, which the boxes,
  width and height refer to): decoded, turned upright (the turn ``ImageOps.exif_transpose``
  makes) and encoded again at high quality, keeping only the ICC profile: JPEG at quality 95
  with the source's chroma subsampling where the turn keeps it (4:4:4 otherwise), PNG, or
  WebP (lossless when the source was, quality 95 otherwise). Pillow's encoders give the same
  bytes for the same pixels and settings, so a release stays byte-reproducible for a given
  Pillow (``release.json`` records its version).
- Orientation 1: not re-encoded. The metadata is stripped at the container level
  (``containers.strip_metadata``), so the decoded pixels are exactly the stored ones.

Either way the result carries no EXIF (no GPS, no ``Artist``), XMP, IPTC or comment, so a
loader that does ``Image.open(...).convert("RGB")`` sees the upright picture the boxes
describe. An MPO is published as a JPEG of its first frame.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, JpegImagePlugin

from tasks.publish.containers import (
    ContainerError,
    container_format,
    strip_metadata,
    webp_spans,
)

JPEG_QUALITY = 95
WEBP_QUALITY = 95
_T = Image.Transpose
# EXIF orientation -> the turn that makes the stored pixels upright (as exif_transpose does)
TURNS = {2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE,
         6: _T.ROTATE_270, 7: _T.TRANSVERSE, 8: _T.ROTATE_90}
_KEEPS_AXES = frozenset({2, 3, 4})  # turns that do not swap width and height
_SAMPLING_444, _SAMPLING_422, _SAMPLING_420 = 0, 1, 2  # Pillow's subsampling codes


def published_image(data: bytes, *, orientation: int) -> bytes:
    """The published bytes of a stored image whose EXIF orientation is ``orientation``.

    Raises ``ContainerError`` (a ``ValueError``) for bytes that are not a well-formed JPEG,
    PNG or WebP, or an orientation outside 1-8.
    """
    if orientation == 1:
        return strip_metadata(data)
    if orientation not in TURNS:
        raise ContainerError(f"EXIF orientation {orientation} is not one of 1-8")
    return strip_metadata(upright_image(data, orientation=orientation))


def published_format(stored_format: str) -> str:
    """The format of the published bytes for a stored format (an MPO becomes a JPEG)."""
    return "JPEG" if stored_format == "MPO" else stored_format


def upright_image(data: bytes, *, orientation: int) -> bytes:
    """Decode, turn upright, encode again in the same format (see the module docstring)."""
    fmt = container_format(data)
    with Image.open(io.BytesIO(data)) as stored:
        icc = stored.info.get("icc_profile")
        transparency = stored.info.get("transparency")
        sampling = JpegImagePlugin.get_sampling(stored) if fmt == "JPEG" else -1
        turned = stored.transpose(TURNS[orientation])
    turned.info = {}  # the encoders copy some info entries (a JPEG comment) on their own
    options: dict[str, Any] = {"icc_profile": icc} if icc else {}
    if fmt == "JPEG":
        if turned.mode not in ("L", "RGB", "CMYK"):
            turned = turned.convert("RGB")
        options.update(quality=JPEG_QUALITY, subsampling=_subsampling(sampling, orientation))
    elif fmt == "PNG" and transparency is not None:
        options["transparency"] = transparency
    elif fmt == "WEBP":
        lossless = any(span.kind == b"VP8L" for span in webp_spans(data))
        options.update(lossless=lossless, quality=100 if lossless else WEBP_QUALITY)
    out = io.BytesIO()
    turned.save(out, fmt, **options)
    return out.getvalue()


def _subsampling(source: int, orientation: int) -> int:
    """The source's chroma subsampling when the turn keeps it meaningful, else 4:4:4."""
    if source in (_SAMPLING_444, _SAMPLING_420):
        return source
    if source == _SAMPLING_422 and orientation in _KEEPS_AXES:
        return source
    return _SAMPLING_444
