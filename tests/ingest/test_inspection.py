"""Inspection and dedup features: invariance over resubmission kinds, rejections with reasons."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from schemas.reasons import Reason
from schemas.settings import DedupSettings
from tasks.ingest.inspection import (
    ImageFeatures,
    Rejection,
    inspect_image,
    thumb_similarity,
)
from tests.photos import encode, textured_photo, variants

SETTINGS = DedupSettings()


def _dist(a: int, b: int) -> int:
    return (a ^ b).bit_count()


@pytest.fixture(scope="module")
def original() -> tuple[Image.Image, ImageFeatures]:
    im = textured_photo(1)
    feats = inspect_image(encode(im, quality=90))
    assert isinstance(feats, ImageFeatures)
    return im, feats


@pytest.mark.parametrize("kind", ["recompressed", "resized", "cropped", "brighter", "darker", "png", "exif_rotated", "blurred"])
def test_near_duplicate_kinds_stay_within_radius_and_confirm(original, kind):
    im, base = original
    feats = inspect_image(variants(im)[kind], min_side=500)
    assert isinstance(feats, ImageFeatures), feats
    assert _dist(base.phash, feats.phash) <= SETTINGS.radius
    sim, local = thumb_similarity(base.thumb, feats.thumb)
    assert sim >= SETTINGS.min_similarity and local <= SETTINGS.max_local_residual


def test_mirrored_copy_matches_through_the_mirrored_hash(original):
    im, base = original
    feats = inspect_image(encode(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), quality=85))
    assert isinstance(feats, ImageFeatures)
    assert _dist(base.phash, feats.phash_mirror) <= SETTINGS.radius
    sim, local = thumb_similarity(base.thumb, feats.thumb, mirror_b=True)
    assert sim >= SETTINGS.min_similarity and local <= SETTINGS.max_local_residual


def test_distinct_photos_are_far_apart():
    feats = [inspect_image(encode(textured_photo(s))) for s in range(10, 22)]
    for i, a in enumerate(feats):
        for b in feats[i + 1:]:
            assert isinstance(a, ImageFeatures) and isinstance(b, ImageFeatures)
            assert thumb_similarity(a.thumb, b.thumb)[0] < SETTINGS.min_similarity


def test_exif_orientation_gives_the_displayed_size(original):
    im, _ = original
    feats = inspect_image(variants(im)["exif_rotated"])
    assert isinstance(feats, ImageFeatures)
    assert (feats.width, feats.height, feats.orientation) == (im.width, im.height, 6)


def _bomb() -> bytes:
    return encode(Image.new("1", (12000, 12000)), "PNG")


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: b"", Reason.EMPTY_FILE),
        (lambda d: b"this is not an image\n" * 10, Reason.NOT_AN_IMAGE),
        (lambda d: d[: len(d) * 6 // 10], Reason.UNREADABLE),
        (lambda d: d[:600] + bytes(range(256)) * ((len(d) - 600) // 256), Reason.UNREADABLE),
        (lambda d: encode(textured_photo(3, (640, 480))), Reason.TOO_SMALL),
        (lambda d: encode(textured_photo(3, (1280, 720)), "GIF"), Reason.UNSUPPORTED_FORMAT),
        (lambda d: _bomb(), Reason.DECOMPRESSION_BOMB),
    ],
    ids=["empty", "text", "truncated", "corrupt", "small", "gif", "bomb"],
)
def test_bad_inputs_are_rejected_with_a_reason(make, reason):
    data = make(encode(textured_photo(2), quality=90))
    result = inspect_image(data)
    assert isinstance(result, Rejection)
    assert result.reason is reason, result.detail
    assert result.sha256 is not None and result.bytes == len(data)


def test_thumb_similarity_is_brightness_invariant(original):
    _, base = original
    brighter = bytes(min(255, int(v * 1.1) + 5) for v in base.thumb)
    assert thumb_similarity(base.thumb, brighter)[0] > 0.97


def test_png_and_jpeg_of_the_same_pixels_agree():
    im = textured_photo(5)
    a = inspect_image(encode(im, quality=95))
    b = inspect_image(encode(im, "PNG"))
    assert isinstance(a, ImageFeatures) and isinstance(b, ImageFeatures)
    assert _dist(a.phash, b.phash) <= 4
    assert a.format == "JPEG" and b.format == "PNG"
    assert Image.open(io.BytesIO(encode(im, "PNG"))).size == (b.width, b.height)
