"""Box consensus: several annotators' hand boxes and leading hand -> one annotation. No I/O.

- ``match_boxes``: the same hand across annotators, by an optimal IoU assignment
  (Hungarian, ``scipy.optimize.linear_sum_assignment`` on ``1 - IoU``), at most one box per
  annotator per hand. Annotators are taken in a canonical order (most boxes first, then by
  their boxes' coordinates); each one's boxes are assigned optimally to the median boxes of
  the hands found so far, and a box that matches none (IoU below ``min_iou``) starts a new
  hand. The result depends only on the boxes, never on the order they were given in.
- ``aggregate_image``: a hand is kept when a strict majority of the annotators drew it; its
  edges are the medians of the annotators' edges; label and leading hand by (skill-weighted)
  vote, ties broken by head count, then by name.
- ``annotator_quality``: per annotator, agreement with the aggregates (for the report and
  for skill weights).
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from schemas.annotation import FREE_HAND_LABEL, AnnotationSettings
from tasks.annotate.boxes import Box, Edges, ParsedAnnotation, iou

METHOD = "median_edges"  # majority hands, median edges, majority label and leading hand
WEIGHTED_METHOD = "median_edges_weighted"  # the same with skill-weighted votes
MIN_WEIGHT = 0.01  # a vote never weighs nothing: ties still need a deterministic answer

Cluster = dict[int, int]  # annotator (index in the given list) -> index of their box


# ---- matching ---------------------------------------------------------------------------

def match_boxes(annotations: Sequence[Sequence[Box]], *, min_iou: float) -> list[Cluster]:
    """Group the annotators' boxes into hands; every box lands in exactly one cluster.

    Clusters are sorted by their median box; within an annotator a box joins at most one
    cluster and a cluster holds at most one box per annotator.
    """
    order = sorted(range(len(annotations)), key=lambda a: _annotator_key(annotations[a]))
    clusters: list[Cluster] = []
    for a in order:
        boxes = annotations[a]
        rows = sorted(range(len(boxes)), key=lambda i: _box_key(boxes[i]))
        centroids = [_centroid(annotations, c) for c in clusters]
        pairs = _assign([boxes[i] for i in rows], centroids, min_iou=min_iou)
        for r, c in pairs:
            clusters[c][a] = rows[r]
        matched = {r for r, _ in pairs}
        clusters.extend({a: rows[r]} for r in range(len(rows)) if r not in matched)
    return sorted(clusters, key=lambda c: (_box_key(_centroid(annotations, c)),
                                           sorted(_box_key(annotations[a][i])
                                                  for a, i in c.items())))


def _assign(boxes: list[Box], centroids: list[Box], *, min_iou: float) -> list[tuple[int, int]]:
    """Optimal (box, centroid) pairs with IoU >= min_iou: most pairs first, then most IoU."""
    if not boxes or not centroids:
        return []
    ious = np.array([[iou(b, c) for c in centroids] for b in boxes])
    ok = ious >= min_iou
    cost = np.where(ok, 1.0 - ious, float(len(boxes) + len(centroids)))  # a miss outweighs all
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if ok[r, c]]


def _centroid(annotations: Sequence[Sequence[Box]], cluster: Cluster) -> Box:
    return Box.from_edges(*median_edges([annotations[a][i] for a, i in cluster.items()]), "")


def median_edges(boxes: Sequence[Box]) -> Edges:
    """The median of each edge (left, top, right, bottom), clipped to the image.

    Each box's right edge is right of its left edge, so the k-th smallest right edge is
    right of the k-th smallest left edge: the median box always has a positive size.
    """
    med = np.median(np.array([b.edges() for b in boxes], dtype=float), axis=0)
    x1, y1, x2, y2 = (min(max(float(v), 0.0), 1.0) for v in med)
    return x1, y1, x2, y2


def _box_key(box: Box) -> tuple[float, float, float, float, str]:
    return box.x, box.y, box.w, box.h, box.label


def _annotator_key(boxes: Sequence[Box]) -> tuple[int, list[tuple[float, float, float, float,
                                                                 str]]]:
    return -len(boxes), sorted(_box_key(b) for b in boxes)


# ---- aggregation ------------------------------------------------------------------------

@dataclass(frozen=True)
class AggregateBox:
    """One hand the majority drew: the aggregate box and the votes behind it."""

    box: Box
    label_conf: float  # share of the votes with the chosen label
    agreement: float  # mean IoU of the votes' boxes with ``box``
    votes: tuple[tuple[str, Box], ...]  # (worker_id, the box they drew), by worker_id

    @property
    def n_votes(self) -> int:
        """Annotators who drew this hand."""
        return len(self.votes)


@dataclass(frozen=True)
class ImageAnnotation:
    """The aggregated annotation of one image.

    ``agreement`` is the mean of the boxes' agreements, 0.0 when no hand reached a majority.
    ``low_agreement``: agreement below ``min_agreement``, no hand with a majority, or no
    strict majority for the leading hand or for a box's label; such an image is re-queued.
    """

    boxes: tuple[AggregateBox, ...]  # gesture hands first, then free hands, left to right
    leading_hand: str | None  # None: unknown (only an imported entry that names none)
    leading_conf: float | None  # share of the annotators agreeing; None with an unknown hand
    agreement: float
    n_annotators: int
    low_agreement: bool
    minority_hands: int  # hands some annotators drew, short of a majority (not kept)


def aggregate_image(answers: Mapping[str, ParsedAnnotation], *,
                    skills: Mapping[str, float] | None = None,
                    settings: AnnotationSettings | None = None) -> ImageAnnotation:
    """Aggregate the usable answers of one image, keyed by worker_id; ``skills`` weigh votes.

    A worker missing from ``skills`` weighs the median skill. The result never depends on
    the order of ``answers``. Every answer must name the leading hand (the answer checks
    see to it); ``ValueError`` otherwise.
    """
    if not answers:
        raise ValueError("no answer to aggregate")
    hands = {w: a.leading_hand for w, a in answers.items() if a.leading_hand is not None}
    if len(hands) < len(answers):
        raise ValueError("an answer to aggregate names no leading hand")
    settings = settings or AnnotationSettings()
    workers = sorted(answers)
    weights = vote_weights(workers, skills)
    clusters = match_boxes([answers[w].boxes for w in workers], min_iou=settings.match_iou)
    kept = [c for c in clusters if 2 * len(c) > len(workers)]
    boxes = tuple(sorted((_aggregate_box(c, workers, answers, weights) for c in kept),
                         key=lambda b: (b.box.label == FREE_HAND_LABEL, _box_key(b.box))))
    leading, leading_conf = weighted_vote(hands, weights)
    agreement = math.fsum(b.agreement for b in boxes) / len(boxes) if boxes else 0.0
    low = (not boxes or agreement < settings.min_agreement
           or leading_conf < settings.min_leading_conf or 2 * leading_conf <= 1.0
           or any(2 * b.label_conf <= 1.0 for b in boxes))
    return ImageAnnotation(boxes, leading, leading_conf, agreement, len(workers), low,
                           len(clusters) - len(kept))


def _aggregate_box(cluster: Cluster, workers: list[str], answers: Mapping[str, ParsedAnnotation],
                   weights: Mapping[str, float]) -> AggregateBox:
    votes = tuple(sorted(((workers[a], answers[workers[a]].boxes[i]) for a, i in cluster.items()),
                         key=lambda v: v[0]))
    label, label_conf = weighted_vote({w: b.label for w, b in votes}, weights)
    box = Box.from_edges(*median_edges([b for _, b in votes]), label)
    agreement = math.fsum(sorted(iou(b, box) for _, b in votes)) / len(votes)
    return AggregateBox(box, label_conf, agreement, votes)


def vote_weights(workers: Sequence[str], skills: Mapping[str, float] | None) -> dict[str, float]:
    """Each worker's vote weight: 1.0 without skills, else their skill (median if unknown)."""
    if not skills:
        return {w: 1.0 for w in workers}
    default = statistics.median(skills.values())
    return {w: max(float(skills.get(w, default)), MIN_WEIGHT) for w in workers}


