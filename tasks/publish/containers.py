"""Image containers read at the byte level: JPEG segments, PNG chunks, WebP (RIFF) chunks.

Two uses, one walker per format: ``strip_metadata`` drops the blocks that carry metadata
without touching the coded pixels (the decoded pixels stay identical), and ``inspect_member``
says what a published member still carries and how large it is (the data contracts).

What is kept (everything else goes, and is what ``inspect_member`` names):

- JPEG: the first image only (an MPO's further frames and any trailer after EOI go); its
  tables, frame and scans; APP0 ``JFIF``, APP2 ``ICC_PROFILE``, APP14 ``Adobe`` (colour
  transform). Dropped: APP1 (EXIF, XMP), APP13 (IPTC / Photoshop), COM, every other APPn.
- PNG: the critical chunks and the ancillary chunks that describe the pixels (colour,
  transparency, pixel size, animation). Dropped: ``tEXt``, ``zTXt``, ``iTXt``, ``eXIf``,
  ``tIME`` and any other ancillary chunk; anything after ``IEND``.
- WebP: ``VP8``/``VP8L``/``VP8X``/``ALPH``/``ANIM``/``ANMF``/``ICCP``. Dropped: ``EXIF``,
  ``XMP`` and unknown chunks; the RIFF size and the VP8X EXIF/XMP flags are fixed.

Pure functions over bytes; a malformed container raises ``ContainerError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from PIL import Image

JPEG_SIGNATURE = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# JPEG markers, and two pseudo-markers for the spans between them.
SOS, EOI, COM, APP0, APP1, APP2, APP13, APP14 = 0xDA, 0xD9, 0xFE, 0xE0, 0xE1, 0xE2, 0xED, 0xEE
ENTROPY, TRAILER = 0x100, 0x101  # entropy-coded data after an SOS; bytes after the EOI
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC
_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7]")  # not a stuffed 0xFF, not an RSTn
_JPEG_KEEP = {APP0: b"JFIF\x00", APP2: b"ICC_PROFILE\x00", APP14: b"Adobe"}

PNG_KEEP = frozenset({b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"cICP", b"mDCV", b"cLLI", b"sBIT",
                      b"tRNS", b"bKGD", b"pHYs", b"hIST", b"sPLT", b"acTL", b"fcTL", b"fdAT"})
WEBP_KEEP = frozenset({b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP"})
_VP8X_EXIF_XMP = 0x08 | 0x04  # VP8X flag bits that announce EXIF and XMP chunks

# EXIF tags that name or locate a person (IFD0 and the Exif IFD), by the name reported.
PERSONAL_TAGS = {0x013B: "artist", 0x8298: "copyright", 0x9C9D: "xp_author",
                 0x9C9C: "xp_comment", 0x010E: "image_description", 0xA430: "camera_owner",
                 0xA431: "serial_number", 0x9286: "user_comment", 0x927C: "maker_note"}
EXIF_IFD, GPS_IFD = 0x8769, 0x8825


class ContainerError(ValueError):
    """Bytes that are not a well-formed JPEG, PNG or WebP container."""


class Span(NamedTuple):
    """One block of a container: its kind (JPEG marker, PNG/WebP chunk type) and place."""

    kind: int | bytes
    start: int
    end: int


class MemberInfo(NamedTuple):
    """What a published image member is: its pixel size and the metadata it still carries."""

    width: int
    height: int
    metadata: tuple[str, ...]  # e.g. ("exif", "gps", "artist", "xmp", "comment"); () when clean


def container_format(data: bytes) -> str:
    """``JPEG``, ``PNG`` or ``WEBP`` from the signature; ``ContainerError`` otherwise."""
    if data[:2] == JPEG_SIGNATURE:
        return "JPEG"
    if data[:8] == PNG_SIGNATURE:
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    raise ContainerError("not a JPEG, PNG or WebP file")


# ---- walkers -----------------------------------------------------------------------------

def jpeg_spans(data: bytes) -> Iterator[Span]:
    """Every marker segment, entropy-coded span and the trailer of a JPEG, in order.

    Spans start at a marker's ``0xFF`` (fill bytes before it belong to no span). A stream
    that ends without EOI ends with its last span.
    """
    pos, size = 2, len(data)
    while pos < size:
        if data[pos] != 0xFF:
            raise ContainerError(f"JPEG: no marker at byte {pos}")
        while pos + 1 < size and data[pos + 1] == 0xFF:
            pos += 1
        if pos + 1 >= size:
            raise ContainerError("JPEG: ends inside a marker")
        marker = data[pos + 1]
        if marker == EOI:
            yield Span(EOI, pos, pos + 2)
            if pos + 2 < size:
                yield Span(TRAILER, pos + 2, size)
            return
        if marker in _STANDALONE:
            yield Span(marker, pos, pos + 2)
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if end > size or end < pos + 4:
            raise ContainerError(f"JPEG: segment {marker:#04x} at byte {pos} runs past the end")
        yield Span(marker, pos, end)
        pos = end
        if marker == SOS:
            found = _MARKER_IN_SCAN.search(data, pos)
            stop = size if found is None else found.start()
            yield Span(ENTROPY, pos, stop)
            pos = stop


def png_spans(data: bytes) -> Iterator[Span]:
    """Every chunk of a PNG after the signature, then the trailer after IEND, if any."""
    pos, size = len(PNG_SIGNATURE), len(data)
    while pos < size:
        end = pos + 12 + int.from_bytes(data[pos:pos + 4], "big")
        if end > size:
            raise ContainerError(f"PNG: chunk at byte {pos} runs past the end")
        kind = bytes(data[pos + 4:pos + 8])
        yield Span(kind, pos, end)
        pos = end
        if kind == b"IEND":
            break
    if pos < size:
        yield Span(TRAILER, pos, size)


def webp_spans(data: bytes) -> Iterator[Span]:
    """Every chunk of a WebP's RIFF body (padding included), then any trailer."""
    riff_end, size = 8 + int.from_bytes(data[4:8], "little"), len(data)
    pos, stop = 12, min(riff_end, size)
    while pos < stop:
        if pos + 8 > stop:
            raise ContainerError(f"WebP: chunk header at byte {pos} runs past the end")
        length = int.from_bytes(data[pos + 4:pos + 8], "little")
        end = pos + 8 + length + (length & 1)
        if pos + 8 + length > stop:
            raise ContainerError(f"WebP: chunk at byte {pos} runs past the end")
        yield Span(bytes(data[pos:pos + 4]), pos, min(end, stop))
        pos = end
    if riff_end < size:
        yield Span(TRAILER, riff_end, size)


