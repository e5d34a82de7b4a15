"""The whole simulated pipeline on a generated batch: the release is true to its pictures.

generate, then the ``pipeline`` flow (ingest -> validate -> filter -> annotate with the
simulated crowd -> publish with the crops view -> one tiny training epoch), once per module. The published boxes must sit on the hands the generator drew, the leading hands must
match, validation and filtration must catch what the generator drew into the photos, and
the card and the report must say the data was simulated.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from flows.pipeline import STAGES, pipeline
from schemas.crowd import CrowdBackendOptions, Stage
from tasks.annotate.boxes import Box, iou
from tasks.catalog import Catalog
from tasks.crowd.stage import latest_verdicts
from tasks.simulation.crowd import GeneratorTruth
from tasks.simulation.generator import generate_batch
from tasks.storage import LocalStorage
from tests.prefect_api import flow_runs

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("pipeline")
    batch, root = base / "batch", base / "root"
    generate_batch(batch, n=110, seed=21, workers=2)
    common: dict[str, Any] = {"source": str(batch), "submissions": str(batch / "submissions.csv"),
              "root": str(root), "options": CrowdBackendOptions(kind="simulated"),
              "version": "v1", "crop_size": 32, "epochs": 1, "batch_size": 8,
              "input_size": 32, "train_workers": 0}
    summary = pipeline(**common, train_out=str(base / "run"))
    catalog = Catalog(LocalStorage(root))
    release = root / "releases" / "v1"
    manifest = pd.concat([pd.read_parquet(p) for p in sorted((release / "manifests").glob("*"))],
                         ignore_index=True)
    truth = [json.loads(line) for line in (batch / "truth.jsonl").read_text().splitlines()]
    return {"batch": batch, "root": root, "catalog": catalog, "release": release,
            "manifest": manifest, "summary": summary, "truth": truth, "common": common,
            "run": base / "run", "generator": GeneratorTruth.from_catalog(catalog)}


def test_the_pipeline_runs_every_stage_then_trains_on_the_crops_view(pipeline_run):
    summary, release = pipeline_run["summary"], pipeline_run["release"]
    assert set(STAGES) <= set(summary)
    assert summary["release"] == str(release)
    assert summary["ingest"]["accepted"] > 80
    assert summary["publish"]["images"] == len(pipeline_run["manifest"])
    assert sum(summary["publish"]["crops"].values()) >= summary["publish"]["images"]
    assert summary["train"]["view"] == "crops" and summary["train"]["epochs"] == 1
    assert json.loads((pipeline_run["run"] / "metrics.json").read_text())["view"] == "crops"
    runs = [r for r in flow_runs("pipeline")
            if r.parameters.get("root") == str(pipeline_run["root"])]
    assert "pipeline batch to v1" in {r.name for r in runs}  # what the UI lists


def test_the_pipeline_run_again_adds_nothing_and_publishes_nothing_then_audits(pipeline_run):
    again = pipeline(**pipeline_run["common"], train=False, audit=True, audit_folds=2,
                     audit_epochs=1)
    assert again["ingest"]["accepted"] == 0 and again["ingest"]["skipped_already_seen"] > 0
    assert again["publish"] == {"skipped": "exists", "version": "v1",
                                "uri": str(pipeline_run["release"])}
    assert again["train"] is None
    audit = again["audit"]
    assert audit["release"] == "v1" and audit["folds"] == 2
    assert audit["images"] == len(pipeline_run["manifest"])
    issues = pipeline_run["catalog"].read_table("label_issues")
    assert issues.num_rows == audit["rows_written"]
    assert set(issues["audit_id"].to_pylist()) <= {audit["audit_id"]}
    annotators = audit["annotators"]  # the simulated crowd's annotators, scored
    assert annotators["note"] is None and len(annotators["rows"]) >= 5
    assert all(r["images"] > 0 and 0 <= r["flag_rate"] <= 1
               and r["annotator_quality"] is not None for r in annotators["rows"])
    assert Path(annotators["csv"]).is_file()


def test_published_boxes_and_leading_hands_match_what_the_generator_drew(pipeline_run):
    manifest, generator = pipeline_run["manifest"], pipeline_run["generator"]
    assert len(manifest) > 40
    ious, hands = [], []
    for row in manifest.itertuples():
        true_boxes, true_hand = generator.boxes(row.image_id)
        gesture_box = true_boxes[0]
        assert gesture_box.label == row.gesture
        published = [Box(*b, label) for b, label in zip(row.boxes, row.labels, strict=True)
                     if label == row.gesture]
        ious.append(max((iou(gesture_box, b) for b in published), default=0.0))
        hands.append(row.leading_hand == true_hand)
    ious_s = pd.Series(ious)
    assert (ious_s >= 0.5).mean() >= 0.95, ious_s.describe()
    assert sum(hands) / len(hands) >= 0.95


def test_published_pixels_are_what_the_boxes_describe(pipeline_run):
    """Every published image decodes upright with a plain loader at the manifest's size."""
    release, manifest = pipeline_run["release"], pipeline_run["manifest"]
    for row in manifest.itertuples():
        with (release / row.shard).open("rb") as f:
            f.seek(row.offset)
            image = Image.open(io.BytesIO(f.read(row.size)))
            assert image.getexif().get(0x0112, 1) == 1
            assert image.convert("RGB").size == (row.width, row.height)


