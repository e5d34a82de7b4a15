"""Importing a dataset in the published HaGRID layout, on a small generated folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import uuid
from pathlib import Path

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


def _run(layout: dict, root: Path, mode: ImportMode) -> dict:
    return import_hagrid(layout["data"], layout["ann"], root=str(root), mode=mode, taxonomy=V1,
                         ingest=lambda s, t, r: ingest(source=s, submissions=t, root=r))


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
