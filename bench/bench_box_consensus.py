"""Box consensus against a known truth, through the simulated annotators.

    .venv/bin/python bench/bench_box_consensus.py [--n 500] [--seed 0] [--out FILE]

N made-up images with one gesture hand and, on half of them, a free hand (``no_gesture``)
that does not overlap it. Simulated annotators answer in Label Studio's result format; each
answer goes through ``from_labelstudio`` (a blank answer is rejected, as a real one would
be) and the usable ones through ``aggregate_image``. Scores against the truth:

- mean IoU of the aggregated boxes matched to a true hand (IoU >= 0.5, optimal matching),
  label accuracy on those, leading-hand accuracy (an image without an aggregate counts as
  wrong), hand recall and precision, the share of images flagged low agreement (re-queued
  in the stage) and the share of answers rejected;
- "single annotator": every answer of the largest overlap scored alone, as if it were the
  aggregate: the baseline the aggregation has to beat.

Two pools: ``uniform`` (every annotator at the given rates) and ``mixed`` (30% sloppy
annotators), the latter also with skill-weighted votes (skills from ``annotator_quality``
against a first, unweighted aggregation of the same answers). About 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: the machine is shared
sys.path.insert(0, str(BENCH.parent))

import numpy as np

from schemas.annotation import AnnotationSettings
from schemas.taxonomy import load_taxonomy
from tasks.annotate.boxes import AnnotationError, Box, ParsedAnnotation, from_labelstudio, iou
from tasks.annotate.consensus import (
    ImageAnnotation,
    aggregate_image,
    annotator_quality,
    match_boxes,
    skills_from_quality,
)
from tasks.simulation.annotators import SimAnnotator, annotator_rng, simulated_answer

TAXONOMY = load_taxonomy()
LABELS = TAXONOMY.box_labels
GOOD = {"jitter": 0.05, "miss_rate": 0.10, "label_swap_rate": 0.05, "wrong_hand_rate": 0.10}
SLOPPY = {"jitter": 0.12, "miss_rate": 0.30, "label_swap_rate": 0.30, "wrong_hand_rate": 0.35}
POOL_SIZE = 30


@dataclass(frozen=True)
class Image:
    """A made-up image: its size and true hands."""

    image_id: str
    width: int
    height: int
    hands: tuple[Box, ...]
    leading_hand: str


def make_images(n: int, *, seed: int) -> list[Image]:
    """N images, 70% landscape FullHD, one gesture hand, a free hand on half of them."""
    images = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        width, height = (1920, 1080) if rng.random() < 0.7 else (1080, 1920)
        hands = [_random_box(rng, str(TAXONOMY.gestures[rng.integers(len(TAXONOMY.gestures))]))]
        if rng.random() < 0.5:
            for _ in range(50):
                free = _random_box(rng, "no_gesture")
                if iou(free, hands[0]) == 0.0:
                    hands.append(free)
                    break
        leading = "left" if rng.random() < 0.5 else "right"
        images.append(Image(f"img-{seed}-{i:05d}", width, height, tuple(hands), leading))
    return images


def _random_box(rng: np.random.Generator, label: str) -> Box:
    w, h = rng.uniform(0.05, 0.25, size=2)
    return Box(float(rng.uniform(0, 1 - w)), float(rng.uniform(0, 1 - h)), float(w), float(h),
               label)


def make_pool(*, sloppy_share: float, seed: int) -> list[SimAnnotator]:
    """POOL_SIZE annotators; the first ``sloppy_share`` of them at the sloppy rates."""
    n_sloppy = round(POOL_SIZE * sloppy_share)
    pool = [SimAnnotator(f"ann-{k:02d}", **(SLOPPY if k < n_sloppy else GOOD))  # type: ignore[arg-type]
            for k in range(POOL_SIZE)]
    order = np.random.default_rng(seed).permutation(POOL_SIZE)
    return [pool[i] for i in order]


# ---- answering and aggregating ----------------------------------------------------------

Answers = dict[str, dict[str, ParsedAnnotation]]  # image_id -> worker_id -> usable answer


@dataclass
class Crowd:
    """The answers collected so far: usable ones, and how many were asked and rejected."""

    answers: Answers
    asked: dict[str, int]
    rejected: int = 0


def collect(images: Sequence[Image], pool: Sequence[SimAnnotator], *, overlap: int,
            seed: int) -> Crowd:
    """Each image answered by ``overlap`` distinct annotators."""
    crowd = Crowd({image.image_id: {} for image in images}, {image.image_id: 0 for image in images})
    for image in images:
        ask(crowd, image, pool, count=overlap, seed=seed)
    return crowd


def ask(crowd: Crowd, image: Image, pool: Sequence[SimAnnotator], *, count: int,
        seed: int) -> None:
    """``count`` more annotators (the next ones in the image's own order of the pool)."""
    order = np.random.default_rng([seed, 7, int(image.image_id[-5:])]).permutation(len(pool))
    start = crowd.asked[image.image_id]
    for k in order[start:start + count]:
        ann = pool[k]
        result = simulated_answer(ann, image.hands, image.leading_hand, labels=LABELS,
                                  width=image.width, height=image.height,
                                  rng=annotator_rng(seed, ann.annotator_id, image.image_id))
        try:
            crowd.answers[image.image_id][ann.annotator_id] = from_labelstudio(
                result, labels=set(LABELS), image_size=(image.width, image.height))
        except AnnotationError:
            crowd.rejected += 1
    crowd.asked[image.image_id] += count


def requeue(crowd: Crowd, images: Sequence[Image], pool: Sequence[SimAnnotator], *,
            settings: AnnotationSettings, seed: int) -> dict[str, ImageAnnotation]:
    """Ask ``requeue_answers`` more for every low-agreement image, up to ``max_answers``."""
    aggregates = aggregate_all(crowd.answers, settings=settings)
    while True:
        again = [image for image in images
                 if (image.image_id not in aggregates or aggregates[image.image_id].low_agreement)
                 and crowd.asked[image.image_id] < settings.max_answers]
        if not again:
            return aggregates
        for image in again:
            more = min(settings.requeue_answers, settings.max_answers - crowd.asked[image.image_id])
            ask(crowd, image, pool, count=more, seed=seed)
            if crowd.answers[image.image_id]:
                aggregates[image.image_id] = aggregate_image(crowd.answers[image.image_id],
                                                             settings=settings)


def aggregate_all(answers: Answers, *, skills: Mapping[str, float] | None = None,
                  settings: AnnotationSettings) -> dict[str, ImageAnnotation]:
    """``aggregate_image`` on every image with at least one usable answer."""
    return {image_id: aggregate_image(given, skills=skills, settings=settings)
            for image_id, given in answers.items() if given}


# ---- scoring ----------------------------------------------------------------------------

@dataclass
class Score:
    """Running sums over images; ``row`` turns them into the table's figures."""

    ious: list[float]
    labels_right: int = 0
    leading_right: int = 0
    n_images: int = 0
    n_true: int = 0
    n_found: int = 0
    n_low: int = 0
    flags: bool = True  # False for single answers: nothing to flag

    def add(self, image: Image, boxes: Sequence[Box], leading: str | None,
            low: bool = False) -> None:
        """Score one image's boxes and leading hand (none: nothing was decided)."""
        clusters = match_boxes([list(image.hands), list(boxes)], min_iou=0.5)
        for c in clusters:
            if len(c) == 2:
                truth, got = image.hands[c[0]], boxes[c[1]]
                self.ious.append(iou(truth, got))
                self.labels_right += truth.label == got.label
        self.n_images += 1
        self.n_true += len(image.hands)
        self.n_found += len(boxes)
        self.leading_right += leading == image.leading_hand
        self.n_low += low

    def row(self) -> list[str]:
        """mean IoU, label acc, leading acc, recall, precision, low agreement."""
        matched = len(self.ious)
        return [f"{math.fsum(self.ious) / max(matched, 1):.3f}",
                f"{self.labels_right / max(matched, 1):.3f}",
                f"{self.leading_right / max(self.n_images, 1):.3f}",
                f"{matched / max(self.n_true, 1):.3f}", f"{matched / max(self.n_found, 1):.3f}",
                f"{self.n_low / max(self.n_images, 1):.1%}" if self.flags else "-"]


def score_aggregates(images: Sequence[Image],
                     aggregates: Mapping[str, ImageAnnotation]) -> Score:
    """The aggregation's score; an image with no usable answer scores as nothing found."""
    score = Score([])
    for image in images:
        agg = aggregates.get(image.image_id)
        if agg is None:
            score.add(image, [], None, low=True)
        else:
            score.add(image, [b.box for b in agg.boxes], agg.leading_hand, agg.low_agreement)
    return score


def score_single(images: Sequence[Image], answers: Answers, *, overlap: int) -> Score:
    """Every answer alone; a rejected (blank) answer scores as nothing found."""
    score = Score([], flags=False)
    for image in images:
        given = answers[image.image_id]
        for parsed in given.values():
            score.add(image, list(parsed.boxes), parsed.leading_hand)
        for _ in range(overlap - len(given)):
            score.add(image, [], None)
    return score


# ---- the plan ---------------------------------------------------------------------------

def run(images: Sequence[Image], *, seed: int) -> list[list[str]]:
    """Every table row: pool, overlap, votes, the scores, answers per image, rejected."""
    settings = AnnotationSettings()
    rows = []
    for pool_name, sloppy in (("uniform", 0.0), ("mixed 30% sloppy", 0.3)):
        pool = make_pool(sloppy_share=sloppy, seed=seed)
        for overlap in (1, 3, 5):
            crowd = collect(images, pool, overlap=overlap, seed=seed)
            aggregates = aggregate_all(crowd.answers, settings=settings)
            rows.append([pool_name, str(overlap), "majority",
                         *score_aggregates(images, aggregates).row(), *_cost(crowd)])
            if overlap > 1 and sloppy > 0:
                skills = skills_from_quality(annotator_quality(crowd.answers, aggregates))
                weighted = aggregate_all(crowd.answers, skills=skills, settings=settings)
                rows.append([pool_name, str(overlap), "skill-weighted",
                             *score_aggregates(images, weighted).row(), *_cost(crowd)])
            if overlap == 5:
                rows.append([pool_name, "-", "single annotator (each answer of k=5 alone)",
                             *score_single(images, crowd.answers, overlap=overlap).row(),
                             *_cost(crowd, per_image=1.0)])
        crowd = collect(images, pool, overlap=settings.overlap, seed=seed)
        aggregates = requeue(crowd, images, pool, settings=settings, seed=seed)
        rows.append([pool_name, f"{settings.overlap} + re-queue", "majority",
                     *score_aggregates(images, aggregates).row(), *_cost(crowd)])
    return rows


def _cost(crowd: Crowd, *, per_image: float | None = None) -> list[str]:
    asked = sum(crowd.asked.values())
    mean = per_image if per_image is not None else asked / max(len(crowd.asked), 1)
    return [f"{mean:.2f}", f"{crowd.rejected / max(asked, 1):.1%}"]


def markdown(rows: list[list[str]], *, n: int, seed: int, seconds: float) -> str:
    """The results as a Markdown section."""
    head = ["pool", "overlap", "votes", "mean IoU", "label acc", "leading acc", "hand recall",
            "hand precision", "low agreement", "answers / image", "answers rejected"]
    command = f"`.venv/bin/python bench/bench_box_consensus.py --n {n} --seed {seed}`"
    lines = [f"{command} ({n} images, {seconds:.0f} s)", "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    rates = f"Rates: good annotators {GOOD}; sloppy {SLOPPY}"
    lines += ["", f"{rates} (jitter: std of each edge as a fraction of the box side)."]
    return "\n".join(lines)


def main() -> None:
    """Parse the arguments, run the plan, print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    rows = run(make_images(args.n, seed=args.seed), seed=args.seed)
    text = markdown(rows, n=args.n, seed=args.seed, seconds=time.perf_counter() - start)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