def test_validation_and_filtration_catch_what_was_drawn(pipeline_run):
    catalog, truth = pipeline_run["catalog"], pipeline_run["truth"]
    subs = catalog.read_table("submissions").to_pandas()
    image_of = dict(zip(subs["file"], subs["image_id"], strict=True))
    valid = latest_verdicts(catalog, Stage.VALIDATION)
    filt = latest_verdicts(catalog, Stage.FILTRATION)
    broken = [image_of[t["file"]] for t in truth if t["validation"] != "yes"
              and isinstance(image_of.get(t["file"]), str)]
    assert len(broken) >= 5  # the generator drew rule breaks into the photos
    rejected = [i for i in broken if valid.at[i, "verdict"] == "rejected"]
    assert len(rejected) / len(broken) >= 0.85
    flagged = [image_of[t["file"]] for t in truth if t["filtration"] != "none"
               and t["validation"] == "yes" and isinstance(image_of.get(t["file"]), str)]
    assert flagged
    excluded = [i for i in flagged if i in filt.index and filt.at[i, "verdict"] == "excluded"]
    assert len(excluded) / len(flagged) >= 0.85
    released = set(pipeline_run["manifest"]["image_id"])
    assert not released & set(rejected) and not released & set(excluded)


def test_the_card_and_the_report_say_the_data_was_simulated(pipeline_run):
    release = pipeline_run["release"]
    card = (release / "README.md").read_text()
    assert "photos are SIMULATED" in card and "Crowd answers were SIMULATED" in card
    info = json.loads((release / "release.json").read_text())
    photos = info["simulation"]["photos"]
    assert photos["simulated"] == photos["total"] == len(pipeline_run["manifest"])
    page = (release / "report" / "index.html").read_text()
    assert "SIMULATED" in page and "Samples per class" in page
    strips = sorted((release / "report").glob("samples-*.png"))
    assert {p.stem.removeprefix("samples-") for p in strips} == set(
        pipeline_run["manifest"]["gesture"])


# ---- HaGRID's own conventions: a reader written in the style of its loaders ----------------

def _hagrid_style_annotations(annotations: Path, targets: list[str]) -> pd.DataFrame:
    """As HaGRID's classifier/detector datasets read them: one ``<target>.json`` per class,
    keyed by image name without extension; the image is ``<dataset>/<target>/<name>.jpg``."""
    frames = []
    for target in targets:
        path = annotations / f"{target}.json"
        if path.exists():
            entries = json.loads(path.read_text())
            frame = pd.DataFrame([dict(a, name=f"{k}.jpg") for k, a in entries.items()])
            frames.append(frame.assign(target=target))
    return pd.concat(frames, ignore_index=True)


def test_hagrid_style_loaders_find_every_image_and_boxes_on_the_hands(pipeline_run, tmp_path):
    from schemas.taxonomy import load_taxonomy
    from tasks.publish.exports import export_layout

    out = tmp_path / "hagrid"
    export_layout(LocalStorage(pipeline_run["release"]), out)
    generator, targets = pipeline_run["generator"], list(load_taxonomy().gestures)
    splits = sorted(p.name for p in (out / "annotations").iterdir())
    assert splits == sorted(set(pipeline_run["manifest"]["split"]))
    seen, ious, hands = 0, [], []
    for split in splits:
        table = _hagrid_style_annotations(out / "annotations" / split, targets)
        for row in table.to_dict("records"):
            # the current detector reads these in every entry
            assert {"united_bbox", "united_label", "bboxes", "labels", "user_id"} <= set(row)
            image = Image.open(out / row["target"] / row["name"]).convert("RGB")
            width, height = image.size
            true_boxes, true_hand = generator.boxes(row["name"].removesuffix(".jpg"))
            hands.append(row["leading_hand"] == true_hand)
            for (x1, y1, w, h), label in zip(row["bboxes"], row["labels"], strict=True):
                box_abs = [x1 * width, y1 * height, (x1 + w) * width, (y1 + h) * height]
                got = Box.from_edges(box_abs[0] / width, box_abs[1] / height,
                                     box_abs[2] / width, box_abs[3] / height, label)
                same = [t for t in true_boxes if t.label == label] or true_boxes
                ious.append(max(iou(got, t) for t in same))
            seen += 1
    assert seen == len(pipeline_run["manifest"])
    assert (pd.Series(ious) >= 0.5).mean() >= 0.95
    assert sum(hands) / len(hands) >= 0.95
