"""Per-image inspection: decode once (small), orient, check, and compute the dedup features.

Pure functions over bytes: no I/O, no Prefect. JPEGs are decoded at 1/8 scale with libjpeg's
DCT scaling, which is enough for perceptual hashing and far cheaper than a full decode; the
decoder still reads the whole entropy-coded stream. It goes through simplejpeg (libjpeg-turbo)
in strict mode, because libjpeg only *warns* about damaged data (a file cut short with an end
marker appended, a frame header that disagrees with the data) and Pillow hides its warnings:
such a file would decode to a grey-padded image and be accepted. The 1/8-scale grey output is
the same, pixel for pixel, as Pillow's ``draft("L", ...)`` decode, so features are unchanged.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, UnidentifiedImageError

from schemas.reasons import Reason

ImageFile.LOAD_TRUNCATED_IMAGES = False
HASH_SIZE = 8  # 8x8 low-frequency DCT coefficients -> 64-bit hash
DCT_SIZE = 32
THUMB_SIZE = 32
_ORIENT_OPS: dict[int, tuple[Image.Transpose, ...]] = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


# libjpeg warnings that mean damaged data (strict mode raises them as ValueError). The others
# (an unknown JFIF revision or Adobe transform code, odd scan parameters) do not.
_DAMAGE_WARNINGS = ("Corrupt JPEG data", "Premature end of JPEG file")
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})  # 16-bit grey PNGs


class DamagedData(ValueError):
    """The decoder warned of damaged data: the file decodes, but not to the photo it was."""


_DCT = _dct_matrix(DCT_SIZE)
_BIT_WEIGHTS = (np.uint64(1) << np.arange(64, dtype=np.uint64)).astype(np.uint64)


@dataclass(frozen=True)
class ImageFeatures:
    """What inspection learned about a readable, in-spec image."""

    sha256: str
    bytes: int
    format: str
    width: int  # after EXIF orientation
    height: int
    orientation: int
    phash: int
    phash_mirror: int
    thumb: builtins.bytes  # THUMB_SIZE x THUMB_SIZE grey, row-major uint8


@dataclass(frozen=True)
class Rejection:
    """Why an input cannot be accepted, before any duplicate check."""

    reason: Reason
    detail: str
    sha256: str | None = None
    bytes: int | None = None


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data`` (hashlib releases the GIL for large buffers)."""
    return hashlib.sha256(data).hexdigest()


