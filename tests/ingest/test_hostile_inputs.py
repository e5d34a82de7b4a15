"""Hostile sources: links out of the source, FIFOs and devices, huge files, damaged JPEGs that
decode with warnings, 16-bit PNGs, malformed tables, a root inside its own source."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from schemas.reasons import Reason
from schemas.settings import DedupSettings, IngestSettings
from tasks.catalog import Catalog
from tasks.ingest.inspection import (
    ImageFeatures,
    Rejection,
    inspect_image,
    jpeg_small_grey,
    thumb_similarity,
)
from tasks.ingest.intake import PlannedInput, nested_root_folder, parse_submissions
from tasks.ingest.reading import inspect_chunk
from tasks.storage import (
    LocalStorage,
    NotRegularFileError,
    OutsideSourceError,
    SourceError,
    TooLargeError,
)
from tests.photos import encode, textured_photo

HAGRID = str(Path(sys.executable).with_name("hagrid"))
DEDUP = DedupSettings()


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a daemon thread; fails when it has not returned after ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---- the local adapter's read path -------------------------------------------------------

@pytest.fixture()
def source(tmp_path: Path) -> Path:
    """A source with a photo, links inside and out, a FIFO, a link to /dev/zero."""
    src, outside = tmp_path / "source", tmp_path / "outside"
    src.mkdir()
    outside.mkdir()
    (src / "photo.jpg").write_bytes(b"jpeg bytes")
    (outside / "secret.jpg").write_bytes(b"not yours")
    (src / "inside.jpg").symlink_to("photo.jpg")
    (src / "outside.jpg").symlink_to(outside / "secret.jpg")
    (src / "up.jpg").symlink_to("../outside/secret.jpg")
    (src / "zero.jpg").symlink_to("/dev/zero")
    (src / "linked_dir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(src / "fifo.jpg")
    return src


def test_links_are_read_only_while_they_stay_inside_the_source(source):
    store = LocalStorage(source)
    assert store.read_input("inside.jpg", max_bytes=100) == b"jpeg bytes"
    for key in ("outside.jpg", "up.jpg", "zero.jpg", "linked_dir/secret.jpg"):
        with pytest.raises(OutsideSourceError):
            store.read_input(key, max_bytes=100)


def test_listing_does_not_descend_into_a_linked_folder(source):
    keys = LocalStorage(source).list()
    assert "photo.jpg" in keys and not any(k.startswith("linked_dir") for k in keys)


def test_a_fifo_or_device_is_refused_without_blocking(source):
    store = LocalStorage(source)
    with pytest.raises(NotRegularFileError):
        within(10, lambda: store.read_input("fifo.jpg", max_bytes=100))
    with pytest.raises(NotRegularFileError):  # a device under the root itself
        within(10, lambda: LocalStorage("/dev").read_input("zero", max_bytes=100))


def test_the_size_cap_is_decided_before_reading(tmp_path):
    store = LocalStorage(tmp_path)
    (tmp_path / "cap.jpg").write_bytes(b"x" * 1000)
    (tmp_path / "over.jpg").write_bytes(b"x" * 1001)
    with open(tmp_path / "sparse.jpg", "wb") as fh:
        fh.truncate(4 << 30)  # 4 GiB, sparse: reading it would take seconds and the memory
    assert store.read_input("cap.jpg", max_bytes=1000) == b"x" * 1000
    for key in ("over.jpg", "sparse.jpg"):
        with pytest.raises(TooLargeError):
            within(10, lambda key=key: store.read_input(key, max_bytes=1000))


def test_special_inputs_get_their_own_reasons_and_never_block(source, tmp_path):
    items = [PlannedInput(f"s{i}", key, i, "w1", "like", None)
             for i, key in enumerate(["fifo.jpg", "zero.jpg", "outside.jpg"])]
    settings = IngestSettings(max_bytes=1000)
    done = within(20, lambda: inspect_chunk(LocalStorage(source), LocalStorage(tmp_path / "root"),
                                            items, settings=settings))
    assert [(x.result.reason, x.result.sha256) for x in done] == [
        (Reason.NOT_REGULAR_FILE, None), (Reason.OUTSIDE_SOURCE, None),
        (Reason.OUTSIDE_SOURCE, None)]
    assert not (tmp_path / "root").exists(), "nothing stored"


@pytest.mark.slow
def test_s3_inputs_are_capped_by_size(s3_server):
    from tasks.storage import S3Storage

    s3_server.client().create_bucket(Bucket="capped")
    for key, size in (("empty.jpg", 0), ("cap.jpg", 1000), ("over.jpg", 1001)):
        s3_server.client().put_object(Bucket="capped", Key=f"drop/{key}", Body=b"x" * size)
    store = S3Storage("s3://capped/drop", endpoint_url=s3_server.endpoint_url)
    store.client = s3_server.client()
    assert store.read_input("empty.jpg", max_bytes=1000) == b""
    assert store.read_input("cap.jpg", max_bytes=1000) == b"x" * 1000
    with pytest.raises(TooLargeError):
        store.read_input("over.jpg", max_bytes=1000)
    with pytest.raises(FileNotFoundError):
        store.read_input("absent.jpg", max_bytes=1000)


# ---- damaged JPEGs and 16-bit PNGs -------------------------------------------------------

@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return textured_photo(21, (1280, 960))


def _cut(data: bytes, fraction: float) -> bytes:
    """The file cut at ``fraction`` with an end-of-image marker appended."""
    return data[:int(len(data) * fraction)] + b"\xff\xd9"


def _with_height(data: bytes, height: int) -> bytes:
    """The file with its frame header (SOF0/SOF2) declaring another height."""
    at = min(i for i in (data.find(b"\xff\xc0"), data.find(b"\xff\xc2")) if i >= 0)
    return data[:at + 5] + struct.pack(">H", height) + data[at + 7:]


@pytest.mark.parametrize("damage", [
    lambda d: _cut(d, 0.2), lambda d: _cut(d, 0.5), lambda d: _cut(d, 0.9),
    lambda d: _with_height(d, 800), lambda d: _with_height(d, 1100),
], ids=["cut20", "cut50", "cut90", "sof_shorter", "sof_taller"])
@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_jpegs_that_decode_only_with_warnings_are_unreadable(photo, damage, progressive):
    data = damage(encode(photo, quality=90, progressive=progressive))
    result = inspect_image(data)
    assert isinstance(result, Rejection), "accepted a damaged JPEG"
    assert result.reason is Reason.UNREADABLE, result.detail
    assert result.sha256 is not None and result.bytes == len(data)


@pytest.mark.parametrize("size", [(1280, 720), (1281, 723), (720, 1279), (97, 61), (7, 5)])
@pytest.mark.parametrize("kw", [
    {"quality": 90}, {"quality": 75, "subsampling": 0}, {"quality": 90, "progressive": True},
], ids=["420", "444", "progressive"])
def test_jpeg_grey_decode_is_pillows_draft_pixel_for_pixel(size, kw):
    """The features of undamaged JPEGs must not change (the catalog's hashes were made so)."""
    for mode in ("RGB", "L"):
        data = encode(textured_photo(3).resize(size).convert(mode), **kw)
        im = Image.open(io.BytesIO(data))
        im.draft("L", (max(1, size[0] // 8), max(1, size[1] // 8)))
        assert np.array_equal(jpeg_small_grey(data, *size), np.asarray(im.convert("L")))


def _png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG (grey for 2-D ``pixels``, 48-bit RGB for 3 channels), written by hand."""
    h, w = pixels.shape[:2]
    colour_type = 0 if pixels.ndim == 2 else 2
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("depth", ["grey16", "rgb48"])
def test_a_16_bit_png_copy_keeps_the_photos_features(photo, depth):
    base = inspect_image(encode(photo, quality=90))
    pixels = np.asarray(photo.convert("L") if depth == "grey16" else photo)
    copy = inspect_image(_png16(pixels.astype(np.uint16) * 257))
    assert isinstance(base, ImageFeatures) and isinstance(copy, ImageFeatures), copy
    assert (copy.format, copy.width, copy.height) == ("PNG", 1280, 960)
    assert (base.phash ^ copy.phash).bit_count() <= DEDUP.radius
    similarity, local = thumb_similarity(base.thumb, copy.thumb)
    assert similarity >= DEDUP.min_similarity and local <= DEDUP.max_local_residual


# ---- submissions tables ------------------------------------------------------------------

DEEP_JSONL = b"[" * 400_000
DUPLICATE_COLUMN = b"file,user_id,gesture,gesture\na.jpg,w1,like,palm\n"


@pytest.mark.parametrize("name, data, message", [
    ("s.jsonl", DEEP_JSONL, "nested too deeply"),
    ("s.jsonl", b'{"file": "a.jpg", "user_id": ' + b"[" * 5000 + b"]" * 5000 + b"}\n",
     "nested too deeply"),
    ("s.csv", DUPLICATE_COLUMN, "column 'gesture' appears 2 times"),
    ("s.csv", b'"file",user_id,gesture,file\na.jpg,w1,like,b.jpg\n', "column 'file'"),
])
def test_hostile_tables_raise_a_source_error(name, data, message):
    with pytest.raises(SourceError, match=message):
        parse_submissions(data, name=name)


def test_a_duplicate_column_the_pipeline_does_not_read_is_harmless():
    table = parse_submissions(b"file,user_id,gesture,x,x\na.jpg,w1,like,1,2\n", name="s.csv")
    assert table.column("gesture").to_pylist() == ["like"]


@pytest.mark.parametrize("name, data", [("s.jsonl", DEEP_JSONL), ("s.csv", DUPLICATE_COLUMN)],
                         ids=["deep_jsonl", "duplicate_column"])
def test_cli_exits_2_with_an_error_line_on_a_hostile_table(name, data, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / name).write_bytes(data)
    env = dict(os.environ, PREFECT_HOME=str(tmp_path), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([HAGRID, "ingest", str(tmp_path / "src"), "--submissions",
                           str(tmp_path / name), "--root", str(tmp_path / "root")],
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error:" in done.stderr and "Traceback" not in done.stderr


# ---- the flow on a hostile source, with its root inside it -------------------------------

def test_a_root_inside_the_source_is_no_part_of_it():
    assert nested_root_folder("/data/drop", "/data/drop/root") == "root"
    assert nested_root_folder("/data/drop", "/data/drop-2/root") is None
    assert nested_root_folder("s3://b/drop", "s3://b/drop/x/root") == "x/root"
    assert nested_root_folder("/data/drop", "s3://b/drop/root") is None
    with pytest.raises(SourceError, match="source folder itself"):
        nested_root_folder("/data/drop/", "/data/drop")


@pytest.fixture(scope="module")
def hostile_batch(photo: Image.Image, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A source with a photo, a link to it, links out, a huge file, a damaged JPEG and a
    16-bit PNG copy; ingested twice, with the dataset root inside the source."""
    base = tmp_path_factory.mktemp("hostile")
    src, outside = base / "source", base / "outside"
    src.mkdir()
    outside.mkdir()
    (src / "good.jpg").write_bytes(encode(photo, quality=90))
    (outside / "stolen.jpg").write_bytes(encode(textured_photo(22), quality=90))
    (src / "inside_link.jpg").symlink_to("good.jpg")
    (src / "outside_link.jpg").symlink_to(outside / "stolen.jpg")
    (src / "linked_dir").symlink_to(outside, target_is_directory=True)
    (src / "huge.jpg").write_bytes(encode(textured_photo(23), quality=90) + bytes(4_000_000))
    (src / "cut.jpg").write_bytes(_cut(encode(textured_photo(24), quality=90), 0.5))
    grey = np.asarray(photo.convert("L")).astype(np.uint16) * 257
    (src / "grey16.png").write_bytes(_png16(grey))
    files = ["good.jpg", "inside_link.jpg", "outside_link.jpg", "linked_dir/stolen.jpg",
             "huge.jpg", "cut.jpg", "grey16.png"]
    (src / "submissions.csv").write_text(
        "file,user_id,gesture\n" + "".join(f"{f},w{i},like\n" for i, f in enumerate(files)))
    return src


@pytest.mark.usefixtures("prefect_harness")
def test_a_hostile_source_is_ingested_safely_and_only_once(hostile_batch):
    from flows.ingest import ingest

    src, root = hostile_batch, hostile_batch / "root"
    kwargs = {"source": str(src), "submissions": str(src / "submissions.csv"),
              "root": str(root), "max_bytes": 4_000_000}
    first = ingest(**kwargs)
    catalog = Catalog(LocalStorage(root))
    subs = {r["file"]: r for r in catalog.read_table("submissions").to_pylist()}
    assert {f: r["reason"] for f, r in subs.items()} == {
        "good.jpg": None, "inside_link.jpg": "exact_duplicate",
        "outside_link.jpg": "outside_source", "linked_dir/stolen.jpg": "missing_file",
        "huge.jpg": "too_large", "cut.jpg": "unreadable", "grey16.png": "near_duplicate"}
    assert subs["grey16.png"]["duplicate_of"] == subs["good.jpg"]["image_id"]
    assert subs["outside_link.jpg"]["sha256"] is None and subs["huge.jpg"]["sha256"] is None
    assert len(catalog.root.list("objects")) == first["accepted"] == 1
    again = ingest(**kwargs)
    assert again["inputs"] == 0, again["reasons"]
    assert len(catalog.read_table("submissions")) == len(subs)
