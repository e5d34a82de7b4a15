"""Labels an audit flagged go back to people: the annotation stage's expert review queue.

``hagrid audit`` writes ``label_issues`` rows (``schemas.tables.LABEL_ISSUES``): labels of a
release that a trained model finds likely wrong. Each annotation stage run sends every
flagged image to expert review once, however many rows it has, even though the image was
decided long ago:

- an image is **due** when it has a flag newer than its latest accepted review answer and
  no review of it is open (a review task pushed after that answer, still unanswered). So a
  second flag that arrives while the review is out, or before its answer, sends nothing
  more, and a rerun sends nothing twice;
- the review task shows the image's current boxes, labels and leading hand as the
  starting point (``current_answers``) and what the audit suspects (``review_notes``);
- the reviewer's answer decides like any review answer (``tasks.crowd.queue``): a new
  ``boxes`` row with method ``review``, which the next release publishes as
  ``annotation_method = review``, and which a later audit leaves alone.

``annotator_flag_rates`` and ``leading_hand_quality`` turn flags back into annotator quality.
Everything here but the two readers (``load_flags``, ``current_answers``) is a pure function
over tables.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from schemas.annotation import LEADING_HANDS
from schemas.crowd import Queue, Stage
from tasks.annotate.boxes import Box, ParsedAnnotation, answer_json, parse_answer_json
from tasks.catalog import Catalog
from tasks.crowd.queue import PushRequest

ISSUE_COLUMNS = ["release", "image_id", "box_index", "head", "given_label", "suggested_label",
                 "quality", "flagged_at"]
ANSWERED_NOW = pd.Timestamp.max.tz_localize("UTC")  # a review answer pulled in this run


@dataclass(frozen=True)
class FlagState:
    """What the annotation stage needs to know about flags: the ``label_issues`` rows
    (``ISSUE_COLUMNS``) and, per image, when its latest accepted review answer was recorded."""

    issues: pd.DataFrame
    reviewed_at: pd.Series  # image_id -> recorded_at (UTC)

    @classmethod
    def empty(cls) -> FlagState:
        """No flags and no review answers."""
        return cls(pd.DataFrame(columns=ISSUE_COLUMNS),
                   pd.Series(dtype="datetime64[us, UTC]", name="recorded_at"))


def load_flags(catalog: Catalog) -> FlagState:
    """The flags of every audit, and the time of each image's latest accepted review answer
    in the annotation stage (only the few columns needed)."""
    issues = catalog.read_table("label_issues", columns=ISSUE_COLUMNS).to_pandas()
    reviews = catalog.read_table(
        "answers", columns=["image_id", "recorded_at"],
        filters=(pc.field("stage") == Stage.ANNOTATION.value)
        & (pc.field("queue") == Queue.REVIEW.value)
        & (pc.field("status") == "accepted")).to_pandas()
    return FlagState(issues, reviews.groupby("image_id")["recorded_at"].max())


def answered_reviews(reviewed_at: pd.Series, fresh: pd.DataFrame) -> pd.Series:
    """image_id -> time of its latest accepted review answer; ``ANSWERED_NOW`` for an image
    with an accepted review answer among ``fresh`` (screened rows not recorded yet)."""
    if fresh.empty:
        return reviewed_at
    new = fresh.loc[(fresh["queue"] == Queue.REVIEW.value) & (fresh["status"] == "accepted"),
                    "image_id"]
    now = pd.Series(ANSWERED_NOW, index=pd.Index(new.unique(), name="image_id"))
    return pd.concat([reviewed_at, now]).groupby(level=0).max()


def review_pushes(tasks: pd.DataFrame) -> pd.DataFrame:
    """Per image with review tasks: ``last_push`` (pushed_at) and ``n_tasks``."""
    review = tasks[tasks["queue"] == Queue.REVIEW.value]
    return review.groupby("image_id").agg(last_push=("pushed_at", "max"),
                                          n_tasks=("pushed_at", "size"))


def open_reviews(tasks: pd.DataFrame, answered: pd.Series) -> set[str]:
    """Images with a review task pushed after their latest accepted review answer."""
    pushes = review_pushes(tasks)
    last_answer = answered.reindex(pushes.index)
    waiting = last_answer.isna().to_numpy() | (pushes["last_push"] > last_answer).to_numpy()
    return set(pushes.index[waiting])


def due_label_reviews(issues: pd.DataFrame, tasks: pd.DataFrame, answered: pd.Series, *,
                      eligible: Collection[str]) -> list[str]:
    """Flagged images (of ``eligible``) to send to review now, sorted: a flag newer than the
    image's latest accepted review answer, and no review of it open."""
    if issues.empty:
        return []
    last_flag = issues.groupby("image_id")["flagged_at"].max()
    last_answer = answered.reindex(last_flag.index)
    newer = last_answer.isna().to_numpy() | (last_flag > last_answer).to_numpy()
    busy = open_reviews(tasks, answered)
    wanted = set(eligible)
    return sorted(i for i in last_flag.index[newer] if i in wanted and i not in busy)


def label_review_pushes(due: Iterable[str], tasks: pd.DataFrame) -> list[PushRequest]:
    """One review task per due image; its round follows the image's earlier review tasks, so
    a back end that keys tasks by image and round (Label Studio) makes a new one."""
    n_tasks = review_pushes(tasks)["n_tasks"].to_dict()
    return [PushRequest(i, Queue.REVIEW, int(n_tasks.get(i, 0)) + 1, 1, 0, False) for i in due]


