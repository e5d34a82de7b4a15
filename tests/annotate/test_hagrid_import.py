"""Importing a dataset in the published HaGRID layout, on a small generated folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.ingest import ingest
from schemas.taxonomy import load_taxonomy
from tasks.annotate.hagrid_import import (
    FileStatus,
    ImportMode,
    LayoutProblem,
    import_hagrid,
    pair_layout,
    parse_entry,
    read_hagrid_layout,
)
from tasks.catalog import Catalog
from tasks.storage import LocalStorage
from tests.conftest import read_truth

pytestmark = pytest.mark.usefixtures("prefect_harness")
V1 = load_taxonomy("hagrid_v1")
LABELS = set(V1.box_labels)


def _name(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"hagrid-test-{i}"))


def _entry(t: dict, i: int) -> dict:
    entry = {"bboxes": t["bboxes"], "labels": t["labels"], "leading_hand": t["leading_hand"],
             "leading_conf": 0.9 if i % 2 else 1.0,
             "user_id": hashlib.md5(t["user_id"].encode()).hexdigest()}
    if i in (0, 1, 2):  # v2 extras
        entry |= {"united_bbox": None, "united_label": None, "meta": {"age": [31.5]},
                  "hand_landmarks": [[[0.5, 0.5]] * 21 for _ in t["bboxes"]]}
    return entry


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """13 photos laid out as <gesture>/<uuid>.jpg plus [train/]<gesture>.json, with a copy,
    a corrupt file, a stray image, a README, malformed files and entries.

    0-6, 12: good entries (0-2 with v2 extras, 12 without user_id); 7: only an unknown
    label; 8: one box far outside; 9: not an object; 10: no entry; 11: unknown gesture.
    """
    from tasks.simulation.generator import generate_batch

    base = tmp_path_factory.mktemp("hagrid")
    generate_batch(base / "synth", n=13, seed=5, dup_rate=0, problems=False,
                   hard_negatives=False, workers=1, size=(1280, 720))
    truth = read_truth(base / "synth")
    data, ann = base / "dataset", base / "annotations"
    files: dict[str, dict] = {}  # annotations file -> entries
    expected: dict[str, dict | None] = {}  # dataset file -> entry (None: none)
    for i, t in enumerate(truth):
        gesture = "thumbs_sideways" if i == 11 else t["gesture"]
        key = f"{gesture}/{_name(i)}.jpg"
        (data / gesture).mkdir(parents=True, exist_ok=True)
        shutil.copy(base / "synth" / t["file"], data / key)
        entry = _planted_entry(t, i)
        split = "train/" if gesture < "p" else ""
        if entry is not None:
            files.setdefault(f"{split}{gesture}.json", {})[_name(i)] = entry
        expected[key] = entry if isinstance(entry, dict) else None
    first = next(iter(expected))
    gesture, entries = first.split("/")[0], files[_json_of(files, first)]
    copy, corrupt = f"{gesture}/{_name(100)}.jpg", f"{gesture}/{_name(101)}.jpg"
    shutil.copy(data / first, data / copy)  # an exact copy, with its own entry
    (data / corrupt).write_bytes((data / first).read_bytes()[:5000])  # truncated
    for name in (_name(100), _name(101), _name(102)):  # 102: an entry without an image
        entries[name] = expected[first]
    expected[copy] = expected[corrupt] = expected[first]
    shutil.copy(data / first, data / "stray.jpg")
    (data / "README.txt").write_text("HaGRID sample\n")
    for name, entries in files.items():
        (ann / name).parent.mkdir(parents=True, exist_ok=True)
        (ann / name).write_text(json.dumps(entries))
    (ann / "test").mkdir(exist_ok=True)
    (ann / "test" / "palm.json").write_text("{not json")
    (ann / "test" / "like.json").write_text("[1, 2]")
    return {"data": data, "ann": ann, "expected": expected, "copy": copy, "first": first,
            "corrupt": corrupt}


def _planted_entry(t: dict, i: int) -> dict | list | None:
    entry = _entry(t, i)
    if i == 7:
        return dict(entry, bboxes=t["bboxes"][:1], labels=["thumbs_sideways"])
    if i == 8:
        return dict(entry, bboxes=[*t["bboxes"], [1.5, 0.2, 0.1, 0.1]],
                    labels=[*t["labels"], "no_gesture"])
    if i == 9:
        return ["not", "an", "object"]
    if i == 10:
        return None
    if i == 12:
        entry.pop("user_id")
    return entry


def _json_of(files: dict[str, dict], key: str) -> str:
    gesture = key.split("/")[0]
    return next(n for n in files if Path(n).stem == gesture)


def _catalog(root: Path) -> Catalog:
    return Catalog(LocalStorage(root))


def _image_ids(root: Path, data: Path) -> dict[str, str]:
    subs = _catalog(root).read_table("submissions").to_pylist()
    return {r["file"]: r["image_id"] for r in subs
            if r["source"] == str(data.resolve()) and r["image_id"]}


def _ingest(source: str, submissions: str, root: str, /, *, keep_user_ids: bool) -> dict:
    return ingest(source=source, submissions=submissions, root=root,
                  keep_user_ids=keep_user_ids)


def _run(layout: dict, root: Path, mode: ImportMode) -> dict:
    return import_hagrid(layout["data"], layout["ann"], root=str(root), mode=mode, taxonomy=V1,
                         ingest=_ingest)


@pytest.fixture(scope="module")
def accepted(layout: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("root-accept")
    return root, _run(layout, root, ImportMode.ACCEPT)


def test_every_file_is_accounted_for_once(layout, accepted):
    _, summary = accepted
    assert summary["images"] == 16 == sum(summary["files"].values())
    assert summary["files"] == {"annotated": 8, "preannotated": 0, "already_imported": 0,
                                "entry_rejected": 3, "no_entry": 1, "not_ingested": 4}
    assert summary["not_ingested"] == {"exact_duplicate": 1, "missing_metadata": 1,
                                       "unknown_gesture": 1, "unreadable": 1}
    assert summary["entries_rejected"] == {"far_outside": 1, "malformed": 1, "no_boxes": 1}
    assert summary["entries_without_images"] == 1 and summary["images_without_entries"] == 1
    assert summary["problems"] == {
        "malformed_entry": 1, "malformed_file": 2, "missing_user_id": 1, "no_entry": 1,
        "no_image": 1, "outside_gesture_folder": 1, "unexpected_file": 1,
        "unknown_gesture_file": 1, "unknown_gesture_folder": 1}
    assert summary["ingest"]["inputs"] == 16 and summary["ingest"]["accepted"] == 12


def test_accepted_entries_become_boxes_and_verdicts(layout, accepted):
    root, summary = accepted
    ids = _image_ids(root, layout["data"])
    cat = _catalog(root)
    boxes = cat.read_table("boxes").to_pylist()
    annotated = {f: ids[f] for f, e in layout["expected"].items()
                 if e is not None and f in ids and _usable(e)}
    assert len(annotated) == summary["annotations_accepted"] == 8
    for file, image_id in annotated.items():
        entry = layout["expected"][file]
        rows = sorted((r for r in boxes if r["image_id"] == image_id), key=lambda r: r["box_index"])
        got = sorted(([r["x"], r["y"], r["w"], r["h"]], r["label"]) for r in rows)
        want = sorted(zip(entry["bboxes"], entry["labels"], strict=True))
        assert [g[1] for g in got] == [w[1] for w in want]
        assert all(abs(a - b) <= 1e-6 for g, w in zip(got, want) for a, b in zip(g[0], w[0]))
        assert {(r["leading_hand"], r["leading_conf"], r["method"], r["n_votes"],
                 r["agreement"]) for r in rows} == {
            (entry["leading_hand"], entry["leading_conf"], "import:hagrid", 1, 1.0)}
        assert rows[0]["label"] != "no_gesture"
    verdicts = {(v["stage"], v["image_id"]): v["verdict"]
                for v in cat.read_table("verdicts").to_pylist()}
    assert verdicts == {(stage, i): verdict for i in annotated.values() for stage, verdict in
                        (("validation", "accepted"), ("filtration", "clear"),
                         ("annotation", "annotated"))}
    assert cat.read_table("preannotations").num_rows == 0


def _usable(entry: dict) -> bool:
    try:
        parse_entry(entry, mode=ImportMode.ACCEPT, labels=LABELS)
    except ValueError:
        return False
    return True


def test_duplicates_map_to_nothing_and_extras_are_kept(layout, accepted):
    root, summary = accepted
    subs = {r["file"]: r for r in _catalog(root).read_table("submissions").to_pylist()}
    pair = [subs[layout["first"]], subs[layout["copy"]]]
    kept = [r for r in pair if r["outcome"] == "accepted"]
    dup = [r for r in pair if r["reason"] == "exact_duplicate"]
    assert len(kept) == len(dup) == 1 and dup[0]["duplicate_of"] == kept[0]["image_id"]
    assert subs[layout["corrupt"]]["reason"] == "unreadable"
    lines = [json.loads(line) for line in
             (root / summary["written"]["extras_file"]).read_text().splitlines()]
    assert len(lines) == summary["written"]["extras"] == 3
    assert all(set(x) == {"image_id", "file", "annotations_file", "united_bbox",
                          "united_label", "meta", "hand_landmarks"} for x in lines)
    assert {x["image_id"] for x in lines} <= set(_image_ids(root, layout["data"]).values())


def test_rerun_adds_nothing(layout, accepted):
    root, _ = accepted
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    again = _run(layout, root, ImportMode.ACCEPT)
    after = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert after == before
    assert again["ingest"]["inputs"] == 0 and again["written"]["batch_id"] is None
    assert again["files"]["already_imported"] == 8 and again["files"]["annotated"] == 0


def test_preannotate_mode_through_the_cli(layout, tmp_path):
    root = tmp_path / "root"
    result = CliRunner().invoke(app, ["import-hagrid", str(layout["data"]), str(layout["ann"]),
                                      "--root", str(root), "--mode", "preannotate", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["files"]["preannotated"] == summary["preannotations_written"] == 9
    assert summary["entries_rejected"] == {"malformed": 1, "no_boxes": 1}
    assert summary["boxes_dropped"] == {"far_outside": 1}
    cat = _catalog(root)
    pre = {r["image_id"]: r for r in cat.read_table("preannotations").to_pylist()}
    ids = _image_ids(root, layout["data"])
    for file, entry in layout["expected"].items():
        if entry is None or ids.get(file) not in pre:
            continue
        row = pre[ids[file]]
        answer = json.loads(row["answer"])
        want = sorted(zip(entry["bboxes"], entry["labels"], strict=True))
        want = [w for w in want if w[0][0] <= 1.0]  # the far-outside box is dropped
        got = sorted(zip(answer["bboxes"], answer["labels"], strict=True))
        assert [g[1] for g in got] == [w[1] for w in want]
        assert all(abs(a - b) <= 1e-6 for g, w in zip(got, want) for a, b in zip(g[0], w[0]))
        assert answer["leading_hand"] == entry["leading_hand"]
        assert row["source"].startswith("hagrid:") and row["source"].endswith(".json")
    stages = {v["stage"] for v in cat.read_table("verdicts").to_pylist()}
    assert stages == {"validation", "filtration"} and cat.read_table("boxes").num_rows == 0
    assert cat.read_table("verdicts").num_rows == 2 * len(pre)


def test_missing_folders_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["import-hagrid", str(tmp_path / "nope"), str(tmp_path),
                                      "--root", str(tmp_path / "root")])
    assert result.exit_code == 2 and "error:" in result.output


def test_pairing_reports_split_duplicates_and_keeps_the_first():
    entry = {"bboxes": [[0.1, 0.1, 0.2, 0.2]], "labels": ["like"], "leading_hand": "left",
             "user_id": "u1"}
    files = {"train/like.json": json.dumps({"a": entry}).encode(),
             "val/like.json": json.dumps({"a": dict(entry, user_id="u2"), "b": entry}).encode()}
    layout = pair_layout(["like/a.jpg", "like/b.jpg"], files, taxonomy=V1)
    assert [(i.file, i.user_id, i.annotations_file) for i in layout.images] == [
        ("like/a.jpg", "u1", "train/like.json"), ("like/b.jpg", "u1", "val/like.json")]
    assert [p.kind for p in layout.problems] == [LayoutProblem.DUPLICATE_ENTRY]
    assert layout.submissions_table().column_names == ["file", "user_id", "gesture",
                                                       "submitted_at"]


@pytest.mark.parametrize("conf", [1.5, "high", True])
def test_a_bad_leading_conf_rejects_the_entry(conf):
    entry = {"bboxes": [[0.1, 0.1, 0.2, 0.2]], "labels": ["like"], "leading_hand": "left",
             "leading_conf": conf}
    with pytest.raises(ValueError, match="leading_conf"):
        parse_entry(entry, mode=ImportMode.PREANNOTATE, labels=LABELS)
    assert FileStatus.ENTRY_REJECTED.value == "entry_rejected"


def test_the_crowd_stages_leave_imported_images_alone(accepted, tmp_path):
    import shutil

    from flows.annotate import annotate
    from flows.crowd import validate
    from schemas.crowd import Stage
    from tasks.crowd.stage import latest_verdicts

    src, _ = accepted
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    imported = latest_verdicts(_catalog(root), Stage.ANNOTATION)
    imported = set(imported.index[imported["method"] == "import:hagrid"])
    assert imported
    validate(root=str(root), crowd="simulated", cycles=20)
    annotate(root=str(root), crowd="simulated", cycles=20)
    for stage in (Stage.VALIDATION, Stage.ANNOTATION):
        v = latest_verdicts(_catalog(root), stage)
        assert (v.loc[sorted(imported), "method"] == "import:hagrid").all()
    sent = _catalog(root).read_table("stage_tasks").to_pandas()
    assert not set(sent["image_id"]) & imported


# ---- hostile layouts: links out of the folders, FIFOs, deeply nested JSON ----------------

@pytest.fixture()
def hostile_layout(layout: dict, tmp_path: Path) -> dict:
    """Two good images with entries; an image linked from outside the dataset; ``palm.json``
    linked from outside the annotations folder (with an entry for a palm image, which must
    not be read); a 400 KB file of ``[``."""
    data, ann, outside = tmp_path / "dataset", tmp_path / "annotations", tmp_path / "outside"
    for folder in (data / "like", data / "palm", ann / "test", outside):
        folder.mkdir(parents=True)
    sources = [f for f, e in layout["expected"].items() if isinstance(e, dict) and _usable(e)]
    entry = layout["expected"][sources[0]]
    for i, name in enumerate(("a", "b")):
        shutil.copy(layout["data"] / sources[i], data / "like" / f"{name}.jpg")
    shutil.copy(layout["data"] / sources[2], data / "palm" / "p.jpg")
    shutil.copy(layout["data"] / sources[3], outside / "stolen.jpg")
    (data / "like" / "stolen.jpg").symlink_to(outside / "stolen.jpg")
    (ann / "like.json").write_text(json.dumps({"a": entry, "b": entry, "stolen": entry}))
    (outside / "palm.json").write_text(json.dumps({"p": dict(entry, labels=["palm"])}))
    (ann / "palm.json").symlink_to(outside / "palm.json")
    (ann / "test" / "call.json").write_text("[" * 400_000)
    return {"data": data, "ann": ann}


def test_hostile_annotation_files_are_counted_problems_never_read(hostile_layout):
    ann = hostile_layout["ann"]
    os.mkfifo(ann / "test" / "fist.json")
    (ann / "test" / "mute.json").symlink_to("/etc/passwd")
    got = {}
    reader = threading.Thread(target=lambda: got.update(layout=read_hagrid_layout(
        hostile_layout["data"], ann, taxonomy=V1)), daemon=True)
    reader.start()
    reader.join(30)
    assert not reader.is_alive(), "blocked on the FIFO"
    problems = {(p.kind.value, p.where) for p in got["layout"].problems}
    assert {("outside_folder", "palm.json"), ("outside_folder", "test/mute.json"),
            ("unreadable_file", "test/fist.json"),
            ("malformed_file", "test/call.json")} <= problems
    assert ("no_entry", "palm/p.jpg") in problems, "the linked palm.json must not be read"


def test_an_import_with_hostile_files_imports_the_rest(hostile_layout, tmp_path):
    root = tmp_path / "root"
    summary = _run(hostile_layout, root, ImportMode.ACCEPT)
    assert summary["problems"]["outside_folder"] == 1
    assert summary["problems"]["malformed_file"] == 1
    assert summary["not_ingested"] == {"outside_source": 1}
    assert summary["files"]["annotated"] == 2 and summary["files"]["no_entry"] == 1
    stored = {r["sha256"] for r in _catalog(root).read_table("images").to_pylist()}
    stolen = hashlib.sha256((tmp_path / "outside" / "stolen.jpg").read_bytes()).hexdigest()
    assert stolen not in stored and len(stored) == 3


def test_an_entry_nested_too_deeply_is_rejected_as_malformed():
    entry = {"bboxes": [[0.1, 0.1, 0.2, 0.2]], "labels": ["like"], "leading_hand": "left",
             "hand_landmarks": [[[0.5, 0.5]] * 21], "meta": json.loads("[" * 200 + "]" * 200)}
    with pytest.raises(ValueError, match="nested over"):
        parse_entry(entry, mode=ImportMode.PREANNOTATE, labels=LABELS)
    parse_entry(dict(entry, meta={"age": [31.5]}), mode=ImportMode.ACCEPT, labels=LABELS)


# ---- v2 entries, image_extras, subject ids, EXIF orientation -----------------------------

V2 = load_taxonomy("hagrid_v2")
SUBJECT = hashlib.md5(b"subject-1").hexdigest()  # HaGRID's ids are hex hashes
STORED_BOX = [0.1, 0.2, 0.2, 0.3]  # the red box of every photo, in stored pixels


def _photo(seed: int, *, orientation: int = 1) -> bytes:
    """A distinct 1280x720 grey JPEG with a red rectangle at ``STORED_BOX`` of the stored
    pixels, and an EXIF orientation tag unless ``orientation`` is 1."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    grey = Image.fromarray(rng.integers(40, 200, size=(9, 16), dtype=np.uint8)).resize(
        (1280, 720), Image.Resampling.NEAREST).convert("RGB")
    x, y, w, h = STORED_BOX
    grey.paste((255, 0, 0), (int(x * 1280), int(y * 720), int((x + w) * 1280),
                             int((y + h) * 720)))
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    grey.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def _red_box(data: bytes) -> tuple[float, float, float, float]:
    """Edges of the red rectangle of a photo once turned upright (``exif_transpose``)."""
    from PIL import Image, ImageOps

    rgb = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"),
                     dtype=int)
    red = (rgb[..., 0] > 180) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
    rows, cols = np.flatnonzero(red.any(axis=1)), np.flatnonzero(red.any(axis=0))
    height, width = red.shape
    return (cols.min() / width, rows.min() / height, (cols.max() + 1) / width,
            (rows.max() + 1) / height)


