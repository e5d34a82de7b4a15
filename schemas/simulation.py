"""Record shapes of the synthetic crowd batches (``tasks.simulation.generator``).

A batch is ``photos/``, ``submissions.csv`` (the crowd table the pipeline ingests, columns
``SUBMISSIONS_TABLE_COLUMNS``) and ``truth.jsonl`` (one ``TruthRecord`` per file or row, keys
in ``TRUTH_FIELDS`` order): what the pipeline is expected to decide, and the true hand boxes.
"""

from __future__ import annotations

from typing import TypedDict

from schemas.tables import SUBMISSION_TABLE_OPTIONAL, SUBMISSION_TABLE_REQUIRED

# the generator writes every column of the submissions table the pipeline reads
SUBMISSIONS_TABLE_COLUMNS: tuple[str, ...] = SUBMISSION_TABLE_REQUIRED + SUBMISSION_TABLE_OPTIONAL


class TruthRecord(TypedDict):
    """One line of ``truth.jsonl``. Boxes follow ``schemas.annotation`` (HaGRID, relative)."""

    file: str  # path relative to the batch, also for a table row whose file is missing
    kind: str  # original, a resubmission kind or a problem kind (tasks.simulation.problems)
    expected_outcome: str  # schemas.reasons.Outcome
    expected_reason: str | None  # schemas.reasons.Reason, null when accepted
    duplicate_of_file: str | None  # the original a resubmission was made from
    same_worker: bool | None  # a resubmission by the original's worker; null otherwise
    user_id: str | None  # null: no table row
    gesture: str | None
    scene_family: int | None  # originals of one room share it (hard negatives)
    width: int | None  # displayed size; null when the file holds no image
    height: int | None
    bboxes: list[list[float]]  # [x, y, w, h] per hand, the gesture hand first
    labels: list[str]  # per box: the gesture, or no_gesture for a free hand
    leading_hand: str | None  # left | right; null when no hand is shown
    # what the crowd stages should answer (schemas.crowd answer forms), for the simulated crowd
    validation: str  # yes, or no:<reason> for a drawn break of the mining rules
    filtration: str  # none, or the flags it should raise, comma-joined in FILTRATION_FLAGS order
    planted_flags: list[str]  # flags declared, not drawn (child, nudity cannot be drawn honestly)
    shown_gesture: str | None  # the gesture the picture shows (differs for no:wrong_gesture)
    inscription: str | None  # text drawn on a sign or shirt
    framing: str | None  # normal, hand_cut_off, too_far, too_close; null without a photo


TRUTH_FIELDS: tuple[str, ...] = tuple(TruthRecord.__annotations__)
