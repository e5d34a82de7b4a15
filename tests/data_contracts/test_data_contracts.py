"""Data contracts: a valid release passes; each planted break fails under the right table."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from data_contracts.page import render_page
from data_contracts.runner import ContractReport, run_contracts
from data_contracts.suites import build_suites
from schemas.release import MANIFEST
from schemas.taxonomy import Taxonomy, load_taxonomy
from tasks.publish.exports import json_bytes

TAXONOMY = load_taxonomy("hagrid_v1")
Frames = dict[str, pd.DataFrame]


def _box_lists(n_boxes: np.ndarray, rng: np.random.Generator) -> tuple[pa.Array, np.ndarray]:
    """Per-image lists of [x, y, w, h] inside the image, and the flat coordinates."""
    total = int(n_boxes.sum())
    wh = rng.uniform(0.05, 0.4, size=(total, 2))
    xy = rng.uniform(0.0, 1.0, size=(total, 2)) * (1.0 - wh)
    flat = np.column_stack([xy, wh]).round(6)
    offsets = np.concatenate([[0], np.cumsum(n_boxes)]).astype(np.int32)
    boxes = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), 4)
    return pa.ListArray.from_arrays(pa.array(offsets), boxes), flat


def _label_lists(gestures: np.ndarray, n_boxes: np.ndarray) -> pa.Array:
    """The gesture for the first box of an image, ``no_gesture`` for the others."""
    offsets = np.concatenate([[0], np.cumsum(n_boxes)]).astype(np.int32)
    first = np.zeros(int(n_boxes.sum()), dtype=bool)
    first[offsets[:-1]] = True
    labels = np.where(first, np.repeat(gestures, n_boxes), "no_gesture")
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(labels))


def _placement(split: np.ndarray, sizes: np.ndarray, per_shard: int) -> pd.DataFrame:
    """shard, offset, size, json_offset, json_size of each image, members packed in order."""
    frame = pd.DataFrame({"split": split, "size": sizes, "json_size": 300})
    position = frame.groupby("split").cumcount().to_numpy()
    frame["shard"] = [f"shards/{s}-{p // per_shard:06d}.tar" for s, p in zip(split, position)]
    step = 512 + frame["size"] + 512 + frame["json_size"]  # header, data, header, json
    end = step.groupby(frame["shard"]).cumsum()
    frame["offset"] = end - step + 512
    frame["json_offset"] = frame["offset"] + frame["size"] + 512
    return frame


def manifest_table(n: int, *, seed: int = 0, taxonomy: Taxonomy = TAXONOMY,
                   per_shard: int = 1000) -> pa.Table:
    """A valid manifest of ``n`` images by ``n // 5 + 1`` users, about 1.5 boxes each."""
    rng = np.random.default_rng(seed)
    ids = np.array(sorted(str(uuid.UUID(bytes=rng.bytes(16))) for _ in range(n)))
    users = rng.integers(0, n // 5 + 1, size=n)
    split = np.where(users % 4 == 0, "test", "train")
    gestures = rng.choice(np.array(taxonomy.gestures), size=n)
    n_boxes = rng.integers(1, 3, size=n)
    boxes, _ = _box_lists(n_boxes, rng)
    agreement = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(n_boxes)]).astype(np.int32)),
        pa.array(rng.uniform(0.5, 1.0, size=int(n_boxes.sum()))))
    sizes = rng.integers(20_000, 400_000, size=n)
    place = _placement(split, sizes, per_shard)
    columns = {
        "image_id": ids, "split": split,
        "sha256": [f"{i:064x}" for i in rng.integers(0, 2**62, size=n)],
        "source_sha256": [f"{i:064x}" for i in rng.integers(0, 2**62, size=n)],
        "width": np.full(n, 1920, np.int32), "height": np.full(n, 1080, np.int32),
        "format": np.full(n, "JPEG"), "gesture": gestures,
        "user_id": [f"{u:016x}" for u in users], "boxes": boxes,
        "labels": _label_lists(gestures, n_boxes), "box_agreement": agreement,
        "leading_hand": rng.choice(np.array(["left", "right"]), size=n),
        "leading_conf": rng.uniform(0.5, 1.0, size=n),
        "n_annotators": np.full(n, 3, np.int16), "annotation_method": np.full(n, "median_edges"),
        "source_split": [None] * n, "extras_json": [None] * n,
        **{c: place[c].to_numpy() for c in ("shard", "offset", "size", "json_offset",
                                            "json_size")},
    }
    return pa.Table.from_arrays([pa.array(columns[f.name], f.type) for f in MANIFEST],
                                schema=MANIFEST)


