"""Release exports on a tiny release built here: real JPEG/PNG/WebP bytes in a tar shard, a
MANIFEST parquet, HaGRID files. Read back with pycocotools, HaGRID-style loaders, converters
and detector code, and an Ultralytics-style YOLO reader."""

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
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from schemas.release import HAGRID_CLASS_ORDER, MANIFEST, class_names
from schemas.taxonomy import load_taxonomy
from tasks.publish.exports import (
    ExportError,
    coco_instances,
    export_layout,
    export_yolo,
    hagrid_annotations,
    json_bytes,
    layout_jpeg,
    united_box,
    yolo_data_yaml,
    yolo_labels,
)
from tasks.storage import LocalStorage

CATEGORIES = load_taxonomy("hagrid_v1").box_labels  # 18 gestures, then no_gesture
TWO_HANDED = load_taxonomy("hagrid_v2").two_handed
EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


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
    hand: str | None = "right"
    conf: float | None = 1.0
    method: str = "median_edges"
    extras: dict | None = None

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
    Sample(6, "test", "peace", (56, 40), [[0.2, 0.2, 0.4, 0.5]], ["peace"], fmt="WEBP"),
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
            "leading_conf": s.conf, "n_annotators": 3, "annotation_method": s.method,
            "extras_json": None if s.extras is None else json.dumps(s.extras),
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
        for gesture, entries in hagrid_annotations(read_manifest(store, split),
                                                   two_handed=TWO_HANDED).items():
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
    files = hagrid_annotations(read_manifest(store, "train"), two_handed=TWO_HANDED)
    assert list(files) == ["call", "like", "palm"]  # only gestures with images
    calls = [s for s in SAMPLES if s.gesture == "call"]
    assert list(files["call"]) == sorted(s.image_id for s in calls)
    for s in calls:
        entry = files["call"][s.image_id]
        assert entry == {"bboxes": s.boxes, "labels": s.labels, "leading_hand": s.hand,
                         "leading_conf": s.conf, "user_id": f"user{s.n % 2:032x}",
                         "united_bbox": None, "united_label": None}
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
        assert json_bytes(hagrid_annotations(other, two_handed=TWO_HANDED)) == json_bytes(
            hagrid_annotations(manifest, two_handed=TWO_HANDED))
        assert json_bytes(coco_instances(other, categories=CATEGORIES)) == json_bytes(
            coco_instances(manifest, categories=CATEGORIES))


def test_builders_refuse_bad_manifests(release) -> None:
    store, _ = release
    manifest = read_manifest(store, "train")
    with pytest.raises(ValueError, match="twice"):
        hagrid_annotations(pd.concat([manifest, manifest.iloc[:1]]), two_handed=())
    with pytest.raises(ValueError, match="one split"):
        hagrid_annotations(pd.concat([manifest, read_manifest(store, "test")]), two_handed=())
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
    assert counts == {"images": 6, "images_converted": 2, "images_written": 6,
                      "annotation_files": 4, "annotation_files_written": 4}
    assert (out / "annotations/test/peace.json").read_bytes() == store.read_bytes(
        "hagrid/test/peace.json")
    samples = [s for split in ("train", "test") for s in read_like_hagrid(
        str(out), str(out / "annotations"), split, load_taxonomy("hagrid_v1").gestures)]
    by_id = {r["image_id"]: r for split in rows.values() for r in split}
    assert sorted(s["name"] for s in samples) == sorted(by_id)  # PNG and WebP ones too
    for s in samples:
        row = by_id[s["name"]]
        w, h = row["width"], row["height"]
        assert (s["target"], s["size"]) == (row["gesture"], (w, h))
        expected = [[x * w, y * h, (x + bw) * w, (y + bh) * h] for x, y, bw, bh in row["boxes"]]
        np.testing.assert_allclose(np.reshape(s["boxes"], (-1, 4)),
                                   np.reshape(expected, (-1, 4)), rtol=1e-12)
        assert (s["labels"], s["leading_hand"]) == (row["labels"], row["leading_hand"])
        with Image.open(out / s["target"] / f"{s['name']}.jpg") as image:
            assert image.format == "JPEG"
    assert not [p for p in files_under(out) if p.suffix in (".png", ".webp")]


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


# ---- v2 fields, unknown leading hands, imported extras -----------------------------------

