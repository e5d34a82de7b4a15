"""Vocabulary, settings and table of the annotation stage: hand boxes and the leading hand.

Boxes follow the HaGRID convention everywhere past the Label Studio edge: ``x, y, w, h``
(top-left x, top-left y, width, height), each relative to the width or height of the
ORIENTED image (EXIF orientation applied), in ``[0, 1]``.

An annotator's accepted answer is stored in the ``answers`` table (stage ``annotation``) in
one canonical JSON form, the fields of a HaGRID annotation entry::

    {"bboxes": [[x, y, w, h], ...], "labels": ["like", "no_gesture"], "leading_hand": "right"}

with the boxes sorted and the coordinates rounded to ``COORD_DECIMALS`` places
(``tasks.annotate.boxes.answer_json`` / ``tasks.annotate.boxes.parse_answer_json``).

The leading hand may be unknown only where a HaGRID entry names none (the v2 format has no
``leading_hand`` / ``leading_conf``): a pre-annotation then has ``"leading_hand": null``
(annotators choose it), and imported boxes have ``leading_hand`` and ``leading_conf`` null.
Every answer check rejects an annotator's answer without a leading hand, so the ``answers``
table always names one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import pyarrow as pa

from schemas.taxonomy import DEFAULT_TAXONOMY

# Names in the Label Studio label config (annotation_ui): the rectangle tool, the leading-hand
# choice, and the image they label.
BOX_CONTROL = "hands"
LEADING_HAND_CONTROL = "leading_hand"
IMAGE_OBJECT = "image"

LEADING_HANDS: tuple[str, ...] = ("left", "right")
FREE_HAND_LABEL = "no_gesture"  # the label of a second, free hand fully in frame
COORD_DECIMALS = 6  # canonical answers: 1e-6 of the image side (0.002 px on FullHD)


class BoxReason(StrEnum):
    """Why an annotator's box, or whole answer, was not used. Stored: never rename one.

    Box-level reasons drop that box only (``tasks.annotate.boxes.BoxProblem``); answer-level reasons
    reject the whole answer (``tasks.annotate.boxes.AnnotationError``).
    """

    # one box
    UNKNOWN_LABEL = "unknown_label"  # a label outside the taxonomy's box labels
    MISSING_LABEL = "missing_label"  # a box with no label, or with several
    DEGENERATE_BOX = "degenerate_box"  # zero or negative size, or below min_box_size
    FAR_OUTSIDE = "far_outside"  # beyond the image by more than clip_tolerance
    # the whole answer
    MALFORMED = "malformed"  # not a list of result dicts, or a coordinate that is not a number
    NO_BOXES = "no_boxes"  # no usable box at all (none drawn, or every box dropped)
    MISSING_LEADING_HAND = "missing_leading_hand"
    UNKNOWN_LEADING_HAND = "unknown_leading_hand"  # not left / right, or both
    IMAGE_ROTATED = "image_rotated"  # drawn on an image rotated in the UI: frame ambiguous
    SIZE_MISMATCH = "size_mismatch"  # aspect ratio differs from the oriented image's


@dataclass(frozen=True)
class AnnotationSettings:
    """How the annotation stage checks, matches and aggregates boxes. Passed explicitly.

    - ``overlap``: annotators asked per image in the first round; ``requeue_answers`` more
      are asked when an image has low agreement, until ``max_answers``; then expert review.
    - ``match_iou``: the least IoU for two annotators' boxes to be the same hand.
    - ``clip_tolerance``: a box beyond the image by at most this fraction of the image side
      is clipped; further out it is rejected (``far_outside``).
    - ``min_box_size``: the least width and height of a box, relative to the image side.
    - ``min_agreement``: an image whose mean box agreement (IoU with the aggregate) is below
      it has low agreement.
    - ``min_leading_conf``: an image whose leading hand has a smaller (weighted) share of the
      answers is asked again: 0.75 re-asks a 2-1 split of three answers. The leading hand is
      one binary answer per image, so a bare majority of three is wrong about 6-9% of the
      time with 30% careless workers (measured on the simulated crowd); 0.75 brings it under
      5%.
    - ``taxonomy``: the taxonomy whose box labels an answer may use (``hagrid_v1`` or
      ``hagrid_v2``, ``schemas.taxonomy.load_taxonomy``).
    """

    overlap: int = 3
    match_iou: float = 0.5
    clip_tolerance: float = 0.05
    min_box_size: float = 0.005
    min_agreement: float = 0.7
    min_leading_conf: float = 0.75
    requeue_answers: int = 2
    max_answers: int = 7
    taxonomy: str = DEFAULT_TAXONOMY

    def __post_init__(self) -> None:
        if self.overlap < 1 or self.requeue_answers < 1 or self.max_answers < self.overlap:
            raise ValueError("need overlap >= 1, requeue_answers >= 1, max_answers >= overlap")
        if not 0.0 <= self.min_leading_conf <= 1.0:
            raise ValueError("min_leading_conf must be in [0, 1]")
        if not 0.0 < self.match_iou <= 1.0 or not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError("match_iou must be in (0, 1], min_agreement in [0, 1]")
        if self.clip_tolerance < 0.0 or not 0.0 <= self.min_box_size < 1.0:
            raise ValueError("clip_tolerance must be >= 0, min_box_size in [0, 1)")


BOXES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("box_index", pa.int16(), nullable=False),  # 0.. per image, gesture hands first
        pa.field("x", pa.float64(), nullable=False),  # HaGRID: top-left x, relative, oriented
        pa.field("y", pa.float64(), nullable=False),
        pa.field("w", pa.float64(), nullable=False),
        pa.field("h", pa.float64(), nullable=False),
        pa.field("label", pa.string(), nullable=False),  # a gesture, or no_gesture
        pa.field("label_conf", pa.float64(), nullable=False),  # share of votes for the label
        pa.field("agreement", pa.float64(), nullable=False),  # mean IoU of votes with the box
        pa.field("n_votes", pa.int16(), nullable=False),  # annotators who drew this hand
        pa.field("n_annotators", pa.int16(), nullable=False),  # answers aggregated
        # the image's leading hand, left | right, and the share agreeing with it; both null
        # when unknown (an imported HaGRID v2 entry names none): never one without the other
        pa.field("leading_hand", pa.string()),
        pa.field("leading_conf", pa.float64()),
        pa.field("method", pa.string(), nullable=False),  # median_edges, ..., review, import
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("decided_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