def shard_members(manifest: pd.DataFrame) -> pd.DataFrame:
    """The members a correct writer puts in the shards: ``<key>.jpg`` (upright, as large as
    the manifest says, no metadata) and ``<key>.json``."""
    images = manifest[["shard", "image_id", "offset", "size", "width", "height"]].assign(
        ext="jpg", metadata=None)
    json = manifest[["shard", "image_id", "json_offset", "json_size"]].assign(ext="json")
    json = json.rename(columns={"json_offset": "offset", "json_size": "size"})
    members = pd.concat([images, json]).rename(columns={"image_id": "key"})
    members = members.astype({"width": "Int64", "height": "Int64", "metadata": object})
    return members.sort_values(["shard", "offset"]).reset_index(drop=True)[
        ["shard", "key", "ext", "offset", "size", "width", "height", "metadata"]]


def same_split_links(manifest: pd.DataFrame, count: int) -> pd.DataFrame:
    """``count`` links between consecutive images of the same split."""
    train = manifest.loc[manifest["split"] == "train", "image_id"].to_numpy()
    return pd.DataFrame({"image_a": train[:count], "image_b": train[1:count + 1]})


def catalog_frames(manifest: pd.DataFrame) -> Frames:
    """Catalog tables consistent with the manifest (the columns the contracts read)."""
    n = len(manifest)
    images = manifest[["image_id", "sha256", "width", "height", "gesture", "user_id"]].assign(
        submission_id=[f"s{i:06d}" for i in range(n)], thumb=b"\x00" * 256)
    submissions = pd.DataFrame({
        "submission_id": [*images["submission_id"], "s-rejected"],
        "outcome": ["accepted"] * n + ["rejected"], "reason": [None] * n + ["too_small"],
        "image_id": [*manifest["image_id"], None]})
    verdicts = pd.DataFrame({"stage": "validation", "image_id": manifest["image_id"],
                             "verdict": "accepted", "confidence": 0.95})
    boxes = pd.DataFrame({"image_id": manifest["image_id"], "box_index": 0, "x": 0.1,
                          "y": 0.2, "w": 0.3, "h": 0.4, "label": manifest["gesture"],
                          "label_conf": 1.0, "agreement": 0.8, "leading_hand": "right",
                          "leading_conf": 1.0})
    return {"images": images, "submissions": submissions, "verdicts": verdicts, "boxes": boxes}


def valid_frames(n: int = 60, *, seed: int = 0) -> Frames:
    """Every frame the contracts take, all valid, for ``n`` images in shards of 16."""
    manifest = manifest_table(n, seed=seed, per_shard=16).to_pandas()
    return {**catalog_frames(manifest), "manifest": manifest,
            "shard_members": shard_members(manifest), "links": same_split_links(manifest, 5)}


# ---- planted breaks ------------------------------------------------------------------------

def _set_cell(frame: pd.DataFrame, row: int, column: str, value: object) -> None:
    cells = list(frame[column])
    cells[row] = value
    frame[column] = pd.Series(cells, index=frame.index, dtype=object)


def duplicate_image_id(frames: Frames) -> None:
    frames["manifest"].loc[1, "image_id"] = frames["manifest"].loc[0, "image_id"]


def duplicate_catalog_image(frames: Frames) -> None:
    frames["images"].loc[1, "image_id"] = frames["images"].loc[0, "image_id"]


def label_outside_taxonomy(frames: Frames) -> None:
    labels = list(frames["manifest"].loc[3, "labels"])
    _set_cell(frames["manifest"], 3, "labels", ["thumbs_sideways", *labels[1:]])


