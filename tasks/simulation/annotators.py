"""Simulated box annotators, for the demo, the tests and the benchmarks. No I/O.

An annotator sees the true boxes (normalized, HaGRID convention), labels and leading hand
of an image and answers the way people err: each box edge jittered by a normal error (its
std a fraction of the box's width or height), a hand missed, a label swapped for another
box label of the taxonomy, the wrong leading hand. The answer is a Label Studio result list
(``tasks.annotate.boxes.to_labelstudio``), so it goes through ``from_labelstudio`` like a real one.
The random generator is passed in; ``annotator_rng`` gives one per (seed, annotator, image).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.annotation import LEADING_HANDS
from tasks.annotate.boxes import Box, to_labelstudio


@dataclass(frozen=True)
class SimAnnotator:
    """One simulated annotator and their error rates."""

    annotator_id: str
    jitter: float = 0.05  # std of each edge, as a fraction of the box's width or height
    miss_rate: float = 0.1  # probability of not drawing a hand
    label_swap_rate: float = 0.05  # probability of another box label of the taxonomy
    wrong_hand_rate: float = 0.1  # probability of choosing the other leading hand


def annotator_rng(seed: int, annotator_id: str, image_id: str) -> np.random.Generator:
    """A generator determined by (seed, annotator, image) alone."""
    digest = hashlib.sha256(f"boxes|{seed}|{annotator_id}|{image_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def simulated_answer(annotator: SimAnnotator, truth: Sequence[Box], leading_hand: str, *,
                     labels: Sequence[str], width: int, height: int,
                     rng: np.random.Generator) -> list[dict[str, Any]]:
    """What ``annotator`` draws for an image whose true hands are ``truth``, as LS results.

    ``labels``: the taxonomy's box labels, the pool a swapped label is drawn from.
    """
    drawn = []
    for box in truth:
        missed = rng.random() < annotator.miss_rate
        jittered = _jitter(box, annotator.jitter, rng)
        label = _maybe_swap(box.label, labels, annotator.label_swap_rate, rng)
        if not missed:
            drawn.append(Box(jittered.x, jittered.y, jittered.w, jittered.h, label))
    hand = leading_hand
    if rng.random() < annotator.wrong_hand_rate:
        hand = next(h for h in LEADING_HANDS if h != leading_hand)
    return to_labelstudio(drawn, hand, width=width, height=height)


def _jitter(box: Box, scale: float, rng: np.random.Generator) -> Box:
    """Each edge moved by N(0, scale * side); edges that cross are put back in order."""
    dx1, dy1, dx2, dy2 = rng.normal(0.0, scale, size=4) * (box.w, box.h, box.w, box.h)
    x1, y1, x2, y2 = box.edges()
    (x1, x2), (y1, y2) = sorted((x1 + dx1, x2 + dx2)), sorted((y1 + dy1, y2 + dy2))
    return Box.from_edges(float(x1), float(y1), float(x2), float(y2), box.label)


def _maybe_swap(label: str, labels: Sequence[str], rate: float, rng: np.random.Generator) -> str:
    others = [name for name in labels if name != label]
    if rng.random() < rate and others:
        return others[int(rng.integers(len(others)))]
    return label
