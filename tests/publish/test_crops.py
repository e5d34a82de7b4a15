"""The crops view: one square hand crop per box, in its own shards and manifest, read back by
offset, with the hand where ``box_in_crop`` says, and the same bytes on every publish."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

import tests.catalogs
from flows.cli import app
from flows.publish import publish
from schemas.release import CROPS_MANIFEST, PublishSettings
from tasks.publish.crops import crop_windows, cut_crop
from tests.catalogs import make_release_catalog
from tests.prefect_api import flow_runs, run_log_lines, run_logs_at_info

pytestmark = pytest.mark.usefixtures("prefect_harness")

HAND = (230, 20, 20)  # box 0 of every image in make_release_catalog: (0.1, 0.2, 0.3, 0.4)
FREE_HAND = (20, 20, 230)  # box 1 of two-box images: (0.6, 0.5, 0.2, 0.25)


def painted_jpeg(seed: int) -> bytes:
    """A distinct 96x64 grey-noise JPEG with a red block where box 0 is and a blue one where
    box 1 may be (both rounded outwards to whole pixels)."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(100, 156, size=(64, 96, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    draw.rectangle((9, 12, 38, 38), fill=HAND)  # x 9.6-38.4, y 12.8-38.4 px
    draw.rectangle((57, 32, 76, 48), fill=FREE_HAND)  # x 57.6-76.8, y 32-48 px
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("crops") / "root"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tests.catalogs, "tiny_jpeg", painted_jpeg)
        make_release_catalog(root, n=60, seed=5, users=12, links=2)
    with run_logs_at_info():  # as the UI shows the run
        summary = publish(root=str(root), version="v1", fractions="70/30",
                          shard_max_count=20, crops=True, crop_size=64, crop_scale=2.0)
    return root, summary, root / "releases" / "v1"


def _table(release: Path, folder: str) -> pd.DataFrame:
    parts = [pq.read_table(p) for p in sorted((release / folder).glob("*.parquet"))]
    return pa.concat_tables(parts).to_pandas()


def _member(release: Path, shard: str, offset: int, size: int) -> bytes:
    with (release / shard).open("rb") as fh:
        fh.seek(offset)
        return fh.read(size)


def test_one_crop_row_per_box_in_the_crops_schema(release):
    _, summary, path = release
    manifest = _table(path, "manifests")
    crops = _table(path, "crops/manifests")
    for split in ("train", "test"):
        assert pq.read_table(path / "crops" / "manifests" / f"{split}.parquet").schema.equals(
            CROPS_MANIFEST)
    expected = [(row.image_id, k, label, row.split, row.user_id, row.gesture, row.leading_hand)
                for row in manifest.sort_values("image_id").itertuples()
                for k, label in enumerate(row.labels)]
    got = list(crops.sort_values(["image_id", "box_index"])[
        ["image_id", "box_index", "label", "split", "user_id", "gesture", "leading_hand"]]
        .itertuples(index=False, name=None))
    assert got == expected
    assert (crops["crop_id"] == crops["image_id"] + "_" + crops["box_index"].astype(str)).all()
    assert (crops["width"] == 64).all() and (crops["height"] == 64).all()
    assert summary["crops"] == crops["split"].value_counts().to_dict()
    assert summary["crop_shards"] == crops["shard"].nunique() > 2
    info = json.loads((path / "release.json").read_text())
    assert info["settings"]["crops"] is True and info["settings"]["crop_size"] == 64
    assert info["crops"] == summary["crops"]


def test_the_run_log_counts_the_crops_and_their_shards(release):
    root, summary, path = release
    [run] = [r for r in flow_runs("publish") if r.parameters.get("root") == str(root)
             and r.name == "publish v1"]
    shards = sorted((path / "crops" / "shards").glob("*.tar"))
    size = sum(f.stat().st_size for f in shards) / 1e6
    said = [ln for ln in run_log_lines(run.id) if ln.startswith("crops: ")]
    assert len(said) == 1 and len(shards) == summary["crop_shards"]
    assert said[0].startswith(f"crops: {sum(summary['crops'].values())} in {len(shards)} "
                              f"shards ({size:,.1f} MB) in ")