# ---- stripping ---------------------------------------------------------------------------

def _keep_jpeg(data: bytes, span: Span) -> bool:
    if span.kind == TRAILER or span.kind == COM:
        return False
    if isinstance(span.kind, int) and APP0 <= span.kind <= 0xEF:
        magic = _JPEG_KEEP.get(span.kind)
        return magic is not None and data[span.start + 4:span.start + 4 + len(magic)] == magic
    return True


def strip_metadata(data: bytes) -> bytes:
    """The same image without metadata, its coded pixels untouched (``data`` itself when
    there is nothing to drop)."""
    fmt = container_format(data)
    if fmt == "JPEG":
        spans = list(jpeg_spans(data))
        kept = [s for s in spans if _keep_jpeg(data, s)]
        head = [JPEG_SIGNATURE]
    elif fmt == "PNG":
        spans = list(png_spans(data))
        kept = [s for s in spans if _keep_png(s)]
        head = [PNG_SIGNATURE]
    else:
        return _strip_webp(data)
    if len(kept) == len(spans) and _contiguous(kept, start=len(head[0]), end=len(data)):
        return data
    return b"".join([*head, *(data[s.start:s.end] for s in kept)])


def _contiguous(spans: list[Span], *, start: int, end: int) -> bool:
    """True when the spans cover ``start:end`` without gaps (no fill bytes were skipped)."""
    for span in spans:
        if span.start != start:
            return False
        start = span.end
    return start == end


def _keep_png(span: Span) -> bool:
    kind = span.kind
    return isinstance(kind, bytes) and (kind[:1].isupper() or kind in PNG_KEEP)