def zero_width_box(frames: Frames) -> None:
    boxes = [list(b) for b in frames["manifest"].loc[2, "boxes"]]
    boxes[0][2] = 0.0
    _set_cell(frames["manifest"], 2, "boxes", boxes)


def box_past_right_edge(frames: Frames) -> None:
    boxes = [list(b) for b in frames["manifest"].loc[4, "boxes"]]
    boxes[0][0], boxes[0][2] = 0.8, 0.3
    _set_cell(frames["manifest"], 4, "boxes", boxes)


def user_in_two_splits(frames: Frames) -> None:
    manifest = frames["manifest"]
    shared = manifest["user_id"].value_counts().index[0]  # a user with several images
    row = manifest.index[manifest["user_id"] == shared][0]
    manifest.loc[row, "split"] = "test" if manifest.loc[row, "split"] == "train" else "train"


def link_across_splits(frames: Frames) -> None:
    manifest = frames["manifest"]
    train = manifest.loc[manifest["split"] == "train", "image_id"].iloc[0]
    test = manifest.loc[manifest["split"] == "test", "image_id"].iloc[0]
    frames["links"] = pd.concat([frames["links"],
                                 pd.DataFrame({"image_a": [train], "image_b": [test]})])


def offset_differs(frames: Frames) -> None:
    frames["manifest"].loc[5, "offset"] += 512


def member_without_manifest_row(frames: Frames) -> None:
    extra = pd.DataFrame({"shard": ["shards/train-000000.tar"],
                          "key": ["00000000-0000-4000-8000-000000000000"], "ext": ["jpg"],
                          "offset": [10**9], "size": [1000]})
    frames["shard_members"] = pd.concat([frames["shard_members"], extra], ignore_index=True)


def image_id_with_trailing_newline(frames: Frames) -> None:
    frames["manifest"].loc[6, "image_id"] += "\n"  # a "$" pattern would let it through


def member_with_gps_and_artist(frames: Frames) -> None:
    members = frames["shard_members"]
    first_image = members.index[members["ext"] == "jpg"][0]
    members.loc[first_image, "metadata"] = "exif,gps,artist"


def sideways_member(frames: Frames) -> None:
    members = frames["shard_members"]
    first_image = members.index[members["ext"] == "jpg"][0]
    members.loc[first_image, ["width", "height"]] = [1080, 1920]  # the manifest says 1920x1080


def unreadable_member(frames: Frames) -> None:
    members = frames["shard_members"]
    first_image = members.index[members["ext"] == "jpg"][0]
    members.loc[first_image, ["width", "height"]] = pd.NA
    members.loc[first_image, "metadata"] = "unreadable: not a JPEG, PNG or WebP file"


def rejection_without_reason(frames: Frames) -> None:
    frames["submissions"].loc[len(frames["submissions"]) - 1, "reason"] = None


def confidence_above_one(frames: Frames) -> None:
    frames["verdicts"].loc[0, "confidence"] = 1.5


BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
BREAKS: list[tuple[Callable[[Frames], None], str, str, str]] = [
    (duplicate_image_id, "manifest", "expect_column_values_to_be_unique", "image_id"),
    (duplicate_catalog_image, "images", "expect_column_values_to_be_unique", "image_id"),
    (label_outside_taxonomy, "manifest_boxes", IN_SET, "label"),
    (zero_width_box, "manifest_boxes", BETWEEN, "w"),
    (box_past_right_edge, "manifest_boxes", BETWEEN, "x2"),
    (user_in_two_splits, "manifest_users", BETWEEN, "n_splits"),
    (link_across_splits, "links", "expect_column_pair_values_to_be_equal", "split_a, split_b"),
    (offset_differs, "shard_check", IN_SET, "side"),
    (member_without_manifest_row, "shard_check", IN_SET, "side"),
    (member_without_manifest_row, "shard_keys", IN_SET, "side"),
    (image_id_with_trailing_newline, "manifest", "expect_column_values_to_match_regex",
     "image_id"),
    (member_with_gps_and_artist, "shard_members", "expect_column_values_to_be_null",
     "metadata"),
    (sideways_member, "shard_check", "expect_column_pair_values_to_be_equal",
     "width, member_width"),
    (sideways_member, "shard_check", "expect_column_pair_values_to_be_equal",
     "height, member_height"),
    (unreadable_member, "shard_members", "expect_column_values_to_not_be_null", "width"),
    (rejection_without_reason, "submissions", "expect_column_values_to_not_be_null", "reason"),
    (confidence_above_one, "verdicts", BETWEEN, "confidence"),
]


