"""The annotate flow with simulated annotators and with answer files."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from flows.annotate import annotate
from flows.crowd import filter_stage, validate
from schemas.crowd import CrowdBackendOptions, Stage
from schemas.tables import PREANNOTATIONS
from tasks.annotate.boxes import Box, iou, to_labelstudio
from tasks.annotate.consensus import median_edges  # noqa: F401 - the aggregate the flow uses
from tasks.catalog import Catalog
from tasks.crowd.queue import Decision
from tasks.crowd.stage import latest_verdicts, verdict_table
from tasks.simulation.crowd import GeneratorTruth
from tasks.storage import LocalStorage
from tests.catalogs import make_catalog

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _catalog(root: Path) -> Catalog:
    return Catalog(LocalStorage(root))


def pass_stages(root: Path, ids: list[str]) -> None:
    """Mark images as validated and not flagged, as the earlier stages would."""
    now = dt.datetime.now(dt.UTC)
    for stage, verdict in ((Stage.VALIDATION, "accepted"), (Stage.FILTRATION, "clear")):
        from schemas.crowd import Verdict

        decisions = [Decision(i, Verdict(verdict), None, 1.0, 0, "test") for i in ids]
        _catalog(root).write_batch(f"0000-pass-{stage.value}", {
            "verdicts": verdict_table(stage, decisions, batch_id="pass", now=now)}, info={})


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("annot") / "root"
    ids = make_catalog(root, n=80, seed=4)
    validate(root=str(root), crowd="simulated", cycles=20)
    filter_stage(root=str(root), crowd="simulated", cycles=20)
    report = annotate(root=str(root), crowd="simulated", cycles=20)
    return root, ids, report


def test_only_validated_unflagged_images_are_annotated(simulated):
    root, _, report = simulated
    cat = _catalog(root)
    valid = latest_verdicts(cat, Stage.VALIDATION)
    clear = latest_verdicts(cat, Stage.FILTRATION)
    passing = set(valid.index[valid["verdict"] == "accepted"]) & set(
        clear.index[clear["verdict"] == "clear"])
    boxes = cat.read_table("boxes").to_pandas()
    assert set(boxes["image_id"]) == passing
    assert set(latest_verdicts(cat, Stage.ANNOTATION).index) == passing
    assert report["verdicts"] == {"annotated": len(passing)}
    assert sum(report["agreement"].values()) == len(passing)


def test_aggregated_boxes_match_the_planted_hands(simulated):
    root, _, _ = simulated
    boxes = _catalog(root).read_table("boxes").to_pandas()
    gestures = _catalog(root).read_table("images").to_pandas().set_index("image_id")["gesture"]
    truth_of = GeneratorTruth.from_catalog(_catalog(root))
    ious, hands_right, images = [], 0, 0
    for image_id, got in boxes.groupby("image_id"):
        truth, hand = truth_of.boxes(str(image_id))
        assert truth[0].label == gestures[image_id]
        images += 1
        hands_right += got["leading_hand"].iloc[0] == hand
        assert got["leading_conf"].between(0, 1).all()
        for t in truth:
            best = max(iou(t, Box(r.x, r.y, r.w, r.h, r.label)) for r in got.itertuples())
            ious.append(best)
        assert ((got["x"] >= 0) & (got["x"] + got["w"] <= 1 + 1e-9) & (got["w"] > 0)).all()
    assert sum(ious) / len(ious) >= 0.75
    assert hands_right / images >= 0.85


def test_rerunning_annotate_asks_nothing(simulated):
    root, _, _ = simulated
    report = annotate(root=str(root), crowd="simulated", cycles=3)
    assert (report["pushed"], report["answers_pulled"]) == (0, 0)


def test_answer_files_with_bad_annotations_and_preannotations(tmp_path):
    root = tmp_path / "root"
    ids = make_catalog(root, n=2, seed=6)
    pass_stages(root, ids)
    pre = json.dumps({"bboxes": [[0.1, 0.1, 0.2, 0.3]], "labels": ["like"],
                      "leading_hand": "right"})
    _catalog(root).write_batch("0001-pre", {"preannotations": pa.Table.from_pylist(
        [{"image_id": ids[0], "answer": pre, "source": "test", "batch_id": "pre",
          "added_at": dt.datetime.now(dt.UTC)}], schema=PREANNOTATIONS)}, info={})
    annotate(root=str(root), crowd="file")
    [outbox] = (root / "crowd" / "annotation" / "outbox").glob("*.csv")
    exported = {r["image_id"]: r for r in csv.DictReader(outbox.open())}
    assert json.loads(exported[ids[0]]["preannotation"])["labels"] == ["like"]
    assert exported[ids[1]]["preannotation"] == ""

    good = [Box(0.1, 0.1, 0.2, 0.3, "like"), Box(0.6, 0.5, 0.1, 0.2, "no_gesture")]
    rows = []
    for n, worker in enumerate(("a1", "a2", "a3")):
        shifted = [Box(b.x + 0.002 * n, b.y, b.w, b.h, b.label) for b in good]
        rows.append([ids[0], worker, json.dumps(to_labelstudio(shifted, "right", width=96,
                                                                height=64))])
    rows.append([ids[1], "a1", json.dumps({"bboxes": [[0.1, 0.1, 0.2, 0.2]], "labels": ["hug"],
                                           "leading_hand": "left"})])  # unknown label only
    rows.append([ids[1], "a2", json.dumps({"bboxes": [[2.5, 2.5, 0.2, 0.2]], "labels": ["like"],
                                           "leading_hand": "left"})])  # far outside only
    rows.append([ids[1], "a3", "{not json"])
    answers = tmp_path / "answers.csv"
    with answers.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "worker_id", "answer"])
        w.writerows(rows)
    opts = CrowdBackendOptions(kind="file", answers=(str(answers),))
    report = annotate(root=str(root), crowd="file", options=opts)
    assert report["answers_pulled"] == 6
    assert sum(report["answers_rejected"].values()) == 3
    assert "unreadable" in report["answers_rejected"]
    boxes = _catalog(root).read_table("boxes").to_pandas().sort_values("box_index")
    assert boxes["image_id"].unique().tolist() == [ids[0]]
    assert boxes["label"].tolist() == ["like", "no_gesture"]
    assert boxes.iloc[0][["x", "y", "w", "h"]].tolist() == pytest.approx([0.102, 0.1, 0.2, 0.3])
    assert (boxes["leading_hand"] == "right").all() and (boxes["leading_conf"] == 1.0).all()
    assert report["queue"].get("requeued") == 1  # ids[1]: no usable answer, asked again