def phash_bits(grey32: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a 32x32 grey array: low 8x8 coefficients vs their median."""
    coeffs = (_DCT @ grey32 @ _DCT.T)[:HASH_SIZE, :HASH_SIZE]
    bits = (coeffs > np.median(coeffs)).reshape(-1)
    return int(_BIT_WEIGHTS[bits].sum(dtype=np.uint64))


def mirrored_phash_bits(grey32: np.ndarray) -> int:
    """The perceptual hash of the horizontally mirrored image."""
    return phash_bits(grey32[:, ::-1])


def centre_phash_bits(thumbs: np.ndarray) -> np.ndarray:
    """The perceptual hash of each thumbnail's centre, cut by ``CENTRE_CUT`` per side and
    stretched back to the full frame: (k, n, n) uint8 -> (k,) uint64.

    The crop path's hash. A resubmission cropped by 2-8% per side and zoomed back lies closer
    to its original's centre hash than to its full hash (and the other way round when the
    cropped copy came first). Derived from the stored thumbnail (the full hash's input), so a
    catalog needs no column for it. In float64, batched: the cut-and-stretch and the DCT are
    one 8 x n matrix on each side.
    """
    t = np.asarray(thumbs, np.float64).reshape(-1, THUMB_SIZE, THUMB_SIZE)
    coeffs = (_CENTRE_DCT @ t @ _CENTRE_DCT.T).reshape(len(t), HASH_SIZE * HASH_SIZE)
    bits = coeffs > np.median(coeffs, axis=1, keepdims=True)
    return (bits.astype(np.uint64) * _BIT_WEIGHTS).sum(axis=1, dtype=np.uint64)


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - any broken EXIF block is not a broken photo
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _draft_scale(w: int, h: int) -> int:
    """The DCT scale denominator Pillow's ``draft`` picks for a target of (w // 8, h // 8)."""
    ratio = min(w // max(1, w // 8), h // max(1, h // 8))
    return next(s for s in (8, 4, 2, 1) if ratio >= s)


def jpeg_small_grey(data: bytes, w: int, h: int, *, colour: bool = False) -> np.ndarray:
    """libjpeg's DCT-scaled grey decode (``draft``'s scale); ``DamagedData`` on a damage warning.

    ``colour``: CMYK/YCCK data, decoded only as a check (libjpeg has no CMYK-to-grey).
    """
    s = _draft_scale(w, h)
    size = {"min_width": -(-w // s), "min_height": -(-h // s)}
    space = "CMYK" if colour else "GRAY"
    try:
        grey = simplejpeg.decode_jpeg(data, colorspace=space, strict=True, **size)
    except ValueError as exc:
        if str(exc).startswith(_DAMAGE_WARNINGS):
            raise DamagedData(str(exc)) from None
        grey = simplejpeg.decode_jpeg(data, colorspace=space, strict=False, **size)
    return np.ascontiguousarray(grey[..., 0])


def _to_8bit_grey(im: Image.Image) -> Image.Image:
    """Grey, 8 bits: 16-bit grey (modes I;16*, I) keeps its high byte, as 48-bit RGB does."""
    if im.mode in _WIDE_MODES:
        wide = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
        return Image.fromarray((wide >> 8).astype(np.uint8))
    return im if im.mode == "L" else im.convert("L")


def _decode_small_grey(im: Image.Image, data: bytes) -> Image.Image:
    """Decode at about 1/8 scale in grey (JPEG DCT scaling); other formats fully, then reduce."""
    w, h = im.size
    if im.format in ("JPEG", "MPO") and im.mode in ("L", "RGB"):
        return Image.fromarray(jpeg_small_grey(data, w, h))
    if im.format in ("JPEG", "MPO"):  # CMYK: checked by libjpeg, converted as Pillow does
        jpeg_small_grey(data, w, h, colour=True)
        im.draft("L", (max(1, w // 8), max(1, h // 8)))
    im.load()
    small = _to_8bit_grey(im)
    if small.width > 2 * w // 8 + 2:  # not draft-scaled (PNG, WebP): reduce now
        small = small.reduce(max(1, min(w, h) // 135))
    return small


def _features(small: Image.Image, orientation: int) -> tuple[int, int, bytes]:
    for op in _ORIENT_OPS.get(orientation, ()):
        small = small.transpose(op)
    grey32 = np.asarray(
        small.resize((DCT_SIZE, DCT_SIZE), Image.Resampling.BOX), dtype=np.float32
    )
    thumb = small.resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BOX).tobytes()
    return phash_bits(grey32), mirrored_phash_bits(grey32), thumb


def _open_checked(data: bytes, *, formats: tuple[str, ...], max_pixels: int,
                  min_side: int) -> Image.Image | Rejection:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return Rejection(Reason.NOT_AN_IMAGE, "no image format recognised")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return Rejection(Reason.DECOMPRESSION_BOMB, str(exc))
    except Exception as exc:  # noqa: BLE001 - header present but broken, in any way
        return Rejection(Reason.UNREADABLE, f"cannot parse header: {exc}")
    w, h = im.size
    if im.format not in formats:
        return Rejection(Reason.UNSUPPORTED_FORMAT, f"format {im.format} not in {formats}")
    if w * h > max_pixels:
        return Rejection(Reason.DECOMPRESSION_BOMB, f"declares {w}x{h} = {w * h} pixels")
    if min(w, h) < min_side:
        return Rejection(Reason.TOO_SMALL, f"{w}x{h}: short side below {min_side}px")
    return im


def inspect_image(data: bytes, *, formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "MPO"),
                  max_pixels: int = 100_000_000, min_side: int = 720) -> ImageFeatures | Rejection:
    """Check one file's bytes and compute its features, or say why it is rejected."""
    if not data:
        return Rejection(Reason.EMPTY_FILE, "zero bytes", sha256_hex(data), 0)
    digest, size = sha256_hex(data), len(data)
    opened = _open_checked(data, formats=formats, max_pixels=max_pixels, min_side=min_side)
    if isinstance(opened, Rejection):
        return Rejection(opened.reason, opened.detail, digest, size)
    orientation = _orientation(opened)
    w, h = opened.size  # the declared size: draft() below shrinks opened.size
    try:
        small = _decode_small_grey(opened, data)
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data, bad PNG chunks, ...
        return Rejection(Reason.UNREADABLE, f"decoder failed: {exc}", digest, size)
    phash, mirror, thumb = _features(small, orientation)
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return ImageFeatures(digest, size, str(opened.format), w, h, orientation, phash, mirror, thumb)


def _crop_resampler(size: int, lo: float, hi: float) -> np.ndarray:
    """Linear-interpolation matrix that crops ``lo``/``hi`` pixels off an axis and resamples."""
    pos = lo + (np.arange(size) + 0.5) * (size - lo - hi) / size - 0.5
    pos = np.clip(pos, 0, size - 1)
    left = np.floor(pos).astype(int)
    right = np.minimum(left + 1, size - 1)
    frac = (pos - left).astype(np.float32)
    m = np.zeros((size, size), np.float32)
    m[np.arange(size), left] += 1 - frac
    m[np.arange(size), right] += frac
    return m


def _crop_resamplers(size: int, margins: tuple[float, ...]) -> np.ndarray:
    """``_crop_resampler`` for every (``lo``, ``hi``) pair of ``margins``."""
    return np.stack([_crop_resampler(size, lo, hi) for lo in margins for hi in margins])


def _nearby_resamplers(size: int, margins: tuple[float, ...], step: float) -> np.ndarray:
    """For each (lo, hi) pair of ``margins``: the 9 crops with lo and hi moved by 0 or +-step."""
    moves = (-step, 0.0, step)
    return np.stack([np.stack([_crop_resampler(size, max(0.0, lo + a), max(0.0, hi + b))
                               for a in moves for b in moves])
                     for lo in margins for hi in margins])


# Crops of up to ~5% per side in steps of ~2.5%: every (top, bottom) x (left, right) pair.
_RESAMPLERS = _crop_resamplers(THUMB_SIZE, (0.0, 0.8, 1.6))
# The crop path's search: up to ~7.5% per side, same steps (16 x 16 views instead of 9 x 9),
# then the best view refined by half a step per margin (9 x 9 views around it).
_WIDE_MARGINS = (0.0, 0.8, 1.6, 2.4)
_WIDE_RESAMPLERS = _crop_resamplers(THUMB_SIZE, _WIDE_MARGINS)
_REFINERS = _nearby_resamplers(THUMB_SIZE, _WIDE_MARGINS, 0.4)
CENTRE_CUT = 0.05  # of each side: the middle of the 2-8% crops the crop path is built for
_CENTRE_DCT = _dct_matrix(DCT_SIZE).astype(np.float64)[:HASH_SIZE] @ _crop_resamplers(
    THUMB_SIZE, (CENTRE_CUT * THUMB_SIZE,))[0].astype(np.float64)


def _standardise(flat: np.ndarray) -> np.ndarray:
    """Rows minus their mean, divided by their norm (so a dot product is a Pearson r)."""
    flat = flat - flat.mean(axis=-1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=-1, keepdims=True), 1e-6)


def _aligned_views(x: np.ndarray, resamplers: np.ndarray) -> np.ndarray:
    """Every crop-and-resample of each image in ``x`` (k, n, n): (k, views, n*n), standardised."""
    n, r = THUMB_SIZE, len(resamplers)
    stacked = resamplers.reshape(r * n, n)
    views = (stacked @ x) @ stacked.T  # (k, r*y, c*x): two large matmuls, not k*r*r small ones
    views = views.reshape(-1, r, n, r, n).transpose(0, 1, 3, 2, 4)
    return _standardise(views.reshape(x.shape[0], r * r, n * n))


def thumbs_array(thumbs: list[bytes]) -> np.ndarray:
    """Thumbnails as a (k, n, n) uint8 array."""
    flat = np.frombuffer(b"".join(thumbs), dtype=np.uint8)
    return flat.reshape(len(thumbs), THUMB_SIZE, THUMB_SIZE)


@dataclass(frozen=True)
class ThumbMatch:
    """The confirming check's scores for each target: global and worst local agreement."""

    similarity: np.ndarray  # best crop-tolerant Pearson r, in [-1, 1]
    local_residual: np.ndarray  # worst 4x4-block mean |residual| after that fit, in std units


def thumb_similarities(query: bytes, targets: np.ndarray, *, mirror_query: bool = False,
                       wide_crops: bool = False) -> ThumbMatch:
    """Crop-tolerant comparison of one thumbnail with each of ``targets`` (k, n, n).

    The confirming check for near duplicates, independent of the DCT hash: it compares pixels
    in space, searching crops of up to ~5% per side of either image (a resubmission may be
    the cropped one or the original), invariant to brightness and contrast. Besides the
    global correlation it reports the worst local disagreement, so two photos of the same
    room that differ in one region (another person) are told apart. ``wide_crops`` searches
    crops of up to ~7.5% per side (the crop path), refined around the best one by half a
    step, at about three times the cost.
    """
    q = np.frombuffer(query, dtype=np.uint8).reshape(THUMB_SIZE, THUMB_SIZE).astype(np.float32)
    if mirror_query:
        q = np.ascontiguousarray(q[:, ::-1])
    t = np.asarray(targets, dtype=np.float32).reshape(-1, THUMB_SIZE, THUMB_SIZE)
    k = len(t)
    if k == 0:
        return ThumbMatch(np.empty(0, np.float32), np.empty(0, np.float32))
    q_flat = _standardise(q.reshape(-1))
    t_flat = _standardise(t.reshape(k, -1))
    resamplers = _WIDE_RESAMPLERS if wide_crops else _RESAMPLERS
    q_views = _aligned_views(q[None], resamplers)[0]  # (v, n*n)
    t_views = _aligned_views(t, resamplers)  # (k, v, n*n)
    s1 = q_views @ t_flat.T  # (v, k): the query cropped
    s2 = t_views @ q_flat  # (k, v): the target cropped
    i1, i2 = s1.argmax(axis=0), s2.argmax(axis=1)
    r1, r2 = s1[i1, np.arange(k)], s2[np.arange(k), i2]
    use1 = r1 >= r2
    a = np.where(use1[:, None], q_views[i1], t_views[np.arange(k), i2])
    b = np.where(use1[:, None], t_flat, q_flat[None])
    sims = np.maximum(r1, r2)
    if wide_crops:
        a, sims = _refined(q, t, use1=use1, views=np.where(use1, i1, i2), targets_flat=t_flat,
                           query_flat=q_flat)
    local = _worst_block_residual(a, b, sims)
    flat = (t.reshape(k, -1).std(axis=1) < 1.0) | (q.std() < 1.0)
    if flat.any():  # a flat image: equal only if both are flat and alike
        alike = np.abs(t.reshape(k, -1) - q.reshape(-1)).max(axis=1) <= 2.0
        sims = np.where(flat, alike.astype(np.float32), sims)
        local = np.where(flat, np.where(alike, 0.0, 9.0), local).astype(np.float32)
    return ThumbMatch(sims.astype(np.float32), local.astype(np.float32))


def _refined(q: np.ndarray, t: np.ndarray, *, use1: np.ndarray, views: np.ndarray,
             targets_flat: np.ndarray, query_flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's best wide-grid crop refined by half a grid step per margin: (views, r).

    The cropped side is the query where ``use1``, else the target; ``views`` index the wide
    grid. The grid view is among the refined ones, so r never drops.
    """
    r = len(_WIDE_RESAMPLERS)
    best_views, sims = [], []
    for j in range(len(t)):
        x, other = (q, targets_flat[j]) if use1[j] else (t[j], query_flat)
        row, col = divmod(int(views[j]), r)
        near = (_REFINERS[row] @ x)[:, None] @ _REFINERS[col].transpose(0, 2, 1)[None]
        cand = _standardise(near.reshape(-1, THUMB_SIZE * THUMB_SIZE))
        s = cand @ other
        best = int(s.argmax())
        best_views.append(cand[best])
        sims.append(s[best])
    return np.stack(best_views), np.asarray(sims, np.float32)


def _worst_block_residual(a: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Max over 4x4 blocks of the mean |b - r*a|, both standardised to unit variance."""
    n = THUMB_SIZE
    scale = np.sqrt(n * n)
    resid = np.abs(b * scale - r[:, None] * a * scale).reshape(-1, n // 4, 4, n // 4, 4)
    return resid.mean(axis=(2, 4)).reshape(len(a), -1).max(axis=1)


def coarse_similarities(query: bytes, targets: np.ndarray, *, mirror_query: bool = False
                        ) -> np.ndarray:
    """Plain Pearson correlation of 8x8 block means: a cheap, crop-robust pre-filter."""
    q = np.frombuffer(query, dtype=np.uint8).reshape(THUMB_SIZE, THUMB_SIZE).astype(np.float32)
    if mirror_query:
        q = q[:, ::-1]
    b = THUMB_SIZE // 8
    q8 = q.reshape(8, b, 8, b).mean(axis=(1, 3)).reshape(-1)
    t8 = np.asarray(targets, np.float32).reshape(-1, 8, b, 8, b).mean(axis=(2, 4))
    return _standardise(t8.reshape(len(t8), -1)) @ _standardise(q8)


def thumb_similarity(a: bytes, b: bytes, *, mirror_b: bool = False) -> tuple[float, float]:
    """``thumb_similarities`` of a single pair (``b`` mirrored when asked): (r, local)."""
    m = thumb_similarities(b, thumbs_array([a]), mirror_query=mirror_b)
    return float(m.similarity[0]), float(m.local_residual[0])
