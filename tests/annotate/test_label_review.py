"""Flagged labels go back to people: the annotation stage's review queue, with answer files
and with the simulated crowd, up to the next release."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.annotate import annotate
from flows.publish import publish
from schemas.annotation import BOXES
from schemas.crowd import CrowdBackendOptions, Queue, Stage
from schemas.tables import LABEL_ISSUES
from tasks.annotate.label_review import (
    annotator_flag_rates,
    due_label_reviews,
    leading_hand_quality,
    review_notes,
)
from tasks.catalog import Catalog
from tasks.crowd.stage import latest_verdicts
from tasks.simulation.crowd import GeneratorTruth
from tasks.storage import LocalStorage
from tests.annotate.test_annotation_flow import pass_stages
from tests.catalogs import make_catalog, make_release_catalog

T0 = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)


def _catalog(root: Path) -> Catalog:
    return Catalog(LocalStorage(root))


def flag(root: Path, rows: list[tuple[str, str, str, str]], *, release: str = "v1",
         audit: str = "a1", when: dt.datetime | None = None) -> None:
    """Write ``label_issues`` rows (image_id, head, given, suggested), as an audit would."""
    now = when or dt.datetime.now(dt.UTC)
    table = pa.Table.from_pylist(
        [{"release": release, "image_id": i, "box_index": 0, "head": head, "given_label": given,
          "suggested_label": suggested, "quality": 0.02, "audit_id": audit, "flagged_at": now}
         for i, head, given, suggested in rows], schema=LABEL_ISSUES)
    _catalog(root).write_batch(f"{now:%Y%m%dT%H%M%S%f}-audit-{audit}", {"label_issues": table},
                               info={"kind": "audit"})


def outbox_rows(root: Path) -> list[dict[str, str]]:
    return [row for path in sorted((root / "crowd" / "annotation" / "outbox").glob("*.csv"))
            for row in csv.DictReader(path.open())]


def stage_tasks(root: Path) -> pd.DataFrame:
    return _catalog(root).read_table("stage_tasks").to_pandas()


def current_boxes(root: Path, image_id: str) -> pd.DataFrame:
    boxes = _catalog(root).read_table("boxes").to_pandas()
    boxes = boxes[boxes["image_id"] == image_id]
    last = boxes.sort_values(["decided_at", "batch_id"]).iloc[-1]["batch_id"]
    return boxes[boxes["batch_id"] == last].sort_values("box_index")


def answer_file(path: Path, rows: list[tuple[str, str, dict]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "worker_id", "answer", "queue"])
        w.writerows([i, worker, json.dumps(entry), "review"] for i, worker, entry in rows)
    return path


# ---- the pure rules ------------------------------------------------------------------


def _issues(*rows: tuple[str, dt.datetime]) -> pd.DataFrame:
    return pd.DataFrame({"image_id": [r[0] for r in rows], "flagged_at": [r[1] for r in rows],
                         "release": "v1", "head": "gesture", "box_index": 0,
                         "given_label": "like", "suggested_label": "peace", "quality": 0.1})


def _tasks(*rows: tuple[str, dt.datetime]) -> pd.DataFrame:
    return pd.DataFrame({"image_id": [r[0] for r in rows], "queue": Queue.REVIEW.value,
                         "pushed_at": pd.to_datetime([r[1] for r in rows], utc=True)})


def _answered(**times: dt.datetime) -> pd.Series:
    return pd.Series(pd.to_datetime(list(times.values()), utc=True), index=list(times))


def test_a_flag_is_due_once_until_a_review_answers_it():
    t = [T0 + dt.timedelta(hours=h) for h in range(5)]
    issues = _issues(("a", t[0]), ("a", t[2]), ("b", t[0]), ("c", t[3]), ("x", t[0]))
    tasks = _tasks(("a", t[1]), ("c", t[1]))
    answered = _answered(c=t[2])
    # a: a review is open (pushed, unanswered) whatever flags came after; b: never sent;
    # c: reviewed before its flag; x: not eligible (excluded since)
    assert due_label_reviews(issues, tasks, answered, eligible={"a", "b", "c"}) == ["b", "c"]
    # a's review answered after both flags: nothing more to send
    answered = _answered(a=t[4], c=t[4])
    assert due_label_reviews(issues, tasks, answered, eligible={"a", "c"}) == []


def test_review_notes_name_each_suspected_label_once():
    issues = _issues(("a", T0), ("a", T0))
    issues.loc[1, ["head", "given_label", "suggested_label"]] = ["leading_hand", "left", "right"]
    note = review_notes(pd.concat([issues, issues]), ["a"])["a"]
    assert note == ("audit v1: box 0 gesture like -> peace (quality 0.100); "
                    "audit v1: leading hand left -> right (quality 0.100)")


# ---- answer files ---------------------------------------------------------------------



@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A catalog through every stage (14 released images, no crowd tasks), two flagged."""
    root = tmp_path_factory.mktemp("label-review") / "root"
    out = make_release_catalog(root, n=16, seed=5)
    ids = out["released"]
    assert len(ids) == 14
    gestures = _catalog(root).read_table("images").to_pandas().set_index("image_id")["gesture"]
    a, b = ids[0], ids[1]
    other = "peace" if gestures[a] != "peace" else "like"
    flag(root, [(a, "gesture", gestures[a], other), (b, "gesture", gestures[b], "fist"),
                (b, "leading_hand", "left", "right")])
    return root, ids, a, b, other