def _strip_webp(data: bytes) -> bytes:
    spans = list(webp_spans(data))
    kept = [s for s in spans if s.kind in WEBP_KEEP]
    if len(kept) == len(spans):
        return data
    chunks = []
    for span in kept:
        chunk = data[span.start:span.end]
        if span.kind == b"VP8X":
            chunk = chunk[:8] + bytes([chunk[8] & ~_VP8X_EXIF_XMP & 0xFF]) + chunk[9:]
        chunks.append(chunk)
    body = b"".join(chunks)
    return b"RIFF" + (4 + len(body)).to_bytes(4, "little") + b"WEBP" + body


# ---- inspection --------------------------------------------------------------------------

def inspect_member(data: bytes) -> MemberInfo:
    """The pixel size a decoder reports for ``data`` (no EXIF orientation applied) and the
    names of the metadata blocks it carries (what ``strip_metadata`` would drop)."""
    fmt = container_format(data)
    if fmt == "JPEG":
        spans = list(jpeg_spans(data))
        found = [_jpeg_name(data, s) for s in spans if not _keep_jpeg(data, s)]
        frame = next((s for s in spans if s.kind in _SOF), None)
        if frame is None:
            raise ContainerError("JPEG: no frame header")
        height = int.from_bytes(data[frame.start + 5:frame.start + 7], "big")
        width = int.from_bytes(data[frame.start + 7:frame.start + 9], "big")
    elif fmt == "PNG":
        spans = list(png_spans(data))
        found = [_chunk_name(data, s) for s in spans if not _keep_png(s)]
        width = int.from_bytes(data[16:20], "big")
        height = int.from_bytes(data[20:24], "big")
    else:
        spans = list(webp_spans(data))
        found = [_chunk_name(data, s) for s in spans if s.kind not in WEBP_KEEP]
        width, height = _webp_size(data, spans)
    names = dict.fromkeys(name for names in found for name in names)  # ordered, unique
    return MemberInfo(width, height, tuple(names))


def exif_fields(payload: bytes) -> list[str]:
    """``exif`` plus the personal fields an EXIF block holds (``gps``, ``artist``, ...)."""
    exif = Image.Exif()
    try:
        exif.load(bytes(payload))
        tags = {**exif.get_ifd(EXIF_IFD), **dict(exif)}
        gps = bool(exif.get_ifd(GPS_IFD)) or GPS_IFD in exif
    except Exception:  # noqa: BLE001 - a broken EXIF block is still an EXIF block
        return ["exif"]
    return ["exif", *(["gps"] if gps else []),
            *sorted({name for tag, name in PERSONAL_TAGS.items() if tag in tags})]


def _jpeg_name(data: bytes, span: Span) -> list[str]:
    payload = data[span.start + 4:span.end]
    if span.kind == APP1 and payload[:6] == b"Exif\x00\x00":
        return exif_fields(payload)
    if span.kind == APP1 and payload[:19] == b"http://ns.adobe.com":
        return ["xmp"]
    if span.kind == APP2 and payload[:4] == b"MPF\x00":
        return ["mpf"]
    kind = int(span.kind) if isinstance(span.kind, int) else -1
    return [{TRAILER: "trailer", COM: "comment", APP13: "iptc"}.get(kind) or f"app{kind - APP0}"]


def _chunk_name(data: bytes, span: Span) -> list[str]:
    if span.kind == TRAILER:
        return ["trailer"]
    payload, kind = data[span.start + 8:span.end], span.kind
    if kind in (b"eXIf", b"EXIF"):
        return exif_fields(payload)
    if kind == b"iTXt" and payload.startswith(b"XML:com.adobe.xmp\x00"):
        return ["xmp"]
    named = {b"XMP ": "xmp", b"tEXt": "text", b"zTXt": "text", b"iTXt": "text", b"tIME": "time"}
    return [named.get(bytes(kind), bytes(kind).decode("latin-1").strip().lower())]


def _webp_size(data: bytes, spans: list[Span]) -> tuple[int, int]:
    for span in spans:
        payload = data[span.start + 8:span.end]
        if span.kind == b"VP8X":
            return (int.from_bytes(payload[4:7], "little") + 1,
                    int.from_bytes(payload[7:10], "little") + 1)
        if span.kind == b"VP8L":
            bits = int.from_bytes(payload[1:5], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if span.kind == b"VP8 ":
            return (int.from_bytes(payload[6:8], "little") & 0x3FFF,
                    int.from_bytes(payload[8:10], "little") & 0x3FFF)
    raise ContainerError("WebP: no image chunk")
