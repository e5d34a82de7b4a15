"""The ``pipeline`` flow: every stage on a generated batch, ending with a trained baseline;
run again, it publishes nothing new and trains on the release that exists."""

from __future__ import annotations

import json

import pytest

from flows.pipeline import STAGES, crowd_cycles, pipeline
from schemas.crowd import CrowdBackendOptions

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_pipeline_runs_every_stage_then_trains_on_the_crops_view(crowd_batch, tmp_path):
    root = tmp_path / "root"
    options = CrowdBackendOptions(kind="simulated", sim_seed=3)
    common = {"source": str(crowd_batch), "submissions": str(crowd_batch / "submissions.csv"),
              "root": str(root), "options": options, "version": "v1", "fractions": "60/40",
              "crop_size": 32, "epochs": 1, "batch_size": 8, "input_size": 32,
              "train_workers": 0}
    summary = pipeline(**common, train_out=str(tmp_path / "run"))
    assert set(STAGES) <= set(summary)
    release = root / "releases" / "v1"
    assert summary["release"] == str(release)
    assert summary["ingest"]["accepted"] > 30
    assert summary["publish"]["images"] > 10 and sum(summary["publish"]["crops"].values()) >= (
        summary["publish"]["images"])
    assert summary["train"]["view"] == "crops" and summary["train"]["epochs"] == 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["view"] == "crops"

    again = pipeline(**common, train=False)
    assert again["ingest"]["accepted"] == 0 and again["ingest"]["skipped_already_seen"] > 0
    assert again["publish"] == {"skipped": "exists", "version": "v1", "uri": str(release)}
    assert again["train"] is None


def test_crowd_cycles_default_to_settling_a_simulated_crowd():
    assert crowd_cycles("simulated", None) == 20
    assert crowd_cycles("labelstudio", None) == 1
    assert crowd_cycles("file", 3) == 3