def frame_of(samples: list[Sample], split: str = "train") -> pd.DataFrame:
    """A manifest of ``samples`` as consumers read it (placement columns are dummies)."""
    rows = manifest_rows(samples, split, {
        name: tarfile.TarInfo(name) for s in samples
        for name in (f"{s.image_id}.{EXT[s.fmt]}", f"{s.image_id}.json")},
        {s.image_id: b"" for s in samples})
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["image_id"]), schema=MANIFEST)
    return table.to_pandas()


def read_with_hagrid_converter(annotations: dict[str, dict], classes: tuple[str, ...]
                               ) -> dict[str, list[tuple[int, list[float]]]]:
    """What HaGRID's converters (hagrid_to_yolo / hagrid_to_coco, ``--mode gestures``, the
    default) take from a file, read as they read it (a pandas frame of the entries): the
    united box and label where ``united_bbox`` is not null, else every hand box and label."""
    index = {name: i for i, name in enumerate(classes)}
    frame = pd.DataFrame([{**entry, "name": f"{name}.jpg"} for name, entry in
                          annotations.items()])

    def targets(row: pd.Series) -> list[tuple[int, list[float]]]:
        united = row["united_bbox"] is not None
        boxes = row["united_bbox"] if united else row["bboxes"]
        labels = row["united_label"] if united else row["labels"]
        return [(index[labels[i]], list(boxes[i])) for i in range(len(boxes))]

    return {name.removesuffix(".jpg"): t for name, t in
            zip(frame["name"], frame.apply(targets, axis=1), strict=True)}


V2 = load_taxonomy("hagrid_v2")
TIMEOUT = Sample(20, "train", "timeout", (100, 50),
                 [[0.1, 0.2, 0.2, 0.3], [0.5, 0.1, 0.2, 0.5], [0.8, 0.7, 0.1, 0.2]],
                 ["timeout", "timeout", "no_gesture"])
LIKE = Sample(21, "train", "like", (100, 50), [[0.1, 0.2, 0.2, 0.3], [0.5, 0.1, 0.2, 0.5]],
              ["like", "no_gesture"])


def test_united_box_surrounds_the_hands_of_a_two_handed_gesture_only() -> None:
    assert united_box(TIMEOUT.boxes, TIMEOUT.labels, gesture="timeout",
                      two_handed=V2.two_handed) == ([[0.1, 0.1, pytest.approx(0.6),
                                                      pytest.approx(0.5)]], ["timeout"])
    assert united_box(LIKE.boxes, LIKE.labels, gesture="like",
                      two_handed=V2.two_handed) == (None, None)
    assert united_box([[0.1, 0.1, 0.2, 0.2]], ["no_gesture"], gesture="holy",
                      two_handed=V2.two_handed) == (None, None)  # no hand shows it
    assert set(V2.two_handed) == {"hand_heart", "hand_heart2", "thumb_index2", "timeout",
                                  "holy", "take_picture", "xsign"}


def test_every_entry_reads_like_hagrid_v2_in_the_converters() -> None:
    files = hagrid_annotations(frame_of([TIMEOUT, LIKE]), two_handed=V2.two_handed)
    timeout, like = files["timeout"][TIMEOUT.image_id], files["like"][LIKE.image_id]
    united = timeout["united_bbox"]
    assert isinstance(united, list) and len(united) == 1 and len(united[0]) == 4
    assert timeout["united_label"] == ["timeout"]
    assert (like["united_bbox"], like["united_label"]) == (None, None)
    classes = HAGRID_CLASS_ORDER["hagrid_v2"]
    read = {**read_with_hagrid_converter(files["timeout"], classes),
            **read_with_hagrid_converter(files["like"], classes)}
    assert read[TIMEOUT.image_id] == [(classes.index("timeout"), united[0])]
    assert read[LIKE.image_id] == [(classes.index("like"), LIKE.boxes[0]),
                                   (classes.index("no_gesture"), LIKE.boxes[1])]
    assert json.loads(json_bytes(files["timeout"]))[TIMEOUT.image_id] == timeout


