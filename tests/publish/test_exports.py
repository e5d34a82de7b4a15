"""Release exports on a tiny release built here: real JPEG/PNG bytes in a tar shard, a
MANIFEST parquet, HaGRID files. Read back with pycocotools, a HaGRID-style loader, YOLO."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from schemas.release import MANIFEST
from schemas.taxonomy import load_taxonomy
from tasks.publish.exports import (
    ExportError,
    coco_instances,
    export_layout,
    hagrid_annotations,
    json_bytes,
    yolo_labels,
)
from tasks.storage import LocalStorage

CATEGORIES = load_taxonomy("hagrid_v1").box_labels  # 18 gestures, then no_gesture
EXT = {"JPEG": "jpg", "PNG": "png"}


@dataclass(frozen=True)
class Sample:
    """One image of the tiny release."""

    n: int
    split: str
    gesture: str
    size: tuple[int, int]
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    fmt: str = "JPEG"
    hand: str = "right"
    conf: float = 1.0

    @property
    def image_id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"exports-test-{self.n}"))


SAMPLES = [
    Sample(1, "train", "call", (64, 48), [[0.1, 0.2, 0.3, 0.4]], ["call"], hand="left"),
    Sample(2, "train", "call", (80, 40), [[0.5, 0.1, 0.25, 0.5], [1 / 3, 0.05, 0.2, 0.3]],
           ["call", "no_gesture"], conf=0.75),
    Sample(3, "train", "like", (40, 72), [[0.2, 0.3, 0.5, 0.25]], ["like"]),
    Sample(4, "train", "palm", (50, 50)),  # no box at all
    Sample(5, "test", "peace", (48, 64), [[0.1, 0.1, 0.5, 0.5]], ["peace"], fmt="PNG"),
]


def encode(sample: Sample) -> bytes:
    """Distinct noise pixels of the sample's size, in its format."""
    pixels = np.random.default_rng(sample.n).integers(0, 255, (*sample.size[::-1], 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, sample.fmt)
    return buf.getvalue()


def write_shard(path: Path, members: dict[str, bytes]) -> dict[str, tarfile.TarInfo]:
    """A tar of ``members``, reopened so every member's ``offset_data`` is known."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def write_manifest(store: LocalStorage, split: str, rows: list[dict]) -> None:
    """``manifests/<split>.parquet`` of ``rows`` (MANIFEST schema), sorted by image_id."""
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["image_id"]), schema=MANIFEST)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store.write_bytes(f"manifests/{split}.parquet", buf.getvalue())


def read_manifest(store: LocalStorage, split: str) -> pd.DataFrame:
    """As every consumer reads it: numpy object arrays in the list columns."""
    return pq.read_table(io.BytesIO(store.read_bytes(f"manifests/{split}.parquet"))).to_pandas()


def manifest_rows(samples: list[Sample], split: str, members: dict[str, tarfile.TarInfo],
                  data: dict[str, bytes]) -> list[dict]:
    rows = []
    for s in samples:
        image, meta = members[f"{s.image_id}.{EXT[s.fmt]}"], members[f"{s.image_id}.json"]
        rows.append({
            "image_id": s.image_id, "split": split,
            "sha256": hashlib.sha256(data[s.image_id]).hexdigest(),
            "source_sha256": hashlib.sha256(data[s.image_id]).hexdigest(),
            "width": s.size[0], "height": s.size[1], "format": s.fmt, "gesture": s.gesture,
            "user_id": f"user{s.n % 2:032x}", "boxes": s.boxes, "labels": s.labels,
            "box_agreement": [1.0] * len(s.boxes), "leading_hand": s.hand,
            "leading_conf": s.conf, "n_annotators": 3, "annotation_method": "median_edges",
            "shard": f"shards/{split}-000000.tar", "offset": image.offset_data,
            "size": image.size, "json_offset": meta.offset_data, "json_size": meta.size})
    return rows


def make_release(root: Path, samples: list[Sample]) -> dict[str, list[dict]]:
    """A release folder under ``root``; returns the manifest rows per split."""
    store = LocalStorage(root)
    rows_by_split = {}
    for split in sorted({s.split for s in samples}):
        mine = [s for s in samples if s.split == split]
        data = {s.image_id: encode(s) for s in mine}
        members: dict[str, bytes] = {}
        for s in mine:
            members[f"{s.image_id}.{EXT[s.fmt]}"] = data[s.image_id]
            members[f"{s.image_id}.json"] = json_bytes({"image_id": s.image_id})
        infos = write_shard(root / f"shards/{split}-000000.tar", members)
        rows_by_split[split] = manifest_rows(mine, split, infos, data)
        write_manifest(store, split, rows_by_split[split])
        for gesture, entries in hagrid_annotations(read_manifest(store, split)).items():
            store.write_bytes(f"hagrid/{split}/{gesture}.json", json_bytes(entries))
    return rows_by_split


@pytest.fixture()
def release(tmp_path: Path) -> tuple[LocalStorage, dict[str, list[dict]]]:
    rows = make_release(tmp_path / "release", SAMPLES)
    return LocalStorage(tmp_path / "release"), rows


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# ---- json_bytes -------------------------------------------------------------------------

def test_json_bytes_is_canonical() -> None:
    a = {"b": [0.1 + 0.2, 1 / 3], "a": {"y": "ü", "x": None}}
    b = {"a": {"x": None, "y": "ü"}, "b": [0.1 + 0.2, 1 / 3]}
    assert json_bytes(a) == json_bytes(b)
    expected = '{"a":{"x":null,"y":"ü"},"b":[0.30000000000000004,0.3333333333333333]}\n'
    assert json_bytes(a) == expected.encode("utf-8")
    assert json.loads(json_bytes(a)) == a
    with pytest.raises(ValueError):
        json_bytes({"x": float("nan")})


@given(st.dictionaries(st.text(), st.floats(allow_nan=False, allow_infinity=False)
                       | st.text() | st.integers(), max_size=20))
def test_json_bytes_ignores_key_order_and_round_trips(d: dict) -> None:
    reordered = dict(reversed(list(d.items())))
    assert json_bytes(d) == json_bytes(reordered)
    assert json.loads(json_bytes(d)) == d


# ---- hagrid_annotations -----------------------------------------------------------------

def test_hagrid_annotations_plain_sorted_and_only_present_gestures(release) -> None:
    store, _ = release
    files = hagrid_annotations(read_manifest(store, "train"))
    assert list(files) == ["call", "like", "palm"]  # only gestures with images
    calls = [s for s in SAMPLES if s.gesture == "call"]
    assert list(files["call"]) == sorted(s.image_id for s in calls)
    for s in calls:
        entry = files["call"][s.image_id]
        assert entry == {"bboxes": s.boxes, "labels": s.labels, "leading_hand": s.hand,
                         "leading_conf": s.conf, "user_id": f"user{s.n % 2:032x}"}
        boxes = entry["bboxes"]
        assert isinstance(boxes, list) and all(type(v) is float for box in boxes for v in box)
    assert files["palm"][SAMPLES[3].image_id]["bboxes"] == []


def test_builders_ignore_row_order_and_box_container(release) -> None:
    store, _ = release
    manifest = read_manifest(store, "train")
    shuffled = manifest.sample(frac=1.0, random_state=3).reset_index(drop=True)
    as_2d = manifest.assign(boxes=[np.array(b.tolist(), float).reshape(-1, 4)
                                   for b in manifest["boxes"]])
    for other in (shuffled, as_2d):
        assert json_bytes(hagrid_annotations(other)) == json_bytes(hagrid_annotations(manifest))
        assert json_bytes(coco_instances(other, categories=CATEGORIES)) == json_bytes(
            coco_instances(manifest, categories=CATEGORIES))


def test_builders_refuse_bad_manifests(release) -> None:
    store, _ = release
    manifest = read_manifest(store, "train")
    with pytest.raises(ValueError, match="twice"):
        hagrid_annotations(pd.concat([manifest, manifest.iloc[:1]]))
    with pytest.raises(ValueError, match="one split"):
        hagrid_annotations(pd.concat([manifest, read_manifest(store, "test")]))
    with pytest.raises(ValueError, match="not among the categories"):
        coco_instances(manifest, categories=["call", "like"])
    with pytest.raises(ValueError, match="not among the categories"):
        yolo_labels(manifest, categories=["call"])


# ---- COCO -------------------------------------------------------------------------------

def test_coco_round_trip_through_pycocotools(release, tmp_path: Path) -> None:
    store, rows = release
    path = tmp_path / "train.json"
    path.write_bytes(json_bytes(coco_instances(read_manifest(store, "train"),
                                               categories=CATEGORIES)))
    coco = COCO(str(path))
    assert coco.getCatIds() == list(range(1, len(CATEGORIES) + 1))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CATEGORIES)
    assert len(coco.getImgIds()) == len(rows["train"])
    assert len(coco.getAnnIds()) == sum(len(r["boxes"]) for r in rows["train"])
    by_id = {r["image_id"]: r for r in rows["train"]}
    for image in coco.loadImgs(coco.getImgIds()):
        row = by_id[image["release_image_id"]]
        assert image["file_name"] == f"{row['gesture']}/{row['image_id']}.jpg"
        assert (image["width"], image["height"]) == (row["width"], row["height"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        w, h = row["width"], row["height"]
        assert [a["bbox"] for a in anns] == [
            pytest.approx([x * w, y * h, bw * w, bh * h], rel=1e-12)
            for x, y, bw, bh in row["boxes"]]
        assert [a["area"] for a in anns] == [pytest.approx(bw * w * bh * h, rel=1e-12)
                                             for _, _, bw, bh in row["boxes"]]
        assert [coco.cats[a["category_id"]]["name"] for a in anns] == row["labels"]
        assert all(a["iscrowd"] == 0 for a in anns)


def test_coco_ground_truth_scores_perfect_ap_against_itself(release, tmp_path: Path) -> None:
    store, _ = release
    path = tmp_path / "train.json"
    path.write_bytes(json_bytes(coco_instances(read_manifest(store, "train"),
                                               categories=CATEGORIES)))
    gt = COCO(str(path))
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"],
                   "bbox": a["bbox"], "score": 1.0} for a in gt.dataset["annotations"]]
    evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


# ---- YOLO -------------------------------------------------------------------------------

def test_yolo_labels_parse_back_to_boxes(release) -> None:
    store, rows = release
    texts = yolo_labels(read_manifest(store, "train"), categories=CATEGORIES)
    assert list(texts) == sorted(r["image_id"] for r in rows["train"])
    for row in rows["train"]:
        parsed = [line.split() for line in texts[row["image_id"]].splitlines()]
        assert [CATEGORIES[int(p[0])] for p in parsed] == row["labels"]
        for p, expected in zip(parsed, row["boxes"], strict=True):
            cx, cy, w, h = map(float, p[1:])
            assert [cx - w / 2, cy - h / 2, w, h] == pytest.approx(expected, abs=1e-6)
    assert texts[SAMPLES[3].image_id] == ""


# ---- the HaGRID layout ------------------------------------------------------------------

def read_like_hagrid(dataset_root: str, annotations_root: str, split: str,
                     targets: tuple[str, ...]) -> list[dict]:
    """Read a layout the way HaGRID's own loaders do: per gesture file, ``<key>.jpg``."""
    samples = []
    for target in targets:
        target_json = os.path.join(annotations_root, split, f"{target}.json")
        if not os.path.exists(target_json):
            continue
        with open(target_json) as fh:
            annotation = json.load(fh)
        for name, entry in annotation.items():
            image = Image.open(os.path.join(dataset_root, target, f"{name}.jpg")).convert("RGB")
            width, height = image.size
            boxes = [[x * width, y * height, (x + w) * width, (y + h) * height]
                     for x, y, w, h in entry["bboxes"]]
            samples.append({"name": name, "target": target, "size": image.size,
                            "boxes": boxes, "labels": [label for _, label in
                                                       zip(boxes, entry["labels"], strict=True)],
                            "leading_hand": entry["leading_hand"]})
    return samples


def test_exported_layout_reads_like_hagrid(release, tmp_path: Path) -> None:
    store, rows = release
    out = tmp_path / "hagrid"
    counts = export_layout(store, out)
    assert counts == {"images": 5, "images_written": 5, "annotation_files": 4,
                      "annotation_files_written": 4}
    assert (out / "annotations/test/peace.json").read_bytes() == store.read_bytes(
        "hagrid/test/peace.json")
    assert (out / "peace" / f"{SAMPLES[4].image_id}.png").is_file()
    samples = read_like_hagrid(str(out), str(out / "annotations"), "train",
                               load_taxonomy("hagrid_v1").gestures)
    by_id = {r["image_id"]: r for r in rows["train"]}
    assert sorted(s["name"] for s in samples) == sorted(by_id)
    for s in samples:
        row = by_id[s["name"]]
        w, h = row["width"], row["height"]
        assert (s["target"], s["size"]) == (row["gesture"], (w, h))
        expected = [[x * w, y * h, (x + bw) * w, (y + bh) * h] for x, y, bw, bh in row["boxes"]]
        np.testing.assert_allclose(np.reshape(s["boxes"], (-1, 4)),
                                   np.reshape(expected, (-1, 4)), rtol=1e-12)
        assert (s["labels"], s["leading_hand"]) == (row["labels"], row["leading_hand"])


def test_export_is_idempotent_and_repairs_a_truncated_image(release, tmp_path: Path) -> None:
    store, _ = release
    out = tmp_path / "hagrid"
    export_layout(store, out)
    before = {p: p.stat().st_mtime_ns for p in files_under(out)}
    again = export_layout(store, out)
    assert (again["images_written"], again["annotation_files_written"]) == (0, 0)
    assert {p: p.stat().st_mtime_ns for p in files_under(out)} == before
    image = out / "call" / f"{SAMPLES[0].image_id}.jpg"
    good = image.read_bytes()
    image.write_bytes(good[:10])
    assert export_layout(store, out, splits=["train"])["images_written"] == 1
    assert image.read_bytes() == good


def test_export_raises_on_a_checksum_mismatch(release, tmp_path: Path) -> None:
    store, rows = release
    rows["train"][1]["sha256"] = "0" * 64
    write_manifest(store, "train", rows["train"])
    with pytest.raises(ExportError, match="sha256"):
        export_layout(store, tmp_path / "hagrid", splits=["train"])


@pytest.mark.parametrize(("column", "value"), [
    ("gesture", "../evil"), ("gesture", ".."), ("gesture", "a/b"), ("gesture", ""),
    ("gesture", "annotations"), ("image_id", "../../x"), ("image_id", "not-a-uuid"),
    ("format", "../../exe"), ("gesture", "call\n"), ("image_id", f"{SAMPLES[0].image_id}\n"),
    ("shard", "../outside.tar"), ("shard", "/etc/passwd"),
])
def test_export_refuses_hostile_names(release, tmp_path: Path, column: str, value: str) -> None:
    store, rows = release
    rows["train"][0][column] = value
    write_manifest(store, "train", rows["train"])
    out = tmp_path / "export" / "hagrid"
    before = files_under(tmp_path)
    with pytest.raises(ExportError):
        export_layout(store, out)
    assert files_under(tmp_path) == before  # nothing written, inside out or elsewhere


def test_export_refuses_a_split_name_that_escapes(release, tmp_path: Path) -> None:
    store, _ = release
    with pytest.raises(ExportError):
        export_layout(store, tmp_path / "hagrid", splits=["../train"])


def test_export_refuses_a_gesture_folder_linked_outside(release, tmp_path: Path) -> None:
    store, _ = release
    out, elsewhere = tmp_path / "hagrid", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "call").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ExportError, match="outside"):
        export_layout(store, out)
    assert not any(elsewhere.iterdir())


