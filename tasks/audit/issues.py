"""Which labels to flag: cleanlab over out-of-fold probabilities, one head at a time, then
the release's rules (a reviewer's decision is final; an image is flagged at most once).

Plain functions over arrays, no I/O: the flow reads the release and the catalog and writes
what ``issue_table`` returns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from schemas.crowd import Queue
from schemas.tables import LABEL_ISSUES
from schemas.train import HEADS, LEADING_HANDS
from tasks.train.hands import Hands

REVIEWED = Queue.REVIEW.value  # the annotation_method of a reviewer's decision: final


@dataclass(frozen=True)
class HeadVerdict:
    """cleanlab's view of one head's labels, one value per row."""

    flagged: np.ndarray  # bool: the given label is likely wrong
    quality: np.ndarray  # float64: label quality score, 0 worst, 1 best
    suggested: np.ndarray  # int64: the most likely class


def judge_labels(labels: np.ndarray, pred_probs: np.ndarray) -> HeadVerdict:
    """cleanlab's ``find_label_issues`` (a mask) and ``get_label_quality_scores`` over the
    classes given as a label at least once: the other columns are dropped and each row
    renormalised (cleanlab needs every class to have labels), the indices mapped back.
    With fewer than two such classes nothing is flagged. ``suggested`` is the argmax over
    all the columns."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(pred_probs, dtype=np.float64)
    suggested = probs.argmax(axis=1).astype(np.int64) if len(probs) else \
        np.zeros(0, dtype=np.int64)
    present = np.unique(labels)
    if len(present) < 2:
        return HeadVerdict(flagged=np.zeros(len(labels), dtype=bool),
                           quality=np.ones(len(labels)), suggested=suggested)
    kept = probs[:, present] + 1e-12
    kept /= kept.sum(axis=1, keepdims=True)
    given = np.searchsorted(present, labels)
    # n_jobs=1: cleanlab's default forks a pool, which can hang in a process with threads
    # (a Prefect flow run); the result does not depend on it
    flagged = np.asarray(find_label_issues(given, kept, n_jobs=1), dtype=bool)
    quality = np.asarray(get_label_quality_scores(given, kept), dtype=np.float64)
    return HeadVerdict(flagged=flagged, quality=quality, suggested=suggested)


@dataclass(frozen=True)
class Flags:
    """Flagged labels, one per entry, ranked by quality (worst first)."""

    row: np.ndarray  # int64: the row of the release's hands (the box)
    head: np.ndarray  # str: gesture | leading_hand
    given: np.ndarray  # str: the label in the release
    suggested: np.ndarray  # str: the model's most likely label
    quality: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.row)

    def take(self, index: np.ndarray) -> Flags:
        """The entries at ``index`` (a mask or positions), in that order."""
        return Flags(row=self.row[index], head=self.head[index], given=self.given[index],
                     suggested=self.suggested[index], quality=self.quality[index])

    def ranked(self) -> Flags:
        """Worst quality first (ties: by head, then row)."""
        return self.take(np.lexsort((self.row, self.head, self.quality)))


def _flags(head: str, rows: np.ndarray, labels: np.ndarray, verdict: HeadVerdict,
           names: Sequence[str]) -> Flags:
    pick = verdict.flagged
    table = np.asarray(names, dtype=object)
    return Flags(row=rows[pick].astype(np.int64), head=np.full(int(pick.sum()), head, object),
                 given=table[labels[pick]], suggested=table[verdict.suggested[pick]],
                 quality=verdict.quality[pick])


def flag_labels(hands: Hands, gesture_probs: np.ndarray, hand_probs: np.ndarray, *,
                classes: Sequence[str]) -> Flags:
    """The labels cleanlab flags, ranked: the gesture head over every box (its label), the
    leading-hand head over the gesture boxes whose leading hand is known (free hands are
    left out: their target is the other hand)."""
    every = np.arange(len(hands), dtype=np.int64)
    gesture = _flags(HEADS[0], every, hands.label, judge_labels(hands.label, gesture_probs),
                     classes)
    known = every[hands.gesture_hand & (hands.hand >= 0)]
    target = hands.hand[known]
    leading = _flags(HEADS[1], known, target, judge_labels(target, hand_probs[known]),
                     LEADING_HANDS)
    both = Flags(*(np.concatenate([getattr(gesture, f), getattr(leading, f)])
                   for f in ("row", "head", "given", "suggested", "quality")))
    return both.ranked()


@dataclass(frozen=True)
class Selection:
    """The flags to record and what the release's rules left out."""

    flags: Flags  # at most one per image, ranked
    skipped_reviewed: int  # flags on images a reviewer decided
    skipped_already_flagged: int  # images flagged by an earlier audit of the release
    skipped_quality: int = 0  # flags at or above the audit's max_quality


def select_flags(flags: Flags, *, row_image_ids: np.ndarray, reviewed: Collection[str],
                 already_flagged: Collection[str], max_quality: float | None = None
                 ) -> Selection:
    """Apply the rules: with ``max_quality``, only flags whose label quality score is below
    it (fewer, surer flags for the reviewers); no flag on an image in ``reviewed`` (a
    reviewer's decision is final); one flag per image, the lowest quality one; none on an
    image in ``already_flagged`` (flagged at most once per release)."""
    ranked = flags.ranked()
    sure = (np.ones(len(ranked), dtype=bool) if max_quality is None
            else ranked.quality < max_quality)
    ranked = ranked.take(sure)
    image = row_image_ids[ranked.row]
    by_reviewer = np.isin(image, np.asarray(list(reviewed), dtype=object))
    ranked, image = ranked.take(~by_reviewer), image[~by_reviewer]
    first = np.sort(np.unique(image, return_index=True)[1]).astype(np.int64)
    ranked, image = ranked.take(first), image[first]
    before = np.isin(image, np.asarray(list(already_flagged), dtype=object))
    return Selection(flags=ranked.take(~before), skipped_reviewed=int(by_reviewer.sum()),
                     skipped_already_flagged=int(before.sum()),
                     skipped_quality=int((~sure).sum()))


def issue_table(flags: Flags, *, release: str, row_image_ids: np.ndarray,
                box_index: np.ndarray, audit_id: str, flagged_at: dt.datetime) -> pa.Table:
    """The ``label_issues`` rows of ``flags`` (``LABEL_ISSUES``)."""
    n = len(flags)
    return pa.table({
        "release": pa.array([release] * n, pa.string()),
        "image_id": pa.array(row_image_ids[flags.row].tolist(), pa.string()),
        "box_index": pa.array(box_index[flags.row].tolist(), pa.int16()),
        "head": pa.array(flags.head.tolist(), pa.string()),
        "given_label": pa.array(flags.given.tolist(), pa.string()),
        "suggested_label": pa.array(flags.suggested.tolist(), pa.string()),
        "quality": pa.array(flags.quality.tolist(), pa.float64()),
        "audit_id": pa.array([audit_id] * n, pa.string()),
        "flagged_at": pa.array([flagged_at] * n, pa.timestamp("us", tz="UTC")),
    }, schema=LABEL_ISSUES)


def flag_counts(flags: Flags) -> dict[str, dict[str, int]]:
    """Flags per head and given label, e.g. ``{"gesture": {"call": 2}}``."""
    counts: dict[str, dict[str, int]] = {h: {} for h in HEADS}
    for head, given in zip(flags.head.tolist(), flags.given.tolist(), strict=True):
        counts[head][given] = counts[head].get(given, 0) + 1
    return counts
