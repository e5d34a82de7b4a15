"""``hagrid audit``: folds keep a person's images together and balance; every split of a
release is read in both views; cleanlab's verdicts are mapped back past absent classes; the
release's rules (reviewed, once per image, lowest quality) hold; and on a tiny separable
release with planted label swaps the flow flags the swaps, writes ``LABEL_ISSUES`` rows, and
a second audit of the same release writes none."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from schemas.release import MANIFEST
from schemas.tables import LABEL_ISSUES
from tasks.audit.annotators import annotator_scores
from tasks.audit.folds import user_folds
from tasks.audit.issues import Flags, issue_table, judge_labels, select_flags
from tasks.audit.release import read_release_hands, subset_hands
from tasks.catalog import Catalog
from tasks.publish.writer import parquet_bytes
from tasks.storage import open_storage
from tests.train.releases import make_release, seal, write_file

torch.set_num_threads(1)

SWAP = {"call": "fist", "fist": "dislike", "dislike": "four", "four": "call"}
TINY = ["--folds", "3", "--epochs", "30", "--input-size", "32", "--device", "cpu"]


def test_folds_keep_a_person_together_and_balance():
    rng = np.random.default_rng(1)
    users = [f"u{i}" for i in rng.integers(0, 40, size=600)]
    folds = user_folds(users, k=5, seed=3)
    assert folds.k == 5 and not folds.lowered
    for user in set(users):
        assert len({int(f) for u, f in zip(users, folds.fold, strict=True) if u == user}) == 1
    sizes = folds.sizes()
    assert sum(sizes) == 600 and max(sizes) - min(sizes) <= max(np.unique(
        users, return_counts=True)[1])
    assert np.array_equal(user_folds(users, k=5, seed=3).fold, folds.fold)  # reproducible


def test_folds_are_lowered_to_the_number_of_people():
    folds = user_folds(["a", "b", "a", "a"], k=5)
    assert (folds.k, folds.requested, folds.lowered) == (2, 5, True)
    assert folds.sizes() == [3, 1]
    with pytest.raises(ValueError):
        user_folds(["a", "b"], k=1)


@pytest.fixture(scope="module")
def clean_release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean") / "releases" / "v1"
    return make_release(folder, splits={"train": 12, "val": 4, "test": 6}, seed=2, crops=True)


def test_every_split_is_read_in_both_views_with_the_same_rows(clean_release):
    full = read_release_hands(str(clean_release), view="full")
    crops = read_release_hands(str(clean_release), view="crops")
    assert full.splits == crops.splits == ("test", "train", "val")
    assert full.hands.n_images == 22 and crops.view == "crops"
    for field in ("image_ids", "user_ids", "methods", "box_index"):
        assert np.array_equal(getattr(full, field), getattr(crops, field))
    assert np.array_equal(full.hands.label, crops.hands.label)
    assert np.array_equal(full.hands.hand, crops.hands.hand)
    frames = pa.concat_tables(pq.read_table(clean_release / f"manifests/{s}.parquet")
                              for s in full.splits).to_pylist()
    labels = {r["image_id"]: r["labels"] for r in frames}
    named = [labels[i][b] for i, b in zip(full.row_image_ids(), full.box_index, strict=True)]
    assert named == [full.classes[c] for c in full.hands.label]


def test_a_subset_of_images_is_renumbered(clean_release):
    hands = read_release_hands(str(clean_release), view="full").hands
    sub = subset_hands(hands, np.array([5, 2]))
    rows = np.isin(hands.image, [2, 5])
    assert sub.n_images == 2 and np.array_equal(sub.image, (hands.image[rows] == 5).astype(int))
    assert np.array_equal(sub.offset, hands.offset[rows])


def test_cleanlab_sees_only_the_given_classes_and_indices_map_back():
    labels = np.array([1, 1, 1, 1, 3, 3, 3, 3, 4, 4, 4, 4])  # classes 0 and 2 never given
    probs = np.full((12, 5), 0.02)
    probs[np.arange(12), labels] = 0.9
    probs[2] = [0.02, 0.02, 0.02, 0.9, 0.04]  # given 1, looks like 3
    probs[7] = [0.02, 0.3, 0.6, 0.04, 0.04]  # given 3; 2 (never given), else 1
    verdict = judge_labels(labels, probs)
    assert verdict.flagged.nonzero()[0].tolist() == [2, 7]
    assert verdict.suggested[[2, 7]].tolist() == [3, 2]
    assert verdict.quality[2] < 0.1 < verdict.quality[0]
    one = judge_labels(np.zeros(3, dtype=np.int64), probs[:3])  # one class: nothing to say
    assert not one.flagged.any()


def _flags(rows, heads, quality):
    n = len(rows)
    return Flags(row=np.array(rows), head=np.array(heads, dtype=object),
                 given=np.array(["call"] * n, dtype=object),
                 suggested=np.array(["fist"] * n, dtype=object), quality=np.array(quality))


def test_rules_reviewed_once_per_image_lowest_quality():
    row_image_ids = np.array(["a", "a", "b", "c", "d"], dtype=object)
    flags = _flags([0, 1, 1, 2, 3, 4], ["gesture", "gesture", "leading_hand", "gesture",
                                        "gesture", "leading_hand"],
                   [0.3, 0.2, 0.1, 0.05, 0.4, 0.01])
    chosen = select_flags(flags, row_image_ids=row_image_ids, reviewed={"b"},
                          already_flagged={"d"})
    assert row_image_ids[chosen.flags.row].tolist() == ["a", "c"]  # worst first
    assert chosen.flags.quality.tolist() == [0.1, 0.4]
    assert chosen.flags.head.tolist() == ["leading_hand", "gesture"]
    assert (chosen.skipped_reviewed, chosen.skipped_already_flagged) == (1, 1)
    table = issue_table(chosen.flags, release="v1", row_image_ids=row_image_ids,
                        box_index=np.array([0, 1, 0, 0, 1]), audit_id="audit-x",
                        flagged_at=dt.datetime.now(dt.UTC))
    assert table.schema.equals(LABEL_ISSUES) and table["box_index"].to_pylist() == [1, 0]
    sure = select_flags(flags, row_image_ids=row_image_ids, reviewed={"b"},
                        already_flagged={"d"}, max_quality=0.25)
    assert row_image_ids[sure.flags.row].tolist() == ["a"]  # c's only flag is 0.4
    assert sure.flags.quality.tolist() == [0.1] and sure.skipped_quality == 2


def _plant_swaps(release: Path) -> tuple[dict[str, str], str]:
    """Swap the gesture label of every 8th training image and mark one of them reviewed;
    ``({image_id: true label}, reviewed image_id)``."""
    rows = pq.read_table(release / "manifests/train.parquet").to_pylist()
    truth = {}
    for r in rows[::8]:
        truth[r["image_id"]] = r["gesture"]
        r["gesture"] = SWAP[r["gesture"]]
        r["labels"] = [r["gesture"], *r["labels"][1:]]
    reviewed = rows[8]["image_id"]
    rows[8]["annotation_method"] = "review"
    write_file(release, "manifests/train.parquet",
               parquet_bytes(pa.Table.from_pylist(rows, schema=MANIFEST)))
    seal(release)
    return truth, reviewed


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    release = make_release(root / "releases" / "v1", splits={"train": 64, "test": 32}, seed=3)
    truth, reviewed = _plant_swaps(release)
    return root, release, truth, reviewed


def _audit(release: Path, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["audit", "--release", str(release), *TINY, "--json",
                                      *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


@pytest.mark.usefixtures("prefect_harness")
def test_planted_swaps_are_flagged_once(planted):
    root, release, truth, reviewed = planted
    summary = _audit(release)
    assert (summary["images"], summary["folds"]) == (96, 3)
    issues = Catalog(open_storage(str(root))).read_table("label_issues")
    assert issues.schema.equals(LABEL_ISSUES) and issues.num_rows == summary["rows_written"]
    gesture = {r["image_id"]: r for r in issues.to_pylist() if r["head"] == "gesture"}
    caught = [i for i in truth if i in gesture and gesture[i]["suggested_label"] == truth[i]]
    assert len(caught) >= len(truth) - 2 and reviewed not in gesture  # 7 planted, 1 reviewed
    assert summary["skipped_reviewed"] >= 1
    assert len(set(gesture) - set(truth)) <= 2  # few false flags
    assert len(issues["image_id"].unique()) == issues.num_rows  # one row per image
    assert set(issues["audit_id"].to_pylist()) == {summary["audit_id"]}
    csv = Path(summary["issues_csv"])
    assert csv.parent.parent == root / "audits" and len(csv.read_text().splitlines()) == \
        issues.num_rows + 1
    assert any(csv.parent.glob("gesture-*.png"))  # a strip of flagged crops per label

    again = _audit(release, "--root", str(root))
    assert again["rows_written"] == 0
    assert again["skipped_already_flagged"] >= issues.num_rows - 1
    assert Catalog(open_storage(str(root))).read_table("label_issues").num_rows == \
        issues.num_rows


def test_a_bad_release_or_no_root_exits_2(planted, tmp_path):
    result = CliRunner().invoke(app, ["audit", "--release", str(tmp_path), "--root",
                                      str(tmp_path), *TINY])
    assert result.exit_code == 2 and "no SHA256SUMS" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["audit", "--release", str(tmp_path), *TINY])
    assert result.exit_code == 2 and "--root" in result.output
    result = CliRunner().invoke(app, ["audit", "--release", str(planted[1]), "--folds", "1"])
    assert result.exit_code == 2 and "at least 2" in result.output


def test_annotator_scores_read_the_trainers_hand_order_and_rank_the_sloppy_worker_last():
    images = [f"i{k}" for k in range(8)]
    truth = ["left", "right"] * 4
    rows = []
    for k, (image, hand) in enumerate(zip(images, truth, strict=True)):
        for worker, answer in (("good", hand), ("also_good", hand),
                               ("sloppy", "right" if k % 2 == 0 else hand)):
            rows.append((image, worker, json.dumps(
                {"bboxes": [[0.1, 0.1, 0.2, 0.2]], "labels": ["like"], "leading_hand": answer})))
    rows.append(("i8", "sloppy", rows[-1][2]))  # an image only the sloppy worker answered
    images, truth = [*images, "i8"], [*truth, "right"]
    answers = pd.DataFrame(rows, columns=["image_id", "worker_id", "answer"])
    # the trainer's head: schemas.train.LEADING_HANDS = (right, left)
    probs = np.array([[0.1, 0.9] if h == "left" else [0.9, 0.1] for h in truth])
    issues = pd.DataFrame({"image_id": ["i0", "i2", "i8"]})
    table, note = annotator_scores(answers, issues, images, probs)
    assert note is None
    assert table.index[0] == "sloppy" and table.loc["sloppy", "flag_rate"] == 3 / 9
    assert table.loc["good", "flag_rate"] == table.loc["also_good", "flag_rate"] == 2 / 8
    assert (table.loc["sloppy", "annotator_quality"]
            < min(table.loc["good", "annotator_quality"],
                  table.loc["also_good", "annotator_quality"]))
    empty, why = annotator_scores(answers.iloc[:0], issues, images, probs)
    assert empty.empty and "no accepted crowd answers" in str(why)