def test_imported_extras_are_carried_into_the_entries() -> None:
    published = {"united_bbox": [[0.09, 0.1, 0.62, 0.51]], "united_label": ["timeout"],
                 "hand_landmarks": [[[0.2, 0.3], [0.25, 0.35]], [[0.6, 0.2]]],
                 "meta": {"age": [31.5, float("nan")], "gender": ["female"], "race": ["White"]}}
    imported = Sample(22, "train", "timeout", TIMEOUT.size, TIMEOUT.boxes[:2], ["timeout"] * 2,
                      hand=None, conf=None, method="import:hagrid", extras=published)
    corrected = Sample(23, "train", "timeout", TIMEOUT.size, TIMEOUT.boxes[:2],
                       ["timeout"] * 2, method="median_edges", extras=published)
    bare = Sample(24, "train", "like", LIKE.size, LIKE.boxes, LIKE.labels,
                  method="import:hagrid", extras={})
    files = hagrid_annotations(frame_of([imported, corrected, bare]), two_handed=V2.two_handed)
    entry = files["timeout"][imported.image_id]
    assert (entry["united_bbox"], entry["united_label"]) == (published["united_bbox"],
                                                             ["timeout"])
    assert entry["hand_landmarks"] == published["hand_landmarks"]
    assert entry["meta"] == {"age": [31.5, None], "gender": ["female"], "race": ["White"]}
    assert (entry["leading_hand"], entry["leading_conf"]) == (None, None)
    redrawn = files["timeout"][corrected.image_id]  # boxes no longer the imported ones
    assert redrawn["united_bbox"] == united_box(corrected.boxes, corrected.labels,
                                                gesture="timeout", two_handed=V2.two_handed)[0]
    assert redrawn["meta"] == entry["meta"]
    assert set(files["like"][bare.image_id]) == {"bboxes", "labels", "leading_hand",
                                                 "leading_conf", "user_id", "united_bbox",
                                                 "united_label"}
    json_bytes(files)  # plain, finite JSON


def test_an_unknown_leading_hand_is_null_everywhere() -> None:
    unknown = Sample(25, "train", "like", (60, 40), [[0.1, 0.1, 0.3, 0.3]], ["like"],
                     hand=None, conf=None)
    frame = frame_of([unknown, SAMPLES[0]])
    entry = hagrid_annotations(frame, two_handed=())["like"][unknown.image_id]
    assert (entry["leading_hand"], entry["leading_conf"]) == (None, None)
    coco = coco_instances(frame, categories=CATEGORIES)
    images: Any = coco["images"]
    image = next(i for i in images if i["release_image_id"] == unknown.image_id)
    assert (image["leading_hand"], image["leading_conf"]) == (None, None)
    assert b'"leading_hand":null' in json_bytes(coco)
    assert yolo_labels(frame, categories=CATEGORIES)[unknown.image_id].startswith("4 ")


# ---- class orders ------------------------------------------------------------------------

def test_hagrid_class_order_is_a_permutation_of_the_taxonomy_labels() -> None:
    v1 = load_taxonomy("hagrid_v1")
    hagrid, ours = class_names(v1, order="hagrid"), class_names(v1, order="taxonomy")
    assert ours == v1.box_labels and sorted(hagrid) == sorted(ours)
    assert sum(a != b for a, b in zip(hagrid, ours, strict=True)) == 8
    assert hagrid[-1] == "no_gesture" and hagrid[10:12] == ("rock", "stop")
    v2 = class_names(V2, order="hagrid")
    assert sorted(v2) == sorted(V2.box_labels) and len(v2) == 34
    assert v2[:4] == ("grabbing", "grip", "holy", "point") and v2[-1] == "no_gesture"
    rock = Sample(26, "train", "rock", (40, 40), [[0.1, 0.1, 0.5, 0.5]], ["rock"])
    assert yolo_labels(frame_of([rock]), categories=hagrid)[rock.image_id].startswith("10 ")
    assert yolo_labels(frame_of([rock]), categories=ours)[rock.image_id].startswith("11 ")
    with pytest.raises(ValueError, match="class order"):
        class_names(v1, order="alphabetical")


# ---- images re-encoded as JPEG for the layouts --------------------------------------------