def test_every_crop_reads_by_offset_with_its_sha256(release):
    _, _, path = release
    crops = _table(path, "crops/manifests").set_index("crop_id")
    seen = []
    for shard in sorted((path / "crops" / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar:
                key, ext = info.name.split(".")
                data = tar.extractfile(info).read()  # type: ignore[union-attr]
                if ext == "json":
                    meta = json.loads(data)
                    assert meta["crop_id"] == key and meta["box_in_crop"] == list(
                        crops.loc[key, "box_in_crop"])
                    continue
                row = crops.loc[key]
                assert (row["shard"], row["offset"], row["size"]) == (
                    shard.relative_to(path).as_posix(), info.offset_data, info.size)
                assert _member(path, row["shard"], row["offset"], row["size"]) == data
                assert hashlib.sha256(data).hexdigest() == row["sha256"]
                assert Image.open(io.BytesIO(data)).size == (64, 64)
                seen.append(key)
    assert sorted(seen) == sorted(crops.index)


def _colour_share(pixels: np.ndarray, colour: tuple[int, int, int]) -> float:
    near = np.abs(pixels.astype(int) - np.array(colour)).max(axis=-1) < 60
    return float(near.mean()) if near.size else 0.0


def test_the_hand_lands_where_box_in_crop_says(release):
    _, _, path = release
    crops = _table(path, "crops/manifests")
    for row in crops.itertuples():
        pixels = np.asarray(Image.open(io.BytesIO(
            _member(path, row.shard, row.offset, row.size))).convert("RGB"))
        x, y, w, h = (v * 64 for v in row.box_in_crop)
        inner = pixels[round(y) + 3:round(y + h) - 3, round(x) + 3:round(x + w) - 3]
        colour = HAND if row.box_index == 0 else FREE_HAND
        assert _colour_share(inner, colour) > 0.95, row.crop_id
        outside = np.ones((64, 64), bool)
        outside[max(0, round(y) - 3):round(y + h) + 3, max(0, round(x) - 3):round(x + w) + 3] = 0
        assert _colour_share(pixels[outside], colour) < 0.02, row.crop_id


def test_the_window_is_square_centred_and_black_outside_the_image(release):
    _, _, path = release
    crops = _table(path, "crops/manifests")
    box0 = crops[crops["box_index"] == 0].iloc[0]
    cx, cy, side_w, side_h = box0["crop_box"][0] + box0["crop_box"][2] / 2, \
        box0["crop_box"][1] + box0["crop_box"][3] / 2, box0["crop_box"][2], box0["crop_box"][3]
    assert abs(cx - 0.25) < 1 / 96 and abs(cy - 0.4) < 1 / 64  # the box's centre
    assert round(side_w * 96) == round(side_h * 64) == 58  # 2 x 28.8 px, whole pixels
    assert box0["crop_box"][0] < 0  # the window starts left of the image ...
    pixels = np.asarray(Image.open(io.BytesIO(_member(
        path, box0["shard"], box0["offset"], box0["size"]))).convert("RGB"))
    black_columns = int(-box0["crop_box"][0] / box0["crop_box"][2] * 64)
    assert pixels[:, :black_columns - 1].max() < 30  # ... and is black there


def test_checksums_cover_the_crops_view(release):
    _, _, path = release
    sums = dict(reversed(line.split("  ")) for line in
                (path / "SHA256SUMS").read_text().splitlines())
    crop_files = sorted(p.relative_to(path).as_posix() for p in (path / "crops").rglob("*")
                        if p.is_file())
    assert crop_files and all(f in sums for f in crop_files)
    for name in crop_files:
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == sums[name]


def test_a_second_publish_gives_the_same_crop_bytes(release):
    root, _, path = release
    result = CliRunner().invoke(app, ["publish", "--root", str(root), "--version", "v2",
                                      "--fractions", "70/30", "--shard-max-count", "20",
                                      "--crops", "--crop-size", "64", "--crop-scale", "2.0"])
    assert result.exit_code == 0, result.output
    again = root / "releases" / "v2"
    def crop_files(release: Path) -> list[str]:
        return sorted(p.relative_to(release).as_posix() for p in (release / "crops").rglob("*")
                      if p.is_file())

    files = crop_files(path)
    assert files == crop_files(again) and len(files) > 4
    for name in files:
        assert (path / name).read_bytes() == (again / name).read_bytes(), name


def test_crop_windows_are_square_centred_whole_pixels():
    windows = crop_windows(np.array([[10.0, 20.0, 30.0, 10.0], [0.0, 0.0, 0.2, 0.1]]),
                           scale=2.0)
    assert windows.tolist() == [[-5, -5, 60], [0, 0, 1]]  # centre (25, 25); at least 1 px


def test_cut_crop_puts_the_box_where_the_window_says():
    image = Image.new("RGB", (200, 100), (0, 255, 0))
    ImageDraw.Draw(image).rectangle((150, 40, 189, 59), fill=(255, 0, 0))  # 40 x 20 px
    (left, top, side), = crop_windows(np.array([[150.0, 40.0, 40.0, 20.0]]), scale=2.0)
    crop = np.asarray(cut_crop(image, (left, top, side), size=80))
    assert (left, top, side) == (130, 10, 80)
    assert (crop[30:50, 20:60] == (255, 0, 0)).all()  # the box: 20-60 x 30-50 of 80
    assert (crop[:, 71:] == 0).all()  # past the image's right edge (x >= 200): black
    assert (crop[:29, :70, 1] == 255).all()


def test_crop_settings_are_checked():
    assert PublishSettings().crops is False  # the crops view is written on request only
    with pytest.raises(ValueError, match="crop_size"):
        PublishSettings(crop_size=0)
    with pytest.raises(ValueError, match="crop_scale"):
        PublishSettings(crop_scale=0)