@pytest.mark.usefixtures("prefect_harness")
def test_flagged_images_and_nothing_else_go_to_review(released):
    root, _, a, b, other = released
    report = annotate(root=str(root), crowd="file")
    assert report["label_reviews_sent"] == 2 and report["pushed"] == 2
    assert report["queue"]["label_review_sent"] == 2
    tasks = stage_tasks(root)
    assert sorted(tasks["image_id"]) == sorted([a, b])
    assert set(tasks["queue"]) == {"review"}
    exported = {r["image_id"]: r for r in outbox_rows(root)}
    assert set(exported) == {a, b} and {r["queue"] for r in exported.values()} == {"review"}
    shown = json.loads(exported[a]["preannotation"])  # the current boxes, to correct
    assert shown["labels"][0] == current_boxes(root, a)["label"].iloc[0]
    assert exported[a]["note"] == (f"audit v1: box 0 gesture {shown['labels'][0]} -> {other} "
                                   "(quality 0.020)")
    assert "leading hand left -> right" in exported[b]["note"]

    # a rerun, and a second audit flagging a again while its review is out, send nothing
    assert annotate(root=str(root), crowd="file")["pushed"] == 0
    flag(root, [(a, "gesture", shown["labels"][0], other)], release="v2", audit="a2")
    report = annotate(root=str(root), crowd="file")
    assert report["pushed"] == 0 and report["label_reviews_sent"] == 0
    assert len(stage_tasks(root)) == 2


@pytest.mark.usefixtures("prefect_harness")
def test_a_review_answer_replaces_the_labels_and_the_next_release_carries_them(
        released, tmp_path):
    root, ids, a, b, other = released
    if stage_tasks(root).empty:  # run alone: push first
        annotate(root=str(root), crowd="file")
    before = current_boxes(root, a)
    fixed = {"bboxes": [[0.1, 0.2, 0.3, 0.4]], "labels": [other], "leading_hand": "right"}
    answers = answer_file(tmp_path / "review.csv", [(a, "expert1", fixed)])
    report = annotate(root=str(root), crowd="file",
                      options=CrowdBackendOptions(kind="file", answers=(str(answers),)))
    assert report["label_reviews_decided"] == 1 and report["pushed"] == 0
    after = current_boxes(root, a)
    assert after["label"].tolist() == [other] != before["label"].tolist()
    assert set(after["method"]) == {"review"} and set(after["leading_hand"]) == {"right"}
    assert latest_verdicts(_catalog(root), Stage.ANNOTATION).loc[a, "method"] == "review"
    assert annotate(root=str(root), crowd="file")["label_reviews_decided"] == 0  # once

    publish(root=str(root), version="v2", fractions="80/20")
    release = root / "releases" / "v2"
    manifest = pa.concat_tables([pq.read_table(p) for p in sorted(
        (release / "manifests").glob("*.parquet"))]).to_pandas().set_index("image_id")
    assert list(manifest.loc[a, "labels"]) == [other]
    assert manifest.loc[a, "gesture"] == other  # the reviewer's gesture is published
    assert manifest.loc[a, "annotation_method"] == "review"
    assert manifest.loc[a, "leading_hand"] == "right"
    untouched = [i for i in ids if i not in (a, b)]
    assert set(manifest.loc[untouched, "annotation_method"]) == {"median_edges"}

    # flagged again after that review (a later audit): the same expert may review it again
    flag(root, [(a, "gesture", other, "call")], release="v2", audit="a3")
    assert annotate(root=str(root), crowd="file")["label_reviews_sent"] == 1
    again = {**fixed, "labels": ["call"]}
    answers = answer_file(tmp_path / "review2.csv", [(a, "expert1", again)])
    report = annotate(root=str(root), crowd="file",
                      options=CrowdBackendOptions(kind="file", answers=(str(answers),)))
    assert report["answers_rejected"] == {} and report["label_reviews_decided"] == 1
    assert current_boxes(root, a)["label"].tolist() == ["call"]
    assert sorted(stage_tasks(root).query("image_id == @a")["round"]) == [1, 2]


