"""The validate and filter flows with the simulated crowd and the file back end."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.crowd import filter_stage, reaggregate, validate
from schemas.crowd import CrowdBackendOptions, CrowdSettings, Stage
from tasks.catalog import Catalog
from tasks.crowd.stage import latest_verdicts
from tasks.simulation.crowd import GeneratorTruth
from tasks.storage import LocalStorage
from tests.catalogs import make_catalog
from tests.prefect_api import flow_runs

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _table(root: Path, name: str) -> pd.DataFrame:
    return Catalog(LocalStorage(root)).read_table(name).to_pandas()


def _expected(root: Path, stage: Stage, image_id: str) -> str:
    answer = GeneratorTruth.from_catalog(Catalog(LocalStorage(root))).answer(stage, image_id)
    if stage is Stage.VALIDATION:
        return "accepted" if answer == "yes" else "rejected"
    return "clear" if answer == "none" else "excluded"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> tuple[Path, list[str], dict, dict]:
    root = tmp_path_factory.mktemp("sim") / "root"
    ids = make_catalog(root, n=150, seed=1)
    v = validate(root=str(root), crowd="simulated", cycles=20)
    f = filter_stage(root=str(root), crowd="simulated", cycles=20)
    return root, ids, v, f


def test_a_simulated_campaign_settles_close_to_the_truth(simulated):
    root, ids, v, f = simulated
    golden = set(_table(root, "golden")["image_id"])
    valid = latest_verdicts(Catalog(LocalStorage(root)), Stage.VALIDATION)
    assert set(valid.index) == set(ids)  # every image decided, none lost
    crowd = [i for i in ids if i not in golden]
    right = sum(valid.at[i, "verdict"] == _expected(root, Stage.VALIDATION, i) for i in crowd)
    assert right / len(crowd) >= 0.93
    assert "sim-019" in v["discounted_workers"]  # the always-yes worker
    assert len(v["discounted_workers"]) >= 4  # most of the 6 spammers
    assert {w["worker_id"]: w["discount_reason"] for w in v["workers"]}["sim-019"] == \
        "accuracy below 0.70"
    for flow_name, stage_run in (("validate", "validate root"), ("filter", "filter root")):
        names = {r.name for r in flow_runs(flow_name) if r.parameters.get("root") == str(root)}
        assert names == {stage_run}
    # filtration decided exactly the images validation accepted
    accepted = set(valid.index[valid["verdict"] == "accepted"])
    filt = latest_verdicts(Catalog(LocalStorage(root)), Stage.FILTRATION)
    assert set(filt.index) == accepted
    flagged = [i for i in accepted - golden if _expected(root, Stage.FILTRATION, i) == "excluded"]
    caught = sum(filt.at[i, "verdict"] == "excluded" for i in flagged)
    assert flagged and caught / len(flagged) >= 0.9  # errs toward exclusion
    assert set(f["verdicts"]) <= {"clear", "excluded"}


def test_rerunning_a_settled_stage_asks_and_writes_nothing(simulated):
    root, _, _, _ = simulated
    before = {t: len(_table(root, t)) for t in ("answers", "verdicts", "stage_tasks")}
    report = validate(root=str(root), crowd="simulated", cycles=3)
    assert (report["pushed"], report["answers_pulled"]) == (0, 0)
    assert {t: len(_table(root, t)) for t in before} == before


def test_aggregation_reruns_with_another_method_without_new_answers(simulated):
    root, _, _, _ = simulated
    answers = len(_table(root, "answers"))
    result = reaggregate(str(root), Stage.VALIDATION, settings=CrowdSettings(method="mv"))
    assert result["changed"] > 0
    valid = latest_verdicts(Catalog(LocalStorage(root)), Stage.VALIDATION)
    methods = valid["method"].value_counts()
    assert set(methods.index) <= {"mv", "ds", "golden", "review"} and methods["mv"] > 0
    assert methods.get("ds", 0) == result["undecided"]  # mv not confident there: kept
    assert len(_table(root, "answers")) == answers
    assert reaggregate(str(root), Stage.VALIDATION,
                       settings=CrowdSettings(method="mv"))["changed"] == 0


def test_file_backend_exports_tasks_and_imports_answer_tables(tmp_path):
    root = tmp_path / "root"
    ids = make_catalog(root, n=4, seed=2)
    report = validate(root=str(root), crowd="file")
    assert report["pushed"] == 4
    [outbox] = (root / "crowd" / "validation" / "outbox").glob("*.csv")
    rows = list(csv.DictReader(outbox.open()))
    assert sorted(r["image_id"] for r in rows) == sorted(ids)
    assert "is_golden" not in rows[0] and rows[0]["image_uri"].endswith(".jpg")

    answers = tmp_path / "answers.csv"
    with answers.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "worker_id", "answer", "reason", "time"])
        for worker in ("w1", "w2", "w3"):
            w.writerow([ids[0], worker, "yes", "", "2026-11-01T10:00:00"])
            w.writerow([ids[1], worker, "no", "wrong_gesture", "2026-11-01T10:00:00"])
            w.writerow([ids[2], worker, "yes", "", ""])
        w.writerow([ids[3], "w1", "perhaps", "", ""])  # unknown choice
        w.writerow([ids[3], "", "yes", "", ""])  # no worker
        w.writerow(["not-an-image", "w1", "yes", "", ""])  # unknown image
        w.writerow([ids[0], "w1", "no", "other", ""])  # w1 again on the same image
    opts = CrowdBackendOptions(kind="file", answers=(str(answers),))
    report = validate(root=str(root), crowd="file", options=opts, method="mv")
    assert report["answers_pulled"] == 13
    assert report["answers_rejected"] == {"duplicate_answer": 1, "missing_field": 1,
                                          "unknown_choice": 1, "unknown_image": 1}
    stored = _table(root, "answers")
    assert len(stored) == 13 and stored["raw"].str.len().min() > 2
    valid = latest_verdicts(Catalog(LocalStorage(root)), Stage.VALIDATION)
    assert valid.loc[ids[:3], "verdict"].tolist() == ["accepted", "rejected", "accepted"]
    assert valid.at[ids[1], "reason"] == "wrong_gesture"
    assert ids[3] not in valid.index  # still waiting for answers
    again = validate(root=str(root), crowd="file", options=opts, method="mv")
    assert again["answers_pulled"] == 0 and len(_table(root, "answers")) == 13


def test_cli_reports_a_missing_label_studio_server_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    root = tmp_path / "root"
    make_catalog(root, n=2, seed=3)
    result = CliRunner().invoke(app, ["validate", "--root", str(root), "--crowd", "labelstudio"])
    assert result.exit_code == 2
    assert "Label Studio needs --ls-url" in result.output
