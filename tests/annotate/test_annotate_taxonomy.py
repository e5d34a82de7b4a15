"""``annotate --taxonomy``: which box labels an annotator's answer may use."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.annotate import annotate
from flows.cli import app
from schemas.crowd import Stage, Verdict
from tasks.annotate.boxes import Box, to_labelstudio
from tasks.catalog import Catalog
from tasks.crowd.queue import Decision
from tasks.crowd.stage import verdict_table
from tasks.storage import LocalStorage
from tests.catalogs import make_catalog

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _pending_image(root: Path) -> str:
    """One validated, unflagged image, sent to the file back end's annotators."""
    [image_id] = make_catalog(root, n=1, seed=31)
    now = dt.datetime.now(dt.UTC)
    for stage, verdict in ((Stage.VALIDATION, Verdict.ACCEPTED), (Stage.FILTRATION,
                                                                   Verdict.CLEAR)):
        Catalog(LocalStorage(root)).write_batch(f"0000-pass-{stage.value}", {
            "verdicts": verdict_table(stage, [Decision(image_id, verdict, None, 1.0, 0, "test")],
                                      batch_id="pass", now=now)}, info={})
    annotate(root=str(root), crowd="file")
    return image_id


def _hand_heart_answers(path: Path, image_id: str) -> Path:
    """Three annotators draw one two-handed ``hand_heart`` box (a v2 label)."""
    heart = [Box(0.2, 0.3, 0.5, 0.4, "hand_heart")]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "worker_id", "answer"])
        for worker in ("a1", "a2", "a3"):
            writer.writerow([image_id, worker,
                             json.dumps(to_labelstudio(heart, "right", width=96, height=64))])
    return path


def _answers(root: Path) -> list[dict]:
    table = Catalog(LocalStorage(root)).read_table("answers")
    return [r for r in table.to_pylist() if r["stage"] == "annotation"]


def test_a_v2_label_is_accepted_with_taxonomy_hagrid_v2(tmp_path):
    root = tmp_path / "root"
    image_id = _pending_image(root)
    answers = _hand_heart_answers(tmp_path / "answers.csv", image_id)
    result = CliRunner().invoke(app, ["annotate", "--root", str(root), "--crowd", "file",
                                      "--answers", str(answers), "--taxonomy", "hagrid_v2",
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert {r["status"] for r in _answers(root)} == {"accepted"}
    boxes = Catalog(LocalStorage(root)).read_table("boxes").to_pylist()
    assert [(b["image_id"], b["label"], b["n_votes"]) for b in boxes] == [
        (image_id, "hand_heart", 3)]


def test_a_v2_label_is_still_unknown_under_hagrid_v1(tmp_path):
    from schemas.crowd import CrowdBackendOptions

    root = tmp_path / "root"
    image_id = _pending_image(root)
    answers = _hand_heart_answers(tmp_path / "answers.csv", image_id)
    annotate(root=str(root), crowd="file",
             options=CrowdBackendOptions(kind="file", answers=(str(answers),)))
    rows = _answers(root)
    assert len(rows) == 3 and {r["status"] for r in rows} == {"rejected"}
    assert all("unknown_label" in r["detail"] for r in rows)
    assert Catalog(LocalStorage(root)).read_table("boxes").num_rows == 0


def test_an_unknown_taxonomy_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["annotate", "--root", str(tmp_path / "root"), "--crowd",
                                      "file", "--taxonomy", "hagrid_v9"])
    assert result.exit_code == 2 and "unknown taxonomy" in result.output


def test_the_crowd_back_ends_get_the_taxonomy_s_box_labels(tmp_path):
    from annotation_ui.labelstudio_crowd import LabelStudioCrowd
    from flows.crowd import make_backend
    from schemas.crowd import CrowdBackendOptions, CrowdSettings, Queue
    from tasks.crowd.backends import CrowdTask
    from tasks.simulation.crowd import SimulatedCrowd

    catalog = Catalog(LocalStorage(tmp_path / "root"))
    v2 = make_backend(CrowdBackendOptions(kind="simulated"), catalog, settings=CrowdSettings(),
                      taxonomy="hagrid_v2")
    v1 = make_backend(CrowdBackendOptions(kind="simulated"), catalog, settings=CrowdSettings())
    assert isinstance(v2, SimulatedCrowd) and isinstance(v1, SimulatedCrowd)
    assert "hand_heart" in v2.labels and "hand_heart" not in v1.labels
    # the Label Studio back end's annotation tasks carry the taxonomy's box labels
    task = CrowdTask("i", Queue.CROWD, 1, 3, 0, False, "objects/a.jpg", "like")
    for taxonomy, has_heart in (("hagrid_v2", True), (None, False)):
        ls = make_backend(CrowdBackendOptions(kind="labelstudio", ls_url="http://127.0.0.1:9",
                                              ls_token="t", ls_document_root=str(tmp_path)),
                          catalog, settings=CrowdSettings(), taxonomy=taxonomy)
        assert isinstance(ls, LabelStudioCrowd)
        payload = ls.task_payload(Stage.ANNOTATION, task)
        labels = [option["value"] for option in payload["data"]["labels"]]
        assert ("hand_heart" in labels) is has_heart and "no_gesture" in labels