V2_LANDMARKS = [[[0.15, 0.25], [0.2, 0.3]], [[0.6, 0.5], [0.65, 0.55]]]


@pytest.fixture(scope="module")
def v2_layout(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Four photos in split folders: ``hand_heart/a`` (v2 entry, two hands, every extra),
    ``like/b`` (v2 entry, EXIF orientation 6), ``like/c`` (v1 entry, leading hand left,
    orientation 2: a mirror, subject id not a hash), ``peace/d`` (v1 entry, no extras)."""
    base = tmp_path_factory.mktemp("hagrid-v2")
    data, ann = base / "dataset", base / "annotations"
    v2 = {"bboxes": [STORED_BOX, [0.55, 0.45, 0.2, 0.2]], "labels": ["hand_heart"] * 2,
          "united_bbox": [[0.1, 0.2, 0.65, 0.45]], "united_label": ["hand_heart"],
          "user_id": SUBJECT, "hand_landmarks": V2_LANDMARKS,
          "meta": {"age": [24.41], "gender": ["female"], "race": ["White"]}}
    one_hand = {"bboxes": [STORED_BOX], "labels": ["like"], "united_bbox": [None],
                "united_label": [None], "user_id": SUBJECT,
                "hand_landmarks": [V2_LANDMARKS[0]], "meta": {"age": [30.0]}}
    v1 = {"bboxes": [STORED_BOX], "leading_hand": "left", "leading_conf": 0.75}
    photos = {"hand_heart/a.jpg": (_photo(1), "train", v2),
              "like/b.jpg": (_photo(2, orientation=6), "val", one_hand),
              "like/c.jpg": (_photo(3, orientation=2), "val",
                             dict(v1, labels=["like"], user_id="worker-7")),
              "peace/d.jpg": (_photo(4), "test", dict(v1, labels=["peace"], user_id=SUBJECT))}
    files: dict[str, dict] = {}
    for key, (jpeg, split, entry) in photos.items():
        (data / key).parent.mkdir(parents=True, exist_ok=True)
        (data / key).write_bytes(jpeg)
        gesture, name = key.split("/")[0], Path(key).stem
        files.setdefault(f"{split}/{gesture}.json", {})[name] = entry
    for name, entries in files.items():
        (ann / name).parent.mkdir(parents=True, exist_ok=True)
        (ann / name).write_text(json.dumps(entries))
    return {"data": data, "ann": ann, "photos": photos}


@pytest.fixture(scope="module")
def v2_accepted(v2_layout: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``import-hagrid --taxonomy hagrid_v2 --keep-user-ids`` through the CLI."""
    root = tmp_path_factory.mktemp("root-v2") / "root"
    result = CliRunner().invoke(app, [
        "import-hagrid", str(v2_layout["data"]), str(v2_layout["ann"]), "--root", str(root),
        "--taxonomy", "hagrid_v2", "--keep-user-ids", "--json"])
    assert result.exit_code == 0, result.output
    ids = _image_ids(root, v2_layout["data"])
    return {"root": root, "summary": json.loads(result.stdout), "output": result.output,
            "ids": ids, "boxes": _rows_by_image(_catalog(root).read_table("boxes"), ids)}


def _rows_by_image(table, ids: dict[str, str]) -> dict[str, list[dict]]:
    by_id = {i: f for f, i in ids.items()}
    out: dict[str, list[dict]] = {}
    for row in sorted(table.to_pylist(), key=lambda r: (r["image_id"], r["box_index"])):
        out.setdefault(by_id[row["image_id"]], []).append(row)
    return out


def test_v2_entries_import_with_the_leading_hand_unknown(v2_accepted):
    summary, boxes = v2_accepted["summary"], v2_accepted["boxes"]
    assert summary["entries_rejected"] == {}
    assert summary["files"]["annotated"] == summary["annotations_accepted"] == 4
    assert summary["leading_hand_unknown"] == 2
    assert [r["label"] for r in boxes["hand_heart/a.jpg"]] == ["hand_heart", "hand_heart"]
    for file in ("hand_heart/a.jpg", "like/b.jpg"):
        assert {(r["leading_hand"], r["leading_conf"]) for r in boxes[file]} == {(None, None)}
    assert {(r["leading_hand"], r["leading_conf"]) for r in boxes["peace/d.jpg"]} == {
        ("left", 0.75)}


def test_v2_extras_and_the_source_split_go_to_the_image_extras_table(v2_layout, v2_accepted):
    from tasks.annotate.hagrid_import import latest_image_extras

    extras = latest_image_extras(_catalog(v2_accepted["root"]))
    assert list(extras.columns) == ["image_id", "source", "source_split", "extras_json",
                                    "recorded_at"]
    by_file = {f: extras.set_index("image_id").loc[i] for f, i in v2_accepted["ids"].items()}
    assert len(extras) == 4 and extras["image_id"].is_unique
    assert {f: r["source_split"] for f, r in by_file.items()} == {
        "hand_heart/a.jpg": "train", "like/b.jpg": "val", "like/c.jpg": "val",
        "peace/d.jpg": "test"}
    assert by_file["hand_heart/a.jpg"]["source"] == "hagrid:train/hand_heart.json"
    entry = v2_layout["photos"]["hand_heart/a.jpg"][2]
    want = {k: entry[k] for k in ("united_bbox", "united_label", "hand_landmarks", "meta")}
    assert by_file["hand_heart/a.jpg"]["extras_json"] == json.dumps(
        want, sort_keys=True, separators=(",", ":"))  # not tagged: exactly as published
    assert by_file["peace/d.jpg"]["extras_json"] == "{}"
    assert v2_accepted["summary"]["written"]["rows"]["image_extras"] == 4
    assert v2_accepted["summary"]["written"]["extras"] == 2  # the jsonl, as before


def test_the_split_is_null_without_split_folders(layout, accepted):
    from tasks.annotate.hagrid_import import latest_image_extras

    root, _ = accepted
    extras = latest_image_extras(_catalog(root)).set_index("image_id")["source_split"]
    ids = _image_ids(root, layout["data"])
    splits = {f.split("/")[0]: extras[ids[f]] for f in ids if ids[f] in extras.index}
    assert splits and all((s == "train") == (g < "p") for g, s in splits.items())
    assert all(s is None for g, s in splits.items() if g >= "p")


def test_keep_user_ids_keeps_hex_ids_and_hashes_the_rest(v2_accepted):
    images = _catalog(v2_accepted["root"]).read_table("images").to_pylist()
    users = {r["image_id"]: r["user_id"] for r in images}
    ids = v2_accepted["ids"]
    assert {users[ids[f]] for f in ("hand_heart/a.jpg", "like/b.jpg", "peace/d.jpg")} == {
        SUBJECT}
    assert users[ids["like/c.jpg"]] not in ("worker-7", SUBJECT)
    assert v2_accepted["summary"]["keep_user_ids"] is True


def test_user_ids_are_rehashed_by_default_and_still_group(layout, accepted):
    root, _ = accepted
    subs = [r for r in _catalog(root).read_table("submissions").to_pylist() if r["image_id"]]
    raw_to_key: dict[str, set[str]] = {}
    for r in subs:
        raw_to_key.setdefault(r["user_id"], set()).add(r["user_key"])
    assert all(len(keys) == 1 for keys in raw_to_key.values())  # one subject, one id
    assert not {k for keys in raw_to_key.values() for k in keys} & set(raw_to_key)
    assert len({k for keys in raw_to_key.values() for k in keys}) == len(raw_to_key)


def test_boxes_of_oriented_photos_are_turned_upright(v2_layout, v2_accepted):
    summary, boxes = v2_accepted["summary"], v2_accepted["boxes"]
    assert summary["orientation_tagged"] == 2
    assert "2 imported photos carry an EXIF orientation tag" in v2_accepted["output"]
    for file in ("like/b.jpg", "like/c.jpg", "peace/d.jpg"):
        [row] = boxes[file]
        got = (row["x"], row["y"], row["x"] + row["w"], row["y"] + row["h"])
        assert got == pytest.approx(_red_box(v2_layout["photos"][file][0]), abs=0.01), file
    assert boxes["like/c.jpg"][0]["leading_hand"] == "right"  # orientation 2 mirrors
    assert boxes["peace/d.jpg"][0]["leading_hand"] == "left"
    extras = {r["image_id"]: json.loads(r["extras_json"]) for r in
              _catalog(v2_accepted["root"]).read_table("image_extras").to_pylist()}
    turned = extras[v2_accepted["ids"]["like/b.jpg"]]
    assert turned["hand_landmarks"] == [[pytest.approx([0.75, 0.15]),
                                         pytest.approx([0.7, 0.2])]]  # orientation 6
    assert turned["united_bbox"] == [None] and turned["meta"] == {"age": [30.0]}


def test_v2_preannotations_leave_the_leading_hand_to_the_annotators(v2_layout, tmp_path):
    from tasks.annotate.boxes import parse_answer_json

    root = tmp_path / "root"
    def ingest_v2(source: str, submissions: str, root: str, /, *, keep_user_ids: bool) -> dict:
        return ingest(source=source, submissions=submissions, root=root, taxonomy="hagrid_v2",
                      keep_user_ids=keep_user_ids)

    summary = import_hagrid(v2_layout["data"], v2_layout["ann"], root=str(root),
                            mode=ImportMode.PREANNOTATE, taxonomy=V2, ingest=ingest_v2)
    assert summary["preannotations_written"] == 4 and summary["keep_user_ids"] is False
    ids = _image_ids(root, v2_layout["data"])
    pre = {r["image_id"]: r["answer"] for r in
           _catalog(root).read_table("preannotations").to_pylist()}
    assert json.loads(pre[ids["hand_heart/a.jpg"]])["leading_hand"] is None
    assert parse_answer_json(pre[ids["like/b.jpg"]]).leading_hand is None
    assert json.loads(pre[ids["like/c.jpg"]])["leading_hand"] == "right"
    users = {r["user_id"] for r in _catalog(root).read_table("images").to_pylist()}
    assert SUBJECT not in users and len(users) == 2  # re-hashed: two subjects, two ids


def test_v2_labels_are_unknown_under_v1(v2_layout, tmp_path):
    layout = read_hagrid_layout(v2_layout["data"], v2_layout["ann"], taxonomy=V1)
    entry = next(i.entry for i in layout.images if i.file == "hand_heart/a.jpg")
    with pytest.raises(ValueError, match="no usable box"):
        parse_entry(entry, mode=ImportMode.ACCEPT, labels=LABELS)
    answer, conf = parse_entry(entry, mode=ImportMode.ACCEPT, labels=set(V2.box_labels))
    assert answer.leading_hand is None and conf is None
