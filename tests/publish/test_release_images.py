"""A release of phone-like photos: EXIF orientation tags, GPS, Artist (a raw worker id), XMP,
comments, an MPO. What a HaGRID loader reads out of the shards is upright and anonymous, the
catalog's objects stay as received, and the bytes are the same on every publish."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from flows.cli import app
from flows.publish import publish
from schemas.annotation import BOXES
from schemas.tables import IMAGES, VERDICTS
from schemas.taxonomy import load_taxonomy
from tasks.catalog import Catalog, image_id_for, object_key
from tasks.ingest.inspection import ImageFeatures, inspect_image
from tasks.publish.exports import layout_jpeg
from tasks.storage import LocalStorage
from tests.publish.phone_photos import (
    STORE,
    WORKER,
    XMP,
    assert_no_metadata,
    personal_exif,
    photo,
    pixels,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def phone_photo(n: int, orientation: int, fmt: str = "JPEG") -> bytes:
    """A 120x80 picture (upright), stored the way a phone tags it, with personal metadata."""
    upright = photo(100 + n, (120, 80))
    stored = upright if orientation == 1 else upright.transpose(STORE[orientation])
    buf = io.BytesIO()
    if fmt == "MPO":
        stored.save(buf, "MPO", save_all=True, append_images=[photo(200 + n, (120, 80))],
                    exif=personal_exif(orientation))
    else:
        stored.save(buf, fmt, quality=90, exif=personal_exif(orientation), xmp=XMP,
                    comment=f"by {WORKER}".encode())
    return buf.getvalue()


def add_images(root: Path, photos: list[bytes]) -> dict[str, bytes]:
    """Catalog rows as ingest would record them (its own inspection), passing every stage."""
    store, gestures = LocalStorage(root), load_taxonomy().gestures
    images, verdicts, boxes, stored = [], [], [], {}
    for i, data in enumerate(photos):
        seen = inspect_image(data, min_side=16)
        assert isinstance(seen, ImageFeatures), seen
        iid = image_id_for(seen.sha256)
        stored[iid] = data
        store.write_bytes(object_key(seen.sha256, seen.format), data)
        images.append({
            "image_id": iid, "sha256": seen.sha256, "object_key": object_key(seen.sha256,
                                                                              seen.format),
            "format": seen.format, "width": seen.width, "height": seen.height,
            "orientation": seen.orientation, "bytes": seen.bytes, "user_id": f"u{i % 4}",
            "gesture": gestures[i % 3], "submitted_at": None, "submission_id": f"s{i}",
            "phash": seen.phash, "phash_mirror": seen.phash_mirror, "thumb": seen.thumb,
            "batch_id": "b", "ingested_at": NOW})
        verdicts += [{"stage": stage, "image_id": iid, "verdict": verdict, "reason": None,
                      "confidence": 1.0, "n_answers": 3, "method": "ds", "batch_id": "b",
                      "decided_at": NOW}
                     for stage, verdict in (("validation", "accepted"), ("filtration", "clear"),
                                            ("annotation", "annotated"))]
        boxes.append({"image_id": iid, "box_index": 0, "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4,
                      "label": gestures[i % 3], "label_conf": 1.0, "agreement": 0.9,
                      "n_votes": 3, "n_annotators": 3, "leading_hand": "right",
                      "leading_conf": 1.0, "method": "median_edges", "batch_id": "b",
                      "decided_at": NOW})
    Catalog(store).write_batch("00000-phones", {
        "images": pa.Table.from_pylist(images, schema=IMAGES),
        "verdicts": pa.Table.from_pylist(verdicts, schema=VERDICTS),
        "boxes": pa.Table.from_pylist(boxes, schema=BOXES)}, info={})
    return stored


def manifest_of(release: Path) -> pd.DataFrame:
    parts = [pq.read_table(p) for p in sorted((release / "manifests").glob("*.parquet"))]
    return pa.concat_tables(parts).to_pandas().set_index("image_id")


@pytest.fixture(scope="module")
def phones(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("phones") / "root"
    photos = [phone_photo(n, orientation) for n, orientation in
              enumerate([6, 6, 8, 3, 1, 1, 2, 5, 7, 4, 6, 1])]
    photos += [phone_photo(20, 1, "MPO"), phone_photo(21, 6, "WEBP")]
    stored = add_images(root, photos)
    publish(root=str(root), version="v1", fractions="50/50", shard_max_count=4)
    return root, stored


def test_members_are_upright_without_metadata_and_the_manifest_describes_them(phones):
    root, stored = phones
    manifest = manifest_of(root / "releases" / "v1")
    images = Catalog(LocalStorage(root)).read_table("images").to_pandas().set_index("image_id")
    assert set(manifest.index) == set(stored)
    for iid, row in manifest.iterrows():
        with (root / "releases" / "v1" / row["shard"]).open("rb") as fh:
            fh.seek(row["offset"])
            member = fh.read(row["size"])
        assert hashlib.sha256(member).hexdigest() == row["sha256"]
        assert row["source_sha256"] == images.loc[iid, "sha256"]
        assert_no_metadata(member)
        got = pixels(member)  # what Image.open(...).convert("RGB") gives a loader
        with Image.open(io.BytesIO(stored[iid])) as original:
            upright = np.asarray(ImageOps.exif_transpose(original).convert("RGB"), np.int16)
        assert got.shape == (row["height"], row["width"], 3) == upright.shape
        if images.loc[iid, "orientation"] == 1:
            np.testing.assert_array_equal(got, upright)  # not re-encoded
        else:
            assert np.abs(got - upright).mean() < 4.0, iid  # JPEG tolerance; a wrong turn: 30+
    assert set(manifest["format"]) == {"JPEG", "WEBP"}  # the MPO is published as a JPEG


def test_the_catalog_objects_are_unchanged(phones):
    root, stored = phones
    store = LocalStorage(root)
    images = Catalog(store).read_table("images").to_pandas()
    for row in images.itertuples():
        assert store.read_bytes(row.object_key) == stored[row.image_id]
        assert hashlib.sha256(stored[row.image_id]).hexdigest() == row.sha256


def test_json_members_and_exports_name_the_published_bytes(phones, tmp_path):
    root, _ = phones
    release = root / "releases" / "v1"
    manifest = manifest_of(release)
    for iid, row in manifest.iterrows():
        with (release / row["shard"]).open("rb") as fh:
            fh.seek(row["json_offset"])
            meta = json.loads(fh.read(row["json_size"]))
        assert meta["sha256"] == row["sha256"]
        assert (meta["width"], meta["height"]) == (row["width"], row["height"])
    out = tmp_path / "layout"
    result = CliRunner().invoke(app, ["export-layout", str(release), str(out)])
    assert result.exit_code == 0, result.output
    for iid, row in manifest.iterrows():
        with (release / row["shard"]).open("rb") as fh:
            fh.seek(row["offset"])
            published = fh.read(row["size"])
        assert hashlib.sha256(published).hexdigest() == row["sha256"]
        # HaGRID's loaders add .jpg to the key: every exported image is a JPEG
        expected = published if row["format"] == "JPEG" else layout_jpeg(published)
        assert (out / row["gesture"] / f"{iid}.jpg").read_bytes() == expected


def test_publishing_again_gives_the_same_shards_and_manifests(phones):
    root, _ = phones
    publish(root=str(root), version="v2", fractions="50/50", shard_max_count=4)
    first, second = root / "releases" / "v1", root / "releases" / "v2"
    names = sorted(p.relative_to(first).as_posix() for p in first.rglob("*")
                   if p.is_file() and p.parts[len(first.parts)] in ("shards", "manifests"))
    assert any(n.startswith("shards/") for n in names)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert not list((root / "releases").glob(".staging-*"))
    info = json.loads((first / "release.json").read_text())
    assert info["software"]["pillow"]