def review_notes(issues: pd.DataFrame, image_ids: Collection[str]) -> dict[str, str]:
    """image_id -> what the audit suspects, one clause per flagged label, e.g.
    ``audit v1: box 0 gesture like -> peace (quality 0.031)``."""
    rows = issues[issues["image_id"].isin(set(image_ids))].sort_values(
        ["image_id", "flagged_at", "release", "head", "box_index"], kind="stable")
    rows = rows.drop_duplicates(["image_id", "release", "head", "box_index"], keep="last")
    notes: dict[str, list[str]] = {}
    for r in rows.itertuples(index=False):
        where = f"box {r.box_index} gesture" if r.head == "gesture" else "leading hand"
        notes.setdefault(str(r.image_id), []).append(
            f"audit {r.release}: {where} {r.given_label} -> {r.suggested_label} "
            f"(quality {float(r.quality):.3f})")
    return {i: "; ".join(parts) for i, parts in notes.items()}


def current_answers(catalog: Catalog, image_ids: Collection[str]) -> dict[str, str]:
    """image_id -> its current annotation (the latest ``boxes`` batch of the image) as a
    canonical answer, the starting point a reviewer corrects."""
    if not image_ids:
        return {}
    boxes = catalog.read_table("boxes", filters=pc.field("image_id").isin(
        sorted(image_ids))).to_pandas()
    return {str(i): answer_json(annotation) for i, annotation in latest_annotations(boxes).items()}


def latest_annotations(boxes: pd.DataFrame) -> dict[str, ParsedAnnotation]:
    """image_id -> the boxes and leading hand of its latest ``boxes`` batch."""
    last = (boxes.sort_values(["decided_at", "batch_id"], kind="stable")
            .drop_duplicates("image_id", keep="last")[["image_id", "batch_id"]])
    rows = boxes.merge(last, on=["image_id", "batch_id"]).sort_values(
        ["image_id", "box_index"], kind="stable")
    out = {}
    for image_id, group in rows.groupby("image_id", sort=True):
        hand = group["leading_hand"].iloc[0]
        out[str(image_id)] = ParsedAnnotation(
            tuple(Box(float(b.x), float(b.y), float(b.w), float(b.h), str(b.label))
                  for b in group.itertuples(index=False)),
            None if pd.isna(hand) else str(hand))
    return out


def flagged_review_decisions(decided: Iterable[tuple[str, str]], issues: pd.DataFrame) -> int:
    """How many of the (image_id, method) decisions written are review answers of flagged
    images (``label_reviews_decided`` of the stage report)."""
    flagged = set(issues["image_id"])
    return sum(1 for image_id, method in decided if method == "review" and image_id in flagged)


# ---- annotator quality from flags -------------------------------------------------------


def annotator_flag_rates(answers: pd.DataFrame, issues: pd.DataFrame) -> pd.DataFrame:
    """Per annotator, the share of the images they answered (accepted crowd answers of the
    annotation stage: ``image_id``, ``worker_id``) that an audit flagged.

    Columns ``images``, ``flagged``, ``flag_rate``; indexed by worker_id, worst first.
    """
    answered = answers[["image_id", "worker_id"]].drop_duplicates()
    flagged = answered["image_id"].isin(set(issues["image_id"]))
    table = answered.assign(flagged=flagged).groupby("worker_id").agg(
        images=("image_id", "size"), flagged=("flagged", "sum"))
    table["flag_rate"] = table["flagged"] / table["images"]
    return table.sort_values(["flag_rate", "images"], ascending=[False, False], kind="stable")


def leading_hand_matrix(answers: pd.DataFrame, image_ids: list[str], *,
                        hands: tuple[str, ...] = LEADING_HANDS) -> pd.DataFrame:
    """The leading hand each annotator chose per image, as cleanlab's
    ``labels_multiannotator``: rows ``image_ids``, a column per worker, the class index in
    ``hands`` (by default ``schemas.annotation.LEADING_HANDS``: 0 left, 1 right), NaN where
    the worker did not answer."""
    answered = answers.assign(hand=[parse_answer_json(str(a)).leading_hand
                                    for a in answers["answer"]])
    answered = answered[answered["hand"].isin(hands)]
    answered = answered.assign(code=answered["hand"].map({h: k for k, h in enumerate(hands)}))
    wide = answered.pivot_table(index="image_id", columns="worker_id", values="code",
                                aggfunc="first")
    return wide.reindex(image_ids).astype(float)


def leading_hand_quality(answers: pd.DataFrame, pred_probs: np.ndarray,
                         image_ids: list[str], *,
                         hands: tuple[str, ...] = LEADING_HANDS) -> pd.DataFrame:
    """Per annotator, cleanlab's multi-annotator quality of their leading-hand answers.

    ``answers``: accepted crowd answers of the annotation stage (``image_id``, ``worker_id``,
    ``answer``); ``pred_probs``: out-of-fold probabilities per image of ``image_ids`` (rows
    in that order), columns in ``hands`` order (default left, right; the trainer's head is
    ``schemas.train.LEADING_HANDS``: right, left). Images nobody answered are left out. Returns
    cleanlab's ``annotator_stats`` (``annotator_quality``, ``agreement_with_consensus``,
    ``worst_class``, ``num_examples_labeled``), indexed by worker_id.
    """
    from cleanlab.multiannotator import get_label_quality_multiannotator

    labels = leading_hand_matrix(answers, image_ids, hands=hands)
    answered = labels.notna().any(axis=1).to_numpy()
    labels = labels[answered]
    labels = labels.loc[:, labels.notna().any(axis=0)]
    result = get_label_quality_multiannotator(labels, np.asarray(pred_probs)[answered],
                                              consensus_method="best_quality", verbose=False)
    return result["annotator_stats"]
