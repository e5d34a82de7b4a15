"""A simulated crowd for the demo, the tests and the benchmarks.

Workers have set accuracies; some are spammers who answer at random, and one always gives
the answer that lets an image through (``yes`` in validation, ``none`` in filtration).
The truth it answers from is what the generator drew (``GeneratorTruth``): a catalog image
is traced to the file it was ingested from (``submissions``: source, file -> image_id) and
that file's line of ``<source>/truth.jsonl``: its validation answer (a drawn break of the
mining rules, or ``yes``), its filtration flags (a drawn inscription; children and nudity are
planted flags, marked so in the truth), and its true boxes and leading hand. Nothing is
re-derived from image ids. Images whose source has no generator truth (a real campaign's
photos, an import) are not answered: they wait for a real crowd.

``planted_truth`` plants answers per image id; it is only for benchmarks of the aggregation
on answer tables without photos, never for the crowd back end.

Its answers are written as an answer table into the file back end's inbox and imported by
the same ``pull`` as any other answer file: there is no side door into the catalog.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc

from schemas.annotation import LEADING_HANDS
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
from tasks.catalog import Catalog
from tasks.crowd.backends import CrowdTask, FileCrowd, PushedTask, inbox_prefix
from tasks.simulation.annotators import SimAnnotator, simulated_answer
from tasks.storage import Storage, open_storage

TruthFn = Callable[[Stage, str], str]
TRUTH_FILE = "truth.jsonl"  # beside the photos of a generated batch (tasks.simulation.generator)
MAX_TRUTH_BYTES = 2_000_000_000


@dataclass(frozen=True)
class ImageTruth:
    """What the generator drew in one catalog image, and the answers that are right for it."""

    file: str
    validation: str  # yes | no:<reason>
    filtration: str  # none | flags, comma-joined
    boxes: tuple[Box, ...]  # the gesture hand first
    leading_hand: str
    planted_flags: tuple[str, ...] = ()


class GeneratorTruth:
    """The generator's truth per catalog image (``from_catalog``), or built directly."""

    def __init__(self, images: Mapping[str, ImageTruth]) -> None:
        self.images = dict(images)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.images

    def __len__(self) -> int:
        return len(self.images)

    def answer(self, stage: Stage, image_id: str) -> str:
        """The right answer of ``stage`` for an image (``KeyError`` when it has no truth)."""
        truth = self.images[image_id]
        return truth.validation if stage is Stage.VALIDATION else truth.filtration

    def boxes(self, image_id: str) -> tuple[list[Box], str]:
        """The true boxes and leading hand of an image (``KeyError`` when it has no truth)."""
        truth = self.images[image_id]
        return list(truth.boxes), truth.leading_hand

    @classmethod
    def from_catalog(cls, catalog: Catalog, *,
                     endpoint_url: str | None = None) -> GeneratorTruth:
        """Trace every accepted submission to ``<source>/truth.jsonl``, line ``file``.

        Sources without a truth file contribute nothing; a truth file that cannot be parsed
        raises ``ValueError`` naming it.
        """
        subs = catalog.read_table("submissions", columns=["source", "file", "image_id"],
                                  filters=pc.field("outcome") == "accepted").to_pandas()
        images: dict[str, ImageTruth] = {}
        for source, rows in subs.dropna(subset=["image_id"]).groupby("source"):
            records = read_truth_file(open_storage(str(source), endpoint_url=endpoint_url))
            for file, image_id in zip(rows["file"], rows["image_id"], strict=True):
                record = records.get(str(file))
                if record is not None:
                    images[str(image_id)] = image_truth(record)
        return cls(images)


def read_truth_file(source: Storage) -> dict[str, dict[str, Any]]:
    """``file`` -> truth record of a source's ``truth.jsonl`` (empty when there is none)."""
    if not source.exists(TRUTH_FILE):
        return {}
    try:
        text = source.read_input(TRUTH_FILE, max_bytes=MAX_TRUTH_BYTES).decode("utf-8")
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        return {str(r["file"]): r for r in records}
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ValueError(f"{source.uri}/{TRUTH_FILE} is not a generator truth file: "
                         f"{exc}") from None


def image_truth(record: Mapping[str, Any]) -> ImageTruth:
    """An ``ImageTruth`` from one ``schemas.simulation.TruthRecord``."""
    boxes = tuple(Box(float(x), float(y), float(w), float(h), str(label))
                  for (x, y, w, h), label in zip(record["bboxes"], record["labels"],
                                                 strict=True))
    return ImageTruth(file=str(record["file"]), validation=str(record["validation"]),
                      filtration=str(record["filtration"]), boxes=boxes,
                      leading_hand=str(record.get("leading_hand") or LEADING_HANDS[0]),
                      planted_flags=tuple(record.get("planted_flags") or ()))


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
    """Answers planted per (stage, image id): for aggregation benchmarks on answer tables
    without photos only (the crowd back end answers from ``GeneratorTruth``)."""
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
    """Answers every pushed task at once, into the inbox, from a pool of simulated workers
    who look at what the generator drew (``truth``). Tasks of images without generator
    truth are not pushed: they wait for a real crowd (``unanswerable`` counts them)."""

    name = "simulated"

    def __init__(self, root: Storage, *, workers: list[SimWorker], truth: GeneratorTruth,
                 seed: int = 0, expert_accuracy: float = 1.0,
                 taxonomy: str | None = None) -> None:
        super().__init__(root)
        self.workers = workers
        self.truth = truth
        self.seed = seed
        self.expert = SimWorker("sim-expert", "honest", expert_accuracy)
        self.labels = (load_taxonomy(taxonomy) if taxonomy else load_taxonomy()).box_labels
        self.unanswerable: set[str] = set()

    def push(self, stage: Stage, tasks: list[CrowdTask], *, batch_id: str) -> list[PushedTask]:
        """Answer the tasks and drop the answers as ``inbox/sim-<batch_id>.csv``."""
        known = [t for t in tasks if t.image_id in self.truth]
        self.unanswerable |= {t.image_id for t in tasks if t.image_id not in self.truth}
        if not known:
            return []
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        out.writerow(["image_id", "worker_id", "answer", "queue", "stage", "time"])
        now = dt.datetime.now(dt.UTC).isoformat()
        for task in known:
            for worker in self._assign(task):
                rng = _rng("answer", self.seed, stage.value, task.image_id, worker.worker_id)
                out.writerow([task.image_id, worker.worker_id, self._answer(stage, task, worker, rng),
                              task.queue.value, stage.value, now])
        self.root.write_bytes(f"{inbox_prefix(stage)}/sim-{batch_id}.csv", buf.getvalue().encode())
        return [PushedTask(t.image_id, t.queue, t.round, t.answers_wanted, f"sim-{batch_id}")
                for t in known]

    def _answer(self, stage: Stage, task: CrowdTask, worker: SimWorker,
                rng: np.random.Generator) -> str:
        if stage is not Stage.ANNOTATION:
            return worker_answer(worker, stage, self.truth.answer(stage, task.image_id), rng)
        boxes, hand = self.truth.boxes(task.image_id)
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
