"""Annotator quality from an audit: how often each crowd annotator's images were flagged,
and cleanlab's multi-annotator quality of their leading-hand answers against the audit's
out-of-fold probabilities (``tasks.annotate.label_review``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from schemas.crowd import Queue, Stage
from schemas.train import LEADING_HANDS
from tasks.annotate.label_review import annotator_flag_rates, leading_hand_quality
from tasks.audit.release import ReleaseHands
from tasks.catalog import Catalog

ANNOTATORS_CSV = "annotators.csv"
QUALITY_COLUMNS = ["annotator_quality", "agreement_with_consensus"]


def crowd_answers(catalog: Catalog, image_ids: set[str]) -> pd.DataFrame:
    """The accepted crowd answers of the annotation stage on ``image_ids`` (``image_id``,
    ``worker_id``, ``answer``); experts' review answers are left out."""
    wanted = ((pc.field("stage") == Stage.ANNOTATION.value)
              & (pc.field("status") == "accepted") & (pc.field("queue") == Queue.CROWD.value))
    answers = catalog.read_table("answers", columns=["image_id", "worker_id", "answer"],
                                 filters=wanted).to_pandas()
    return answers[answers["image_id"].isin(image_ids)].reset_index(drop=True)


def image_hand_probs(data: ReleaseHands, hand: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Per image with a gesture hand, the mean out-of-fold leading-hand probabilities of its
    gesture-hand rows (columns in ``schemas.train.LEADING_HANDS`` order)."""
    rows = np.flatnonzero(data.hands.gesture_hand)
    images = data.hands.image[rows]
    order = np.unique(images)
    sums = np.zeros((len(order), hand.shape[1]))
    counts = np.zeros(len(order))
    where = np.searchsorted(order, images)
    np.add.at(sums, where, hand[rows])
    np.add.at(counts, where, 1)
    return [str(i) for i in data.image_ids[order]], sums / counts[:, None]


def annotator_scores(answers: pd.DataFrame, issues: pd.DataFrame, image_ids: list[str],
                     hand_probs: np.ndarray) -> tuple[pd.DataFrame, str | None]:
    """Per crowd annotator: ``images``, ``flagged``, ``flag_rate`` (``issues``: the
    release's ``label_issues`` rows) and cleanlab's ``annotator_quality`` and
    ``agreement_with_consensus`` of their leading-hand answers, worst flag rate first.

    The second value says why the cleanlab columns are empty, when they are (for example
    a single annotator, or no leading-hand answers); None otherwise.
    """
    columns = ["images", "flagged", "flag_rate", *QUALITY_COLUMNS]
    if answers.empty:
        return pd.DataFrame(columns=columns), "no accepted crowd answers on these images"
    rates = annotator_flag_rates(answers, issues)
    reason: str | None = None
    try:
        stats = leading_hand_quality(answers, hand_probs, image_ids, hands=LEADING_HANDS)
        quality = stats[QUALITY_COLUMNS]
    except (ValueError, IndexError, KeyError) as exc:  # cleanlab refuses degenerate input
        reason = f"cleanlab's multi-annotator scores could not be computed: {exc}"
        quality = pd.DataFrame(columns=QUALITY_COLUMNS, dtype=float)
    table = rates.join(quality, how="left")
    table.index.name = "worker_id"
    return table[columns], reason
