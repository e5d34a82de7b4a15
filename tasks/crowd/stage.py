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

import pandas as pd
import pyarrow as pa

from schemas.annotation import BOXES, AnnotationSettings
from schemas.crowd import CrowdSettings, Queue, Stage, Verdict
from schemas.tables import ANSWERS, GOLDEN, STAGE_TASKS, VERDICTS
from tasks.annotate.consensus import ImageAnnotation, box_rows
from tasks.annotate.stage import annotation_consensus, review_annotation
from tasks.catalog import Catalog
from tasks.crowd.answers import AnswerError, canonical_answer, screen_answers
from tasks.crowd.backends import CrowdBackend, CrowdTask, PushedTask
from tasks.crowd.consensus import aggregate, worker_quality
from tasks.crowd.queue import Decision, ImageState, StagePlan, plan_stage

DECIDING_FIELDS = ["verdict", "reason", "method", "n_answers"]


@dataclass
class StageTables:
    """The catalog rows one stage works from."""

    stage: Stage
    images: pd.DataFrame  # eligible images: image_id, object_key, gesture
    answers: pd.DataFrame  # every answers row of the stage
    tasks: pd.DataFrame  # every stage_tasks row of the stage
    golden: pd.Series  # image_id -> known answer
    verdicts: pd.DataFrame  # the latest verdict per image of the stage, indexed by image_id
    new_answers: list[dict[str, Any]] = field(default_factory=list)

    def with_answers(self, rows: list[dict[str, Any]]) -> StageTables:
        """The same state with freshly screened answer rows added."""
        if not rows:
            return self
        merged = pd.concat([self.answers, pd.DataFrame(rows)], ignore_index=True)
        return replace(self, answers=merged, new_answers=self.new_answers + rows)


def latest_verdicts(catalog: Catalog, stage: Stage) -> pd.DataFrame:
    """The current verdict of every image in ``stage`` (later rows supersede earlier ones)."""
    v = catalog.read_table("verdicts").to_pandas()
    v = v[v["stage"] == stage.value]
    v = v.sort_values(["decided_at", "batch_id"], kind="stable")
    return v.drop_duplicates("image_id", keep="last").set_index("image_id")


def eligible_images(catalog: Catalog, stage: Stage) -> pd.DataFrame:
    """Images this stage must decide: all for validation; accepted ones for filtration."""
    images = catalog.read_table("images", columns=["image_id", "object_key", "gesture", "width",
                                                   "height"])
    df = images.to_pandas()
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
    """Read the stage's state from the catalog."""
    answers = catalog.read_table("answers").to_pandas()
    tasks = catalog.read_table("stage_tasks").to_pandas()
    golden = catalog.read_table("golden").to_pandas()
    golden = golden[golden["stage"] == stage.value].sort_values("added_at", kind="stable")
    return StageTables(
        stage=stage, images=eligible_images(catalog, stage),
        answers=answers[answers["stage"] == stage.value].reset_index(drop=True),
        tasks=tasks[tasks["stage"] == stage.value].reset_index(drop=True),
        golden=golden.drop_duplicates("image_id", keep="last").set_index("image_id")["answer"],
        verdicts=latest_verdicts(catalog, stage))


def pull_answers(backend: CrowdBackend, tables: StageTables) -> list[dict[str, Any]]:
    """New answers from the back end, each screened into an accepted or rejected row."""
    known = set(tables.answers["answer_id"])
    fresh, seen = [], set()
    for raw in backend.pull(tables.stage):
        if raw.answer_id not in known and raw.answer_id not in seen:
            seen.add(raw.answer_id)
            fresh.append(raw)
    pushed = set(zip(tables.tasks["queue"], tables.tasks["image_id"]))
    ok = tables.answers[tables.answers["status"] == "accepted"]
    answered = set(zip(ok["queue"], ok["image_id"], ok["worker_id"]))
    return screen_answers(fresh, stage=tables.stage, pushed=pushed, answered=answered)


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
                             consensus.method)
    method = method or settings.method
    quality = worker_quality(tables.stage, answers, tables.golden, settings=settings)
    verdicts = aggregate(tables.stage, answers, tables.golden, quality, settings=settings,
                         method=method)
    plan = plan_stage(tables.stage, states, {v.image_id: v for v in verdicts},
                      settings=settings, method=method)
    return StageDecision(plan, quality, method=method)


def image_states(tables: StageTables) -> list[ImageState]:
    """Per eligible image: rounds asked, answers received, review status."""
    t, a = tables.tasks, tables.answers
    crowd_t, review_t = t[t["queue"] == Queue.CROWD.value], t[t["queue"] == Queue.REVIEW.value]
    asked = crowd_t.groupby("image_id")["answers_wanted"].sum()
    rounds = crowd_t.groupby("image_id")["round"].max()
    received = a[a["queue"] == Queue.CROWD.value].groupby("image_id").size()
    in_review = set(review_t["image_id"])
    reviews = a[(a["queue"] == Queue.REVIEW.value) & (a["status"] == "accepted")]
    review_answer = reviews.sort_values("answered_at", kind="stable").drop_duplicates(
        "image_id").set_index("image_id")["answer"]
    decided = set(tables.verdicts.index)
    return [ImageState(image_id=i, golden_answer=tables.golden.get(i),
                       crowd_asked=int(asked.get(i, 0)), crowd_round=int(rounds.get(i, 0)),
                       crowd_received=int(received.get(i, 0)), in_review=i in in_review,
                       review_answer=review_answer.get(i), decided=i in decided)
            for i in tables.images["image_id"]]


def changed_decisions(decisions: list[Decision], current: pd.DataFrame) -> list[Decision]:
    """The decisions that differ from the stored verdicts (the rest need no new row)."""
    out = []
    for d in decisions:
        if d.image_id in current.index:
            row = current.loc[d.image_id]
            stored = [row["verdict"], row["reason"], row["method"], int(row["n_answers"])]
            reason = None if pd.isna(stored[1]) else stored[1]
            if [stored[0], reason, stored[2], stored[3]] == [d.verdict.value, d.reason,
                                                              d.method, d.n_answers]:
                continue
        out.append(d)
    return out


def crowd_tasks(plan: StagePlan, tables: StageTables,
                preannotations: dict[str, str] | None = None) -> list[CrowdTask]:
    """The plan's push requests with what a back end needs to show the image.

    ``preannotations``: image_id -> canonical annotation answer to show as a starting point.
    """
    info = tables.images.set_index("image_id")
    pre = preannotations or {}
    return [CrowdTask(image_id=p.image_id, queue=p.queue, round=p.round,
                      answers_wanted=p.answers_wanted, asked_before=p.asked_before,
                      is_golden=p.is_golden, object_key=str(info.at[p.image_id, "object_key"]),
                      gesture=str(info.at[p.image_id, "gesture"]),
                      width=int(info.at[p.image_id, "width"]),
                      height=int(info.at[p.image_id, "height"]),
                      preannotation=pre.get(p.image_id))
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


def answer_table(rows: list[dict[str, Any]], *, batch_id: str, now: dt.datetime) -> pa.Table:
    """Screened answer rows as an ``answers`` batch."""
    return pa.Table.from_pylist([{**r, "batch_id": batch_id, "recorded_at": now} for r in rows],
                                schema=ANSWERS)


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