# ---- the simulated crowd --------------------------------------------------------------


@pytest.mark.usefixtures("prefect_harness")
def test_the_simulated_expert_corrects_a_flagged_label_from_the_truth(tmp_path):
    root = tmp_path / "root"
    ids = make_catalog(root, n=6, seed=11)
    pass_stages(root, ids)
    annotate(root=str(root), crowd="simulated", cycles=8)
    assert set(latest_verdicts(_catalog(root), Stage.ANNOTATION).index) == set(ids)
    target = ids[2]
    truth, hand = GeneratorTruth.from_catalog(_catalog(root)).boxes(target)
    wrong = current_boxes(root, target).assign(label="no_gesture", batch_id="0002-wrong",
                                               decided_at=dt.datetime.now(dt.UTC))
    _catalog(root).write_batch("0002-wrong", {"boxes": pa.Table.from_pandas(
        wrong[BOXES.names], schema=BOXES, preserve_index=False)}, info={})
    flag(root, [(target, "gesture", "no_gesture", truth[0].label)])
    report = annotate(root=str(root), crowd="simulated", cycles=4)
    assert report["label_reviews_sent"] == 1 and report["label_reviews_decided"] == 1
    fixed = current_boxes(root, target)
    assert set(fixed["method"]) == {"review"}
    assert fixed["label"].iloc[0] == truth[0].label and fixed["leading_hand"].iloc[0] == hand
    review = stage_tasks(root).query("queue == 'review' and image_id == @target")
    assert len(review) == 1
    assert annotate(root=str(root), crowd="simulated", cycles=2)["pushed"] == 0


# ---- annotator quality from flags -----------------------------------------------------


def _answer(hand: str) -> str:
    return json.dumps({"bboxes": [[0.1, 0.1, 0.2, 0.2]], "labels": ["like"],
                       "leading_hand": hand}, separators=(",", ":"), sort_keys=True)


def test_flag_rates_and_leading_hand_quality_per_annotator():
    images = [f"i{k}" for k in range(8)]
    truth = ["left", "right"] * 4
    rows = []
    for k, (image, hand) in enumerate(zip(images, truth, strict=True)):
        rows.append((image, "good", hand))
        rows.append((image, "also_good", hand))
        rows.append((image, "sloppy", "right" if k % 2 == 0 else hand))  # wrong on lefts
    answers = pd.DataFrame(rows, columns=["image_id", "worker_id", "hand"])
    answers["answer"] = answers["hand"].map(_answer)
    issues = _issues(("i0", T0), ("i2", T0))
    rates = annotator_flag_rates(answers, issues)
    assert rates.loc["sloppy", "flag_rate"] == pytest.approx(2 / 8)
    assert rates["images"].tolist() == [8, 8, 8]

    probs = np.array([[0.9, 0.1] if h == "left" else [0.1, 0.9] for h in truth])
    stats = leading_hand_quality(answers, probs, images)
    assert stats.loc["sloppy", "annotator_quality"] < stats.loc["good", "annotator_quality"]


def test_a_reviewed_label_becomes_the_published_gesture_only_when_unambiguous():
    from tasks.publish.selection import reviewed_gestures

    images = pd.DataFrame({"image_id": ["a", "b", "c", "d"],
                           "gesture": ["like", "like", "like", "like"]})
    boxes = pd.DataFrame(
        [("a", "peace", "review"), ("a", "no_gesture", "review"),  # corrected: peace
         ("b", "peace", "review"), ("b", "fist", "review"),  # two gestures: ambiguous
         ("c", "peace", "median_edges"),  # the crowd's label: the assignment stays
         ("d", "like", "review")],  # confirmed
        columns=["image_id", "label", "method"])
    assert reviewed_gestures(images, boxes).tolist() == ["peace", "like", "like", "like"]