def failed(report: ContractReport) -> set[tuple[str, str, str | None]]:
    return {(f.table, f.expectation, f.column) for f in report.failures}


# ---- tests ---------------------------------------------------------------------------------

def test_valid_frames_pass() -> None:
    report = run_contracts(valid_frames(), taxonomy=TAXONOMY)
    assert report.success, report.summary()
    assert report.failures == []
    assert set(report.checked) == {
        "submissions", "images", "verdicts", "boxes", "manifest", "manifest_boxes",
        "manifest_users", "links", "shard_members", "shard_check", "shard_keys"}
    assert all(count > 0 for count in report.checked.values())


def test_an_unknown_leading_hand_passes_in_the_manifest_and_the_catalog() -> None:
    """Imported v2 images name no leading hand: null leading_hand and leading_conf."""
    frames = valid_frames()
    for table in ("manifest", "boxes"):
        for column in ("leading_hand", "leading_conf"):
            _set_cell(frames[table], 0, column, None)
    _set_cell(frames["manifest"], 0, "source_split", "val")
    _set_cell(frames["manifest"], 0, "extras_json", '{"meta":{"age":[30.1]}}')
    report = run_contracts(frames, taxonomy=TAXONOMY)
    assert report.success, report.summary()


def test_absent_frames_are_skipped() -> None:
    frames = valid_frames()
    report = run_contracts({"images": frames["images"]}, taxonomy=TAXONOMY)
    assert report.success and set(report.checked) == {"images"}


@pytest.mark.parametrize(("plant", "table", "expectation", "column"), BREAKS,
                         ids=[f"{b[0].__name__}-{b[1]}" for b in BREAKS])
def test_planted_break_fails(plant: Callable[[Frames], None], table: str, expectation: str,
                             column: str) -> None:
    frames = valid_frames()
    plant(frames)
    report = run_contracts(frames, taxonomy=TAXONOMY)
    assert not report.success
    assert (table, expectation, column) in failed(report), report.summary()
    assert table in report.summary()


def test_failure_detail_names_the_rows() -> None:
    frames = valid_frames()
    zero_width_box(frames)
    report = run_contracts(frames, taxonomy=TAXONOMY)
    failure = next(f for f in report.failures if f.table == "manifest_boxes" and f.column == "w")
    assert failure.detail.startswith("1 of ")
    assert frames["manifest"].loc[2, "image_id"] in failure.detail


def test_missing_column_fails_with_the_error() -> None:
    frames = valid_frames()
    report = run_contracts({"images": frames["images"].drop(columns=["sha256"])},
                           taxonomy=TAXONOMY)
    assert not report.success
    assert {f.column for f in report.failures} == {"sha256"}
    assert all(f.detail.startswith("error:") for f in report.failures)


def test_unequal_box_and_label_lists_fail_without_crashing() -> None:
    frames = valid_frames()
    labels = list(frames["manifest"].loc[0, "labels"])
    _set_cell(frames["manifest"], 0, "labels", [*labels, "no_gesture", "no_gesture"])
    report = run_contracts(frames, taxonomy=TAXONOMY)
    assert ("manifest", "expect_column_pair_values_to_be_equal", "n_boxes, n_labels") in failed(
        report)


def test_data_docs_are_written_and_byte_identical(tmp_path: Path) -> None:
    frames = valid_frames()
    zero_width_box(frames)  # failures render the unexpected-value tables too
    first, second = tmp_path / "a", tmp_path / "b"
    run_contracts(frames, taxonomy=TAXONOMY, docs_dir=first)
    run_contracts(frames, taxonomy=TAXONOMY, docs_dir=second)
    assert (first / "index.html").is_file()
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert any(p.parts[0] == "validations" for p in files)
    different = [p for p in files if (first / p).read_bytes() != (second / p).read_bytes()]
    assert different == []