def weighted_vote(choices: Mapping[str, str], weights: Mapping[str, float]) -> tuple[str, float]:
    """The choice with the most weight (ties: most heads, then name), and its head share."""
    totals: dict[str, list[float]] = {}
    for worker in sorted(choices):
        totals.setdefault(choices[worker], []).append(weights.get(worker, 1.0))
    winner = min(totals, key=lambda c: (-math.fsum(totals[c]), -len(totals[c]), c))
    return winner, len(totals[winner]) / len(choices)


# ---- annotator quality ------------------------------------------------------------------

QUALITY_COLUMNS = ["n_images", "n_boxes", "n_hands", "n_matched", "mean_iou", "label_accuracy",
                   "leading_accuracy", "missed_rate", "extra_rate"]


def annotator_quality(answers: Mapping[str, Mapping[str, ParsedAnnotation]],
                      aggregates: Mapping[str, ImageAnnotation]) -> pd.DataFrame:
    """Per worker, against the aggregates of the images they answered.

    ``answers``: image_id -> worker_id -> answer. Columns: images and boxes answered, hands
    in the aggregates of those images, hands they drew (``n_matched``); the mean IoU of their
    matched boxes with the aggregate, label accuracy on them, leading-hand accuracy per
    image, the share of aggregate hands they missed, the share of their boxes in no hand.
    """
    tallies = [{"worker_id": worker, **_tally(worker, parsed, aggregate)}
               for image_id, aggregate in sorted(aggregates.items())
               for worker, parsed in sorted(answers.get(image_id, {}).items())]
    if not tallies:
        return pd.DataFrame(columns=QUALITY_COLUMNS, index=pd.Index([], name="worker_id"))
    t = pd.DataFrame(tallies).groupby("worker_id").sum()
    matched = t["n_matched"].where(t["n_matched"] > 0)
    t["mean_iou"] = t.pop("iou_sum") / matched
    t["label_accuracy"] = t.pop("labels_right") / matched
    t["leading_accuracy"] = t.pop("leading_right") / t["n_images"]
    t["missed_rate"] = (t["n_hands"] - t["n_matched"]) / t["n_hands"].where(t["n_hands"] > 0)
    t["extra_rate"] = (t["n_boxes"] - t["n_matched"]) / t["n_boxes"].where(t["n_boxes"] > 0)
    return t[QUALITY_COLUMNS].sort_index()


