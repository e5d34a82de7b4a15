"""A simulated crowd for the demo, the tests and the benchmarks.

Workers have set accuracies; some are spammers who answer at random, and one always gives
the answer that lets an image through (``yes`` in validation, ``none`` in filtration).
The truth it answers from is planted per image (``planted_truth``): the synthetic photos
carry no real reason to fail validation or filtration, so a share of them is declared
invalid or flagged, deterministically from the image id.

Its answers are written as an answer table into the file back end's inbox and imported by
the same ``pull`` as any other answer file: there is no side door into the catalog.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from schemas.annotation import FREE_HAND_LABEL, LEADING_HANDS
from schemas.crowd import (
    FILTRATION_FLAGS,
    NO,
    NONE_FLAG,
    VALIDATION_REASONS,
    YES,
    Queue,
    Stage,
)
from schemas.taxonomy import load_taxonomy
from tasks.annotate.boxes import Box
from tasks.crowd.backends import CrowdTask, FileCrowd, PushedTask, inbox_prefix
from tasks.simulation.annotators import SimAnnotator, simulated_answer
from tasks.storage import Storage

TruthFn = Callable[[Stage, str], str]
BoxTruthFn = Callable[[str, str], tuple[list[Box], str]]


@dataclass(frozen=True)
class SimWorker:
    """One simulated worker: ``honest`` (right with ``accuracy``), ``spammer`` or ``always_yes``."""

    worker_id: str
    kind: str
    accuracy: float = 1.0


def worker_pool(*, n_workers: int = 20, spammer_share: float = 0.3, always_yes: int = 1,
                accuracy: tuple[float, float] = (0.8, 0.95), seed: int = 0) -> list[SimWorker]:
    """``n_workers`` workers: spammers, ``always_yes`` yes-sayers, the rest honest."""
    rng = np.random.default_rng(seed)
    n_spam = round(n_workers * spammer_share)
    n_honest = max(0, n_workers - n_spam - always_yes)
    pool = [SimWorker(f"sim-{i:03d}", "honest", float(rng.uniform(*accuracy)))
            for i in range(n_honest)]
    pool += [SimWorker(f"sim-{n_honest + i:03d}", "spammer", 0.0) for i in range(n_spam)]
    pool += [SimWorker(f"sim-{n_honest + n_spam + i:03d}", "always_yes", 0.0)
             for i in range(always_yes)]
    return pool


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def planted_truth(*, seed: int = 0, invalid_rate: float = 0.2,
                  flag_rate: float = 0.12) -> TruthFn:
    """The right answer per (stage, image), planted deterministically from the image id."""
    def truth(stage: Stage, image_id: str) -> str:
        rng = _rng("truth", seed, stage.value, image_id)
        if stage is Stage.VALIDATION:
            if rng.random() >= invalid_rate:
                return YES
            return f"{NO}:{VALIDATION_REASONS[int(rng.integers(len(VALIDATION_REASONS)))]}"
        if rng.random() >= flag_rate:
            return NONE_FLAG
        return FILTRATION_FLAGS[int(rng.integers(len(FILTRATION_FLAGS)))]
    return truth


def pick_control_images(image_ids: list[str], truth: TruthFn, stage: Stage, *, n: int,
                        seed: int) -> list[dict[str, str]]:
    """``n`` control images with their planted answers: half (at most) that should fail the
    stage, the rest that pass, in a seeded order, so both sides of every worker's balanced
    accuracy are measured."""
    ids = sorted(image_ids,
                 key=lambda i: hashlib.sha256(f"golden|{seed}|{i}".encode()).digest())
    easy = YES if stage is Stage.VALIDATION else NONE_FLAG
    positives = [i for i in ids if truth(stage, i) != easy][: n // 2]
    negatives = [i for i in ids if truth(stage, i) == easy][: n - len(positives)]
    return [{"image_id": i, "answer": truth(stage, i)} for i in positives + negatives]


def planted_boxes(*, seed: int = 0, two_hands: float = 0.3) -> BoxTruthFn:
    """True hands per image, planted from the image id: the gesture hand (labelled with the
    assigned gesture) and, for a share of images, a free hand labelled ``no_gesture``."""
    def truth(image_id: str, gesture: str) -> tuple[list[Box], str]:
        rng = _rng("boxes", seed, image_id)
        boxes = [_hand_box(rng, gesture, left_half=True)]
        if rng.random() < two_hands:
            boxes.append(_hand_box(rng, FREE_HAND_LABEL, left_half=False))
        return boxes, LEADING_HANDS[int(rng.integers(2))]
    return truth


def _hand_box(rng: np.random.Generator, label: str, *, left_half: bool) -> Box:
    w, h = float(rng.uniform(0.05, 0.15)), float(rng.uniform(0.08, 0.2))
    x0 = 0.02 if left_half else 0.52
    x = float(rng.uniform(x0, x0 + 0.46 - w))
    y = float(rng.uniform(0.02, 0.98 - h))
    return Box(x, y, w, h, label)


def annotator_for(worker: SimWorker) -> SimAnnotator:
    """The box-drawing habits of a simulated worker: careful, or sloppy for spammers."""
    if worker.kind == "honest":
        return SimAnnotator(worker.worker_id, jitter=0.05, miss_rate=0.08, label_swap_rate=0.04,
                            wrong_hand_rate=0.08 * (1.0 - worker.accuracy) / 0.1)
    return SimAnnotator(worker.worker_id, jitter=0.15, miss_rate=0.35, label_swap_rate=0.35,
                        wrong_hand_rate=0.4)


def worker_answer(worker: SimWorker, stage: Stage, truth: str, rng: np.random.Generator) -> str:
    """What ``worker`` answers when the right answer is ``truth``."""
    if worker.kind == "always_yes":
        return YES if stage is Stage.VALIDATION else NONE_FLAG
    if worker.kind == "honest" and rng.random() < worker.accuracy:
        return truth
    if worker.kind == "spammer":
        return _random_answer(stage, rng)
    return _wrong_answer(stage, truth, rng)


def _random_answer(stage: Stage, rng: np.random.Generator) -> str:
    if stage is Stage.VALIDATION:
        if rng.random() < 0.5:
            return YES
        return f"{NO}:{VALIDATION_REASONS[int(rng.integers(len(VALIDATION_REASONS)))]}"
    if rng.random() < 0.5:
        return NONE_FLAG
    return FILTRATION_FLAGS[int(rng.integers(len(FILTRATION_FLAGS)))]


def _wrong_answer(stage: Stage, truth: str, rng: np.random.Generator) -> str:
    if stage is Stage.VALIDATION:
        if truth == YES:
            return f"{NO}:{VALIDATION_REASONS[int(rng.integers(len(VALIDATION_REASONS)))]}"
        return YES
    flags = set() if truth == NONE_FLAG else set(truth.split(","))
    flags ^= {FILTRATION_FLAGS[int(rng.integers(len(FILTRATION_FLAGS)))]}  # miss or invent one
    return ",".join(f for f in FILTRATION_FLAGS if f in flags) or NONE_FLAG


class SimulatedCrowd(FileCrowd):
    """Answers every pushed task at once, into the inbox, from a pool of simulated workers."""

    name = "simulated"

    def __init__(self, root: Storage, *, workers: list[SimWorker], truth: TruthFn,
                 seed: int = 0, expert_accuracy: float = 1.0,
                 boxes: BoxTruthFn | None = None) -> None:
        super().__init__(root)
        self.workers = workers
        self.truth = truth
        self.boxes = boxes or planted_boxes(seed=seed)
        self.seed = seed
        self.expert = SimWorker("sim-expert", "honest", expert_accuracy)
        self.labels = load_taxonomy().box_labels

    def push(self, stage: Stage, tasks: list[CrowdTask], *, batch_id: str) -> list[PushedTask]:
        """Answer the tasks and drop the answers as ``inbox/sim-<batch_id>.csv``."""
        if not tasks:
            return []
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        out.writerow(["image_id", "worker_id", "answer", "queue", "stage", "time"])
        now = dt.datetime.now(dt.UTC).isoformat()
        for task in tasks:
            for worker in self._assign(task):
                rng = _rng("answer", self.seed, stage.value, task.image_id, worker.worker_id)
                out.writerow([task.image_id, worker.worker_id, self._answer(stage, task, worker, rng),
                              task.queue.value, stage.value, now])
        self.root.write_bytes(f"{inbox_prefix(stage)}/sim-{batch_id}.csv", buf.getvalue().encode())
        return [PushedTask(t.image_id, t.queue, t.round, t.answers_wanted, f"sim-{batch_id}")
                for t in tasks]

    def _answer(self, stage: Stage, task: CrowdTask, worker: SimWorker,
                rng: np.random.Generator) -> str:
        if stage is not Stage.ANNOTATION:
            return worker_answer(worker, stage, self.truth(stage, task.image_id), rng)
        boxes, hand = self.boxes(task.image_id, task.gesture)
        annotator = (SimAnnotator(worker.worker_id, jitter=0.02, miss_rate=0.0,
                                  label_swap_rate=0.0, wrong_hand_rate=0.0)
                     if worker is self.expert else annotator_for(worker))
        result = simulated_answer(annotator, boxes, hand, labels=self.labels,
                                  width=task.width or 1920, height=task.height or 1080, rng=rng)
        return json.dumps(result)

    def _assign(self, task: CrowdTask) -> list[SimWorker]:
        if task.queue is Queue.REVIEW:
            return [self.expert]
        order = _rng("assign", self.seed, task.image_id).permutation(len(self.workers))
        picked = order[task.asked_before:task.asked_before + task.answers_wanted]
        return [self.workers[i] for i in picked]
