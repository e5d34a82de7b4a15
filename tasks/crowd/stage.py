"""One cycle of a crowd stage over the catalog: pull answers, decide, push what is pending.

The stage state is read from the catalog tables (``images``, ``verdicts``,
``stage_tasks``, ``answers``, ``golden``); each step returns new rows, and the caller
commits them as catalog batches. Everything is recomputed from the tables, so a cycle can
run again at any time (a schedule) and does only what is still pending.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from schemas.annotation import BOXES, AnnotationSettings
from schemas.crowd import AnswerReason, CrowdSettings, Queue, Stage, Verdict
from schemas.tables import ANSWERS, GOLDEN, STAGE_TASKS, VERDICTS
from schemas.taxonomy import DEFAULT_TAXONOMY
from tasks.annotate.consensus import ImageAnnotation, box_rows
from tasks.annotate.label_review import (
    FlagState,
    answered_reviews,
    due_label_reviews,
    label_review_pushes,
    load_flags,
    open_reviews,
)
from tasks.annotate.stage import annotation_consensus, review_annotation
from tasks.catalog import Catalog
from tasks.crowd.answers import (
    SCREENED_COLUMNS,
    AnswerError,
    canonical_answer,
    screen_answer_frame,
)
from tasks.crowd.backends import CrowdBackend, CrowdTask, PushedTask
from tasks.crowd.consensus import aggregate, worker_quality
from tasks.crowd.queue import Decision, ImageState, StagePlan, plan_stage

DECIDING_FIELDS = ["verdict", "reason", "method", "n_answers"]
ANSWER_STATE_COLUMNS = ("answer_id", "stage", "queue", "image_id", "worker_id", "answer",
                        "answered_at", "origin", "status", "reason")


def no_answers() -> pd.DataFrame:
    """An empty table of screened answers."""
    return pd.DataFrame(columns=list(SCREENED_COLUMNS))


@dataclass
class StageTables:
    """The catalog rows one stage works from."""

    stage: Stage
    images: pd.DataFrame  # eligible images: image_id, object_key, gesture
    answers: pd.DataFrame  # every answers row of the stage (ANSWER_STATE_COLUMNS)
    tasks: pd.DataFrame  # every stage_tasks row of the stage
    golden: pd.Series  # image_id -> known answer
    verdicts: pd.DataFrame  # the latest verdict per image of the stage, indexed by image_id
    new_answers: pd.DataFrame = field(default_factory=no_answers)
    flags: FlagState | None = None  # annotation: audit flags and review answer times

    def with_answers(self, rows: pd.DataFrame) -> StageTables:
        """The same state with freshly screened answer rows (``SCREENED_COLUMNS``) added."""
        if rows.empty:
            return self
        merged = pd.concat([self.answers, rows[self.answers.columns]], ignore_index=True)
        new = pd.concat([self.new_answers, rows], ignore_index=True) if len(
            self.new_answers) else rows
        return replace(self, answers=merged, new_answers=new)


def latest_verdicts(catalog: Catalog, stage: Stage) -> pd.DataFrame:
    """The current verdict of every image in ``stage`` (later rows supersede earlier ones)."""
    v = catalog.read_table("verdicts", filters=pc.field("stage") == stage.value).to_pandas()
    v = v.sort_values(["decided_at", "batch_id"], kind="stable")
    return v.drop_duplicates("image_id", keep="last").set_index("image_id")


def eligible_images(catalog: Catalog, stage: Stage) -> pd.DataFrame:
    """Images this stage must decide: all for validation; accepted ones for filtration."""
    images = catalog.read_table("images", columns=["image_id", "object_key", "gesture", "width",
                                                   "height"])
    # first row per image: a root damaged by concurrent runs (before the writer lock) may
    # hold an image twice; `hagrid check --repair` removes the extra row
    df = images.to_pandas().drop_duplicates("image_id", keep="first")
    if stage is Stage.ANNOTATION:
        return images_passing(catalog)
    if stage is Stage.FILTRATION:
        valid = latest_verdicts(catalog, Stage.VALIDATION)
        ok = valid.index[valid["verdict"] == Verdict.ACCEPTED.value]
        df = df[df["image_id"].isin(ok)]
    return df.sort_values("image_id").reset_index(drop=True)


def images_passing(catalog: Catalog) -> pd.DataFrame:
    """Images accepted by validation and not excluded by filtration (for annotation)."""
    clear = latest_verdicts(catalog, Stage.FILTRATION)
    ok = clear.index[clear["verdict"] == Verdict.CLEAR.value]
    df = eligible_images(catalog, Stage.FILTRATION)
    return df[df["image_id"].isin(ok)].reset_index(drop=True)


def load_stage(catalog: Catalog, stage: Stage) -> StageTables:
    """Read the stage's state from the catalog: its rows only, and of ``answers`` only the
    columns a run works with (the ``raw`` answers and details stay on disk)."""
    of_stage = pc.field("stage") == stage.value
    answers = catalog.read_table("answers", columns=list(ANSWER_STATE_COLUMNS),
                                 filters=of_stage).to_pandas()
    tasks = catalog.read_table("stage_tasks", filters=of_stage).to_pandas()
    golden = catalog.read_table("golden", filters=of_stage).to_pandas()
    golden = golden.sort_values("added_at", kind="stable")
    return StageTables(
        stage=stage, images=eligible_images(catalog, stage), answers=answers, tasks=tasks,
        golden=golden.drop_duplicates("image_id", keep="last").set_index("image_id")["answer"],
        verdicts=latest_verdicts(catalog, stage),
        flags=load_flags(catalog) if stage is Stage.ANNOTATION else None)


class RecordedIds:
    """The answer ids a stage has recorded, kept as one Arrow array (a Python set of a
    million ids costs seconds and a hundred MB): ``in`` for a back end's few questions,
    ``among`` for a whole column."""

    def __init__(self, ids: pd.Series) -> None:
        self.ids = pa.array(ids, from_pandas=True).cast(pa.large_string())

    def __contains__(self, answer_id: object) -> bool:
        return isinstance(answer_id, str) and pc.any(pc.equal(self.ids, answer_id)).as_py() is True

    def among(self, ids: pd.Series) -> np.ndarray:
        """Which of ``ids`` are recorded."""
        asked = pa.array(ids, from_pandas=True).cast(pa.large_string())
        return np.asarray(pc.is_in(asked, value_set=self.ids).to_numpy(zero_copy_only=False),
                          dtype=bool)


def pull_answers(backend: CrowdBackend, tables: StageTables, *,
                 taxonomy: str = DEFAULT_TAXONOMY) -> pd.DataFrame:
    """New answers from the back end, each screened into an accepted or rejected row.

    An answer is new when its id is not among the stage's recorded rows, whatever their
    status: every row a stage screens is stored under that stage (a ``wrong_stage`` one
    too), so a rejected answer is recorded once, like an accepted one. ``taxonomy``: whose
    box labels an annotation may use.
    """
    recorded = RecordedIds(tables.answers["answer_id"])
    raw = backend.pull(tables.stage, recorded=recorded)
    fresh = raw.drop_duplicates("answer_id")
    fresh = fresh[~recorded.among(fresh["answer_id"])]
    ok = tables.answers[tables.answers["status"] == "accepted"]
    if tables.flags is not None:  # a reviewer may answer a new review of an image again
        reopened = open_reviews(tables.tasks, tables.flags.reviewed_at)
        ok = ok[~((ok["queue"] == Queue.REVIEW.value) & ok["image_id"].isin(reopened))]
    return screen_answer_frame(fresh, stage=tables.stage,
                               pushed=tables.tasks[["queue", "image_id"]],
                               answered=ok[["queue", "image_id", "worker_id"]],
                               taxonomy=taxonomy)


def crowd_answers(tables: StageTables) -> pd.DataFrame:
    """Accepted crowd-queue answers as a long table (image_id, worker_id, answer)."""
    a = tables.answers
    a = a[(a["status"] == "accepted") & (a["queue"] == Queue.CROWD.value)]
    return a[["image_id", "worker_id", "answer"]].reset_index(drop=True)


@dataclass
class StageDecision:
    """What ``decide`` found: the plan, the worker quality table, and for the annotation
    stage the aggregate boxes of every image that has any (crowd or review)."""

    plan: StagePlan
    quality: pd.DataFrame
    annotations: dict[str, ImageAnnotation] = field(default_factory=dict)
    method: str = ""
    label_reviews: list[str] = field(default_factory=list)  # flagged images sent to review


def decide(tables: StageTables, *, settings: CrowdSettings, method: str | None = None,
           annotation: AnnotationSettings | None = None) -> StageDecision:
    """Worker quality, crowd verdicts and the plan for every eligible image."""
    answers = crowd_answers(tables)
    states = image_states(tables)
    if tables.stage is Stage.ANNOTATION:
        consensus = annotation_consensus(answers, settings=annotation or AnnotationSettings())
        plan = plan_stage(tables.stage, states, consensus.verdicts, settings=settings,
                          method=consensus.method)
        reviewed = {s.image_id: review_annotation(s.review_answer) for s in states
                    if s.review_answer is not None}
        return StageDecision(plan, consensus.quality, {**consensus.annotations, **reviewed},
                             consensus.method, plan_label_reviews(tables, plan))
    method = method or settings.method
    quality = worker_quality(tables.stage, answers, tables.golden, settings=settings)
    verdicts = aggregate(tables.stage, answers, tables.golden, quality, settings=settings,
                         method=method)
    plan = plan_stage(tables.stage, states, {v.image_id: v for v in verdicts},
                      settings=settings, method=method)
    return StageDecision(plan, quality, method=method)


def plan_label_reviews(tables: StageTables, plan: StagePlan) -> list[str]:
    """Add a review task for every flagged image that is due
    (``tasks.annotate.label_review``) and not already pushed by ``plan``; the images sent."""
    if tables.flags is None:
        return []
    answered = answered_reviews(tables.flags.reviewed_at, tables.new_answers)
    eligible = set(tables.images["image_id"]) - {p.image_id for p in plan.pushes}
    due = due_label_reviews(tables.flags.issues, tables.tasks, answered, eligible=eligible)
    if due:
        plan.pushes.extend(label_review_pushes(due, tables.tasks))
        plan.status["label_review_sent"] += len(due)
    return due


def image_states(tables: StageTables) -> list[ImageState]:
    """Per eligible image: rounds asked, answers received, review status."""
    t, a = tables.tasks, tables.answers
    crowd_t, review_t = t[t["queue"] == Queue.CROWD.value], t[t["queue"] == Queue.REVIEW.value]
    asked = crowd_t.groupby("image_id")["answers_wanted"].sum().to_dict()
    rounds = crowd_t.groupby("image_id")["round"].max().to_dict()
    # a rejected answer used up an assignment too, unless it belongs to another stage
    came = (a["queue"] == Queue.CROWD.value) & (a["reason"] != AnswerReason.WRONG_STAGE.value)
    received = a[came].groupby("image_id").size().to_dict()
    in_review = set(review_t["image_id"])
    reviews = a[(a["queue"] == Queue.REVIEW.value) & (a["status"] == "accepted")]
    # the latest recorded one: a flagged image's new review replaces an earlier review
    review_answer = reviews.drop_duplicates("image_id", keep="last").set_index(
        "image_id")["answer"].to_dict()
    n_reviews = reviews.groupby("image_id").size().to_dict()
    golden = tables.golden.to_dict()
    decided = set(tables.verdicts.index)
    return [ImageState(image_id=i, golden_answer=golden.get(i),
                       crowd_asked=int(asked.get(i, 0)), crowd_round=int(rounds.get(i, 0)),
                       crowd_received=int(received.get(i, 0)), in_review=i in in_review,
                       review_answer=review_answer.get(i), reviews=int(n_reviews.get(i, 0)),
                       decided=i in decided)
            for i in tables.images["image_id"]]


def changed_decisions(decisions: list[Decision], current: pd.DataFrame) -> list[Decision]:
    """The decisions that differ from the stored verdicts (the rest need no new row)."""
    stored = {i: (v, None if pd.isna(r) else r, m, int(n)) for i, v, r, m, n in zip(
        current.index, current["verdict"], current["reason"], current["method"],
        current["n_answers"], strict=True)}
    return [d for d in decisions
            if stored.get(d.image_id) != (d.verdict.value, d.reason, d.method, d.n_answers)]


def crowd_tasks(plan: StagePlan, tables: StageTables,
                preannotations: dict[str, str] | None = None,
                notes: dict[str, str] | None = None) -> list[CrowdTask]:
    """The plan's push requests with what a back end needs to show the image.

    ``preannotations``: image_id -> canonical annotation answer to show as a starting point;
    ``notes``: image_id -> a note for the reviewer (what an audit suspects).
    """
    images = tables.images[tables.images["image_id"].isin({p.image_id for p in plan.pushes})]
    info = {row.image_id: row for row in images.itertuples(index=False)}
    pre, note = preannotations or {}, notes or {}
    return [CrowdTask(image_id=p.image_id, queue=p.queue, round=p.round,
                      answers_wanted=p.answers_wanted, asked_before=p.asked_before,
                      is_golden=p.is_golden, object_key=str(info[p.image_id].object_key),
                      gesture=str(info[p.image_id].gesture), width=int(info[p.image_id].width),
                      height=int(info[p.image_id].height), preannotation=pre.get(p.image_id),
                      note=note.get(p.image_id) if p.queue is Queue.REVIEW else None)
            for p in plan.pushes]


def latest_preannotations(catalog: Catalog) -> dict[str, str]:
    """image_id -> the latest pre-annotation answer (boxes to correct rather than draw)."""
    pre = catalog.read_table("preannotations").to_pandas()
    pre = pre.sort_values("added_at", kind="stable").drop_duplicates("image_id", keep="last")
    return dict(zip(pre["image_id"], pre["answer"]))


def boxes_table(decisions: list[Decision], annotations: dict[str, ImageAnnotation], *,
                batch_id: str, now: dt.datetime) -> pa.Table:
    """The aggregate boxes of the annotation decisions as a ``boxes`` batch."""
    rows = [row for d in decisions if d.image_id in annotations
            for row in box_rows(d.image_id, annotations[d.image_id], method=d.method,
                                batch_id=batch_id, decided_at=now)]
    return pa.Table.from_pylist(rows, schema=BOXES)


def answer_table(rows: pd.DataFrame, *, batch_id: str, now: dt.datetime) -> pa.Table:
    """Screened answer rows (``SCREENED_COLUMNS``) as an ``answers`` batch."""
    batch = rows.assign(batch_id=batch_id, recorded_at=now)
    return pa.Table.from_pandas(batch[ANSWERS.names], schema=ANSWERS, preserve_index=False)


def verdict_table(stage: Stage, decisions: list[Decision], *, batch_id: str,
                  now: dt.datetime) -> pa.Table:
    """Decisions as a ``verdicts`` batch."""
    return pa.Table.from_pylist(
        [{"stage": stage.value, "image_id": d.image_id, "verdict": d.verdict.value,
          "reason": d.reason, "confidence": d.confidence, "n_answers": d.n_answers,
          "method": d.method, "batch_id": batch_id, "decided_at": now} for d in decisions],
        schema=VERDICTS)


def task_table(stage: Stage, pushed: list[PushedTask], golden: set[str], *, backend: str,
               batch_id: str, now: dt.datetime) -> pa.Table:
    """Pushed tasks as a ``stage_tasks`` batch."""
    return pa.Table.from_pylist(
        [{"stage": stage.value, "image_id": p.image_id, "queue": p.queue.value,
          "round": p.round, "answers_wanted": p.answers_wanted,
          "is_golden": p.image_id in golden, "backend": backend,
          "external_id": p.external_id, "batch_id": batch_id, "pushed_at": now}
         for p in pushed], schema=STAGE_TASKS)


def golden_table(stage: Stage, rows: list[dict[str, Any]], *, known_images: set[str],
                 source: str, batch_id: str, now: dt.datetime) -> tuple[pa.Table, list[str]]:
    """Control answers as a ``golden`` batch, and a message for each row that was refused."""
    good, problems = [], []
    for n, row in enumerate(rows, 1):
        image_id = str(row.get("image_id") or "").strip()
        value = row.get("answer")
        if stage is Stage.VALIDATION and row.get("reason"):
            value = {"valid": value, "reason": row.get("reason")}
        try:
            answer = canonical_answer(stage, value)
        except AnswerError as exc:
            problems.append(f"row {n}: {exc.reason}: {exc.detail}")
            continue
        if image_id not in known_images:
            problems.append(f"row {n}: unknown_image: {image_id!r} is not in the catalog")
            continue
        good.append({"stage": stage.value, "image_id": image_id, "answer": answer,
                     "source": source, "batch_id": batch_id, "added_at": now})
    return pa.Table.from_pylist(good, schema=GOLDEN), problems