def _tally(worker: str, parsed: ParsedAnnotation, aggregate: ImageAnnotation) -> dict[str, float]:
    drawn = [(dict(b.votes).get(worker), b.box) for b in aggregate.boxes]
    mine = [(vote, box) for vote, box in drawn if vote is not None]
    return {
        "n_images": 1, "n_boxes": len(parsed.boxes), "n_hands": len(aggregate.boxes),
        "n_matched": len(mine),
        "iou_sum": math.fsum(iou(vote, box) for vote, box in mine),
        "labels_right": sum(vote.label == box.label for vote, box in mine),
        "leading_right": int(parsed.leading_hand == aggregate.leading_hand),
    }


def skills_from_quality(quality: pd.DataFrame, *, min_images: int = 3) -> dict[str, float]:
    """Vote weights from ``annotator_quality``: the mean of label and leading-hand accuracy,
    for workers with at least ``min_images`` images (others get the median weight)."""
    known = quality[quality["n_images"] >= min_images]
    score = known[["label_accuracy", "leading_accuracy"]].mean(axis=1, skipna=True).dropna()
    return {str(w): float(s) for w, s in score.items()}


# ---- catalog rows -----------------------------------------------------------------------

def box_rows(image_id: str, annotation: ImageAnnotation, *, method: str, batch_id: str,
             decided_at: dt.datetime) -> list[dict[str, Any]]:
    """The ``boxes`` table rows (``schemas.annotation.BOXES``) of one aggregated image."""
    return [
        {"image_id": image_id, "box_index": i, "x": b.box.x, "y": b.box.y, "w": b.box.w,
         "h": b.box.h, "label": b.box.label, "label_conf": b.label_conf,
         "agreement": b.agreement, "n_votes": b.n_votes,
         "n_annotators": annotation.n_annotators, "leading_hand": annotation.leading_hand,
         "leading_conf": annotation.leading_conf, "method": method, "batch_id": batch_id,
         "decided_at": decided_at}
        for i, b in enumerate(annotation.boxes)
    ]