# ---- outcomes and the contracts page -------------------------------------------------------

def test_results_list_every_expectation_of_the_suites_in_order() -> None:
    report = run_contracts(valid_frames(), taxonomy=TAXONOMY)
    suites = build_suites(TAXONOMY)
    for table, expectations in suites.items():
        mine = [r for r in report.results if r.table == table]
        assert [r.expectation for r in mine] == [e.expectation_type for e in expectations]
        assert all(r.success and r.error is None and "batch_id" not in r.kwargs for r in mine)
    assert report.tally() == {t: {"passed": len(e), "failed": 0} for t, e in suites.items()}
    assert json.loads(json_bytes(report.as_dict()))["tables"] == report.tally()


def test_a_failed_outcome_keeps_its_observed_values() -> None:
    frames = valid_frames()
    zero_width_box(frames)
    report = run_contracts(frames, taxonomy=TAXONOMY)
    (bad,) = [r for r in report.results if not r.success]
    assert (bad.table, bad.expectation, bad.kwargs) == (
        "manifest_boxes", "expect_column_values_to_be_between",
        {"column": "w", "min_value": 0.0, "strict_min": True})
    assert bad.observed["unexpected_count"] == 1 and bad.observed["partial_unexpected_list"] == [0.0]
    assert bad.observed["partial_unexpected_index_list"] == [
        {"image_id": frames["manifest"].loc[2, "image_id"], "w": 0.0}]
    assert report.tally()["manifest_boxes"] == {"passed": 11, "failed": 1}


def _rows(page: str) -> list[tuple[str, str, str]]:
    """(row id, status text, whole row) of every expectation row of the page."""
    return [(m[0], m[2], m[3]) for m in re.findall(
        r'<tr id="(t-[^"]+)" class="(pass|fail)">.*?<td class="status \2">([^<]*)</td>(.*?)</tr>',
        page)]


def test_the_page_shows_every_expectation_pass_or_fail_with_the_values() -> None:
    frames = valid_frames()
    zero_width_box(frames)
    label_outside_taxonomy(frames)
    _set_cell(frames["manifest"], 7, "labels", ["<b>bold</b>", *frames["manifest"].loc[7, "labels"][1:]])
    report = run_contracts(frames, taxonomy=TAXONOMY)
    page = render_page(report.results, title="t <v1>", links=[("index.html", "report")],
                       docs_href="../data_docs/index.html")
    rows = _rows(page)
    assert len(rows) == len(report.results) == sum(report.checked.values())
    assert {status for _, status, _ in rows} == {"pass", "FAIL"}
    failed = {row_id: row for row_id, status, row in rows if status == "FAIL"}
    assert set(failed) == {"t-manifest_boxes-5", "t-manifest_boxes-11"}  # w > 0; label set
    assert "1 of 101 unexpected" in failed["t-manifest_boxes-5"]
    assert f"image_id=&quot;{frames['manifest'].loc[2, 'image_id']}&quot; w=0.0" in page
    assert "2 of 101 unexpected" in failed["t-manifest_boxes-11"]
    assert "&quot;thumbs_sideways&quot;" in failed["t-manifest_boxes-11"]
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold" not in page
    assert "FAILED: 2 of" in page and "<h1>t &lt;v1&gt;</h1>" in page
    assert 'href="../data_docs/index.html"' in page and "2000-01-01" in page


def test_the_page_is_self_contained_and_reproducible() -> None:
    frames = valid_frames()
    zero_width_box(frames)
    first = run_contracts(frames, taxonomy=TAXONOMY)
    second = run_contracts(frames, taxonomy=TAXONOMY)
    page = render_page(first.results, title="t")
    assert page == render_page(second.results, title="t")
    assert json_bytes(first.as_dict()) == json_bytes(second.as_dict())
    lowered = page.lower()
    assert all(s not in lowered for s in ("<script", "http:", "https:", "src=", "url(", "@import"))