# ---- the command line: refused targets and tampered releases end in an error line ----------

HAGRID = Path(sys.executable).with_name("hagrid")


def seal(release: Path) -> None:
    """Give a release folder its ``release.json`` and ``SHA256SUMS``, as publish does."""
    (release / "release.json").write_text("{}\n")
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(release).as_posix()}\n"
             for p in sorted(files_under(release))]
    (release / "SHA256SUMS").write_text("".join(lines))


def export_cli(release: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200"}
    return subprocess.run([str(HAGRID), "export-layout", str(release), str(out)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def assert_refused(result: subprocess.CompletedProcess[str], reason: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error:") and reason in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_refuses_to_export_into_the_release_itself(release, tmp_path: Path) -> None:
    store, _ = release
    seal(store.path)
    before = {p: p.read_bytes() for p in files_under(store.path)}
    for out in (store.path, store.path / "layout", store.path / "shards" / "x"):
        assert_refused(export_cli(store.path, out), "inside the release")
    link = tmp_path / "link"
    link.symlink_to(store.path, target_is_directory=True)
    assert_refused(export_cli(store.path, link / "layout"), "inside the release")
    assert {p: p.read_bytes() for p in files_under(store.path)} == before


def test_cli_refuses_to_export_into_a_dataset_roots_releases(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "catalog").mkdir(parents=True)
    make_release(root / "releases" / "v1", SAMPLES)
    seal(root / "releases" / "v1")
    other = tmp_path / "other-release"
    make_release(other, SAMPLES[:2])
    seal(other)
    assert_refused(export_cli(root / "releases" / "v1", root / "releases" / "layout"),
                   "releases of a dataset root")
    assert_refused(export_cli(other, root / "releases" / "v1" / "more"), "inside the release")
    assert not (root / "releases" / "layout").exists()
    ok = export_cli(root / "releases" / "v1", root / "layout")  # next to releases/: fine
    assert ok.returncode == 0, ok.stderr


def test_cli_reports_a_refused_symlink_as_an_error(release, tmp_path: Path) -> None:
    store, _ = release
    seal(store.path)
    out, elsewhere = tmp_path / "hagrid", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "call").symlink_to(elsewhere, target_is_directory=True)
    assert_refused(export_cli(store.path, out), "outside the export root")
    assert not any(elsewhere.iterdir())


@pytest.mark.parametrize("tamper", ["garbage", "checksum", "truncated_shard", "column"])
def test_cli_reports_a_tampered_release_as_an_error(release, tmp_path: Path,
                                                    tamper: str) -> None:
    store, rows = release
    if tamper == "garbage":
        store.write_bytes("manifests/train.parquet", b"PAR1 not a parquet file")
    elif tamper == "checksum":
        rows["train"][1]["sha256"] = "0" * 64
        write_manifest(store, "train", rows["train"])
    elif tamper == "truncated_shard":
        shard = store.path / "shards" / "train-000000.tar"
        shard.write_bytes(shard.read_bytes()[:600])
    else:
        table = pq.read_table(store.path / "manifests" / "train.parquet").drop_columns(["size"])
        pq.write_table(table, store.path / "manifests" / "train.parquet")
    seal(store.path)
    assert_refused(export_cli(store.path, tmp_path / "hagrid"), "")