def test_layout_jpeg_keeps_the_pixels_a_loader_sees_and_no_metadata() -> None:
    rgba = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 4), np.uint8))
    grey = Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 40), np.uint8))
    for source, fmt, mode in ((rgba, "PNG", "RGB"), (rgba, "WEBP", "RGB"), (grey, "PNG", "L")):
        buf = io.BytesIO()
        source.save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        data = layout_jpeg(buf.getvalue())
        assert data == layout_jpeg(buf.getvalue())
        with Image.open(io.BytesIO(data)) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", mode, (40, 30))
            assert not image.getexif() and "comment" not in image.info
            if mode == "RGB":
                from PIL import JpegImagePlugin

                assert JpegImagePlugin.get_sampling(image) == 0  # 4:4:4
            seen = np.asarray(source.convert(mode), dtype=float)
            assert np.abs(np.asarray(image, dtype=float) - seen).mean() < 8  # q95 of noise


# ---- the YOLO layout ------------------------------------------------------------------

def read_like_ultralytics(data_yaml: Path) -> dict[str, dict[str, list[list[float]]]]:
    """Read a dataset as Ultralytics does: ``data.yaml`` (``train`` and ``val`` required,
    relative to ``path``), images under each folder, each label file found by swapping the
    last ``/images/`` of the image path for ``/labels/`` and the extension for ``.txt``."""
    data = yaml.safe_load(data_yaml.read_text())
    assert {"path", "train", "val", "nc", "names"} <= set(data)
    assert data["nc"] == len(data["names"]) and sorted(data["names"]) == list(range(data["nc"]))
    found: dict[str, dict[str, list[list[float]]]] = {}
    for key in ("train", "val", "test"):
        if key not in data:
            continue
        images = sorted(str(p) for p in (Path(data["path"]) / data[key]).iterdir())
        sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
        found[key] = {}
        for image_path in images:
            label = sb.join(image_path.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt"
            rows = [line.split() for line in Path(label).read_text().splitlines()]
            found[key][Path(image_path).stem] = [[data["names"][int(r[0])], *map(float, r[1:])]
                                                 for r in rows]
            with Image.open(image_path) as image:
                assert image.format == "JPEG"
    return found


def test_yolo_export_reads_like_ultralytics_in_the_recorded_class_order(release,
                                                                        tmp_path: Path) -> None:
    store, rows = release
    classes = list(HAGRID_CLASS_ORDER["hagrid_v1"])
    store.write_bytes("release.json", json_bytes({"classes": classes}))
    out = tmp_path / "yolo"
    counts = export_yolo(store, out)
    assert counts == {"images": 6, "images_converted": 2, "images_written": 6, "labels": 6,
                      "labels_written": 6}
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert (data["path"], data["train"], data["val"], data["test"]) == (
        str(out.resolve()), "images/train", "images/test", "images/test")  # no val split
    assert data["names"] == dict(enumerate(classes))
    found = read_like_ultralytics(out / "data.yaml")
    for split in ("train", "test"):
        assert set(found[split]) == {r["image_id"] for r in rows[split]}
        for row in rows[split]:
            labels = found[split][row["image_id"]]
            assert [label[0] for label in labels] == row["labels"]
            for (_, cx, cy, w, h), box in zip(labels, row["boxes"], strict=True):
                assert [cx - w / 2, cy - h / 2, w, h] == pytest.approx(box, abs=1e-6)
    again = export_yolo(store, out)
    assert (again["images_written"], again["labels_written"]) == (0, 0)


def test_yolo_data_yaml_names_val_when_there_is_one(tmp_path: Path) -> None:
    data = yaml.safe_load(yolo_data_yaml(path=tmp_path, splits=["train", "val", "test"],
                                         names=["a", "b"]))
    assert data == {"path": str(tmp_path), "train": "images/train", "val": "images/val",
                    "test": "images/test", "nc": 2, "names": {0: "a", 1: "b"}}


def test_cli_exports_a_yolo_dataset_and_refuses_an_unknown_format(release,
                                                                 tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    store, _ = release
    seal(store.path)
    result = CliRunner().invoke(app, ["export-layout", str(store.path), str(tmp_path / "y"),
                                      "--format", "yolo", "--split", "test"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "y" / "images" / "test").iterdir()) == sorted(
        f"{s.image_id}.jpg" for s in SAMPLES if s.split == "test")
    assert not (tmp_path / "y" / "images" / "train").exists()
    bad = CliRunner().invoke(app, ["export-layout", str(store.path), str(tmp_path / "z"),
                                   "--format", "voc"])
    assert bad.exit_code == 2 and "unknown format" in bad.output
