"""Consensus of the annotation stage: several annotators' boxes -> one box set per image.

The crowd stage machinery (``tasks.crowd.stage``, ``tasks.crowd.queue``) drives the queue;
this module turns the accepted ``answers`` of stage ``annotation`` into an
``ImageAnnotation`` per image, with skill weights learnt from agreement with the aggregate,
and the confidence the queue decides on (the image's agreement, 0 when it is low).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import pandas as pd

from schemas.annotation import AnnotationSettings
from schemas.crowd import Verdict
from tasks.annotate.boxes import ParsedAnnotation, parse_answer_json
from tasks.annotate.consensus import (
    METHOD,
    WEIGHTED_METHOD,
    ImageAnnotation,
    aggregate_image,
    annotator_quality,
    skills_from_quality,
)
from tasks.crowd.consensus import CrowdVerdict


@dataclass(frozen=True)
class AnnotationConsensus:
    """Per image: the crowd verdict for the queue and the aggregate boxes; per annotator:
    quality against the aggregates."""

    verdicts: dict[str, CrowdVerdict]
    annotations: dict[str, ImageAnnotation]
    quality: pd.DataFrame
    method: str


def parsed_answers(answers: pd.DataFrame) -> dict[str, dict[str, ParsedAnnotation]]:
    """image_id -> worker_id -> parsed canonical answer (accepted answers only)."""
    out: dict[str, dict[str, ParsedAnnotation]] = defaultdict(dict)
    for image_id, worker_id, answer in answers[["image_id", "worker_id", "answer"]].itertuples(
            index=False):
        out[str(image_id)][str(worker_id)] = parse_answer_json(str(answer))
    return dict(out)


def annotation_consensus(answers: pd.DataFrame, *,
                         settings: AnnotationSettings) -> AnnotationConsensus:
    """Aggregate every image twice: plain, then with annotator skills from the first pass."""
    parsed = parsed_answers(answers)
    plain = {i: aggregate_image(a, settings=settings) for i, a in parsed.items()}
    skills = skills_from_quality(annotator_quality(parsed, plain)) if plain else {}
    method = WEIGHTED_METHOD if skills else METHOD
    final = {i: aggregate_image(a, skills=skills or None, settings=settings)
             for i, a in parsed.items()}
    quality = annotator_quality(parsed, final) if final else pd.DataFrame()
    verdicts = {i: CrowdVerdict(i, Verdict.ANNOTATED, None,
                                0.0 if ann.low_agreement else round(ann.agreement, 6),
                                ann.n_annotators)
                for i, ann in final.items()}
    return AnnotationConsensus(verdicts, final, quality, method)


def review_annotation(answer: str) -> ImageAnnotation:
    """An expert's single answer as the image's annotation."""
    return aggregate_image({"expert": parse_answer_json(answer)})


def agreement_histogram(annotations: dict[str, ImageAnnotation]) -> dict[str, int]:
    """Images per agreement bucket (0.1 wide), for the stage report."""
    counts: dict[str, int] = defaultdict(int)
    for ann in annotations.values():
        low = min(int(ann.agreement * 10), 9) / 10
        counts[f"{low:.1f}-{low + 0.1:.1f}"] += 1
    return dict(sorted(counts.items()))
