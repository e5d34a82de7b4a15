"""Published image bytes: upright, no metadata, pixels untouched unless a turn was needed.

Every metadata kind is planted with Pillow (``Image.Exif`` with a GPS IFD and ``Artist``,
XMP, a JPEG comment, PNG text chunks, WebP EXIF/XMP chunks) and looked for with Pillow."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps, JpegImagePlugin
from PIL.PngImagePlugin import PngInfo

from tasks.publish.containers import ContainerError, inspect_member, strip_metadata
from tasks.publish.published_image import TURNS, published_format, published_image
from tests.publish.phone_photos import (
    SRGB,
    STORE,
    WORKER,
    XMP,
    assert_no_metadata,
    personal_exif,
    photo,
    pixels,
)


def stored_jpeg(orientation: int, *, size: tuple[int, int] = (160, 96),
                subsampling: int = 2) -> tuple[bytes, Image.Image]:
    """A photo stored so that its EXIF orientation shows it upright, with every kind of
    personal metadata; returns the bytes and the upright picture."""
    upright = photo(orientation, size)
    stored = upright if orientation == 1 else upright.transpose(STORE[orientation])
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=92, subsampling=subsampling, exif=personal_exif(orientation),
                xmp=XMP, comment=b"shot by raw-worker-4711", icc_profile=SRGB)
    return buf.getvalue(), upright


def test_the_stored_photo_really_carries_the_metadata() -> None:
    data, _ = stored_jpeg(6)
    assert inspect_member(data).metadata == ("exif", "gps", "artist", "copyright",
                                             "user_comment", "xmp", "comment")
    with Image.open(io.BytesIO(data)) as im:
        assert im.getexif()[0x013B] == WORKER and im.info["comment"]


def test_upright_photo_is_stripped_without_touching_the_pixels() -> None:
    data, _ = stored_jpeg(1)
    published = published_image(data, orientation=1)
    assert_no_metadata(published)
    np.testing.assert_array_equal(pixels(published), pixels(data))
    with Image.open(io.BytesIO(published)) as im:
        assert im.info.get("icc_profile") == SRGB
        assert im.info.get("jfif") is not None


@pytest.mark.parametrize("orientation", sorted(TURNS))
def test_turned_photo_is_published_upright(orientation: int) -> None:
    data, upright = stored_jpeg(orientation)
    published = published_image(data, orientation=orientation)
    assert_no_metadata(published)
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.int16)
    got = pixels(published)
    assert got.shape == expected.shape == (upright.height, upright.width, 3)
    assert np.abs(got - expected).mean() < 3.0  # one more JPEG pass at quality 95; a wrong turn: 30+
    with Image.open(io.BytesIO(published)) as im:
        assert im.info.get("icc_profile") == SRGB
        assert JpegImagePlugin.get_sampling(im) == 2  # the source's 4:2:0 survives any turn


def test_a_turned_422_photo_is_encoded_444() -> None:
    data, _ = stored_jpeg(6, subsampling=1)
    with Image.open(io.BytesIO(published_image(data, orientation=6))) as im:
        assert JpegImagePlugin.get_sampling(im) == 0


def test_publishing_is_deterministic() -> None:
    data, _ = stored_jpeg(6)
    assert published_image(data, orientation=6) == published_image(data, orientation=6)
    again, _ = stored_jpeg(1)
    assert published_image(again, orientation=1) == published_image(again, orientation=1)


def test_nothing_to_strip_gives_the_same_bytes() -> None:
    buf = io.BytesIO()
    photo(3, (64, 48)).save(buf, "JPEG", quality=90)  # APP0 JFIF only
    data = buf.getvalue()
    assert published_image(data, orientation=1) is data


def test_mpo_and_trailers_keep_only_the_first_image() -> None:
    first, second = photo(4, (80, 64)), photo(5, (80, 64))
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[second], exif=personal_exif(1))
    data = buf.getvalue()
    assert "mpf" in inspect_member(data).metadata
    published = published_image(data, orientation=1)
    assert_no_metadata(published)
    with Image.open(io.BytesIO(published)) as im:
        assert im.format == "JPEG" and getattr(im, "n_frames", 1) == 1
    np.testing.assert_array_equal(pixels(published), pixels(data))  # the first frame
    assert published_format("MPO") == "JPEG"
    trailer = published + b"SEFHsamsung-trailer-with-a-name"
    assert inspect_member(trailer).metadata == ("trailer",)
    assert strip_metadata(trailer) == published


def test_png_text_and_exif_chunks_are_dropped() -> None:
    im = photo(6, (72, 40))
    info = PngInfo()
    info.add_text("Author", WORKER)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    buf = io.BytesIO()
    im.save(buf, "PNG", pnginfo=info, exif=personal_exif(1), icc_profile=SRGB)
    data = buf.getvalue()
    assert {"text", "xmp", "exif", "gps", "artist"} <= set(inspect_member(data).metadata)
    published = published_image(data, orientation=1)
    assert_no_metadata(published)
    np.testing.assert_array_equal(pixels(published), pixels(data))
    with Image.open(io.BytesIO(published)) as out:
        assert out.info.get("icc_profile") == SRGB


@pytest.mark.parametrize("lossless", [False, True])
def test_webp_exif_and_xmp_chunks_are_dropped(lossless: bool) -> None:
    im = photo(7, (72, 40))
    buf = io.BytesIO()
    im.save(buf, "WEBP", lossless=lossless, quality=90, exif=personal_exif(1), xmp=XMP,
            icc_profile=SRGB)
    data = buf.getvalue()
    assert {"exif", "gps", "artist", "xmp"} <= set(inspect_member(data).metadata)
    published = published_image(data, orientation=1)
    assert_no_metadata(published)
    assert int.from_bytes(published[4:8], "little") == len(published) - 8  # the RIFF size
    assert published[12:16] == b"VP8X" and published[20] & 0x0C == 0  # no EXIF/XMP flags
    np.testing.assert_array_equal(pixels(published), pixels(data))
    turned = published_image(data, orientation=6)
    assert_no_metadata(turned)
    assert inspect_member(turned)[:2] == (40, 72)


def test_member_size_is_the_decoded_size() -> None:
    for fmt in ("JPEG", "PNG", "WEBP"):
        buf = io.BytesIO()
        photo(8, (50, 30)).save(buf, fmt)
        assert inspect_member(buf.getvalue())[:2] == (50, 30), fmt


def test_malformed_bytes_are_refused() -> None:
    data, _ = stored_jpeg(1)
    with pytest.raises(ContainerError):
        published_image(b"GIF89a" + data, orientation=1)
    with pytest.raises(ContainerError):
        published_image(data[:200], orientation=1)  # cut inside a segment
    with pytest.raises(ContainerError):
        published_image(data, orientation=9)
