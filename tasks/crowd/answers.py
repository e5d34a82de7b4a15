"""Raw crowd answers -> canonical answers, or a recorded rejection. No I/O.

Every back end (Label Studio, answer files, the simulated crowd) hands over ``RawAnswer``
records; ``screen_answers`` turns each into exactly one ``answers`` row: accepted with its
canonical form, or rejected with an ``AnswerReason``. Nothing is dropped and nothing here
raises on bad input.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from schemas.crowd import (
    FILTRATION_FLAGS,
    NO,
    NONE_FLAG,
    VALIDATION_REASONS,
    YES,
    AnswerReason,
    Queue,
    Stage,
)
from schemas.taxonomy import load_taxonomy
from tasks.annotate.boxes import AnnotationError, answer_json, from_hagrid, from_labelstudio


@dataclass(frozen=True)
class RawAnswer:
    """One answer as a back end received it, before any check.

    ``value`` is what the worker chose: a canonical string, a ``{"valid", "reason"}`` or
    ``{"flags"}`` mapping, or a list of flags. ``answer_id`` must be stable for the same
    answer on every pull (the back end's own id), so a rerun records nothing twice.
    """

    answer_id: str
    stage: str
    queue: str
    image_id: str | None
    worker_id: str | None
    value: Any
    answered_at: dt.datetime | None
    origin: str
    raw: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    unreadable: str | None = None  # why the table or payload it came in could not be parsed


class AnswerError(ValueError):
    """A raw answer that cannot be used; ``reason`` is recorded with it."""

    def __init__(self, reason: StrEnum, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def canonical_answer(stage: Stage, value: Any) -> str:
    """The canonical string of an answer in ``stage``; ``AnswerError`` when it is malformed."""
    if stage is Stage.VALIDATION:
        return _canonical_validation(value)
    if stage is Stage.ANNOTATION:
        return _canonical_annotation(value)
    return _canonical_filtration(value)


def _canonical_annotation(value: Any) -> str:
    """Boxes + leading hand: a Label Studio result list, or a HaGRID-style entry (or JSON)."""
    labels = set(load_taxonomy().box_labels)
    try:
        if isinstance(value, str):
            value = json.loads(value)
        if isinstance(value, dict):
            return answer_json(from_hagrid(value, labels=labels))
        return answer_json(from_labelstudio(value, labels=labels))
    except json.JSONDecodeError as exc:
        raise AnswerError(AnswerReason.UNREADABLE, f"annotation is not JSON: {exc}") from exc
    except AnnotationError as exc:
        raise AnswerError(exc.reason, exc.detail) from exc


def _canonical_validation(value: Any) -> str:
    if isinstance(value, dict):
        valid, reason = value.get("valid"), value.get("reason")
    elif isinstance(value, str) and ":" in value:
        valid, reason = value.split(":", 1)
    else:
        valid, reason = value, None
    valid = _one_choice(valid, "valid")
    if valid == YES:
        return YES
    if valid != NO:
        raise AnswerError(AnswerReason.UNKNOWN_CHOICE, f"valid must be yes or no, got {valid!r}")
    reason = _one_choice(reason, "reason")
    if reason not in VALIDATION_REASONS:
        raise AnswerError(AnswerReason.UNKNOWN_CHOICE, f"unknown reason {reason!r}")
    return f"{NO}:{reason}"


def _one_choice(value: Any, name: str) -> str:
    if isinstance(value, (list, tuple)):
        if len(value) > 1:
            raise AnswerError(AnswerReason.CONTRADICTORY, f"{name}: several values {value!r}")
        value = value[0] if value else None
    if value is None or (isinstance(value, str) and not value.strip()):
        raise AnswerError(AnswerReason.MISSING_FIELD, f"no {name}")
    if not isinstance(value, str):
        raise AnswerError(AnswerReason.UNKNOWN_CHOICE, f"{name} is not text: {value!r}")
    return value.strip().lower()


def _canonical_filtration(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("flags")
    if isinstance(value, str):
        value = [v for v in value.replace(";", ",").split(",") if v.strip()]
    if value is None or not isinstance(value, (list, tuple)) or not value:
        raise AnswerError(AnswerReason.MISSING_FIELD, "no flags (answer none when none apply)")
    if not all(isinstance(v, str) for v in value):
        raise AnswerError(AnswerReason.UNKNOWN_CHOICE, f"flags are not text: {value!r}")
    flags = {v.strip().lower() for v in value}
    unknown = flags - set(FILTRATION_FLAGS) - {NONE_FLAG}
    if unknown:
        raise AnswerError(AnswerReason.UNKNOWN_CHOICE, f"unknown flags {sorted(unknown)}")
    if NONE_FLAG in flags:
        if len(flags) > 1:
            raise AnswerError(AnswerReason.CONTRADICTORY, f"none together with {sorted(flags)}")
        return NONE_FLAG
    return ",".join(f for f in FILTRATION_FLAGS if f in flags)


def answer_flags(answer: str) -> frozenset[str]:
    """The flags of a canonical filtration answer (empty for ``none``)."""
    return frozenset() if answer == NONE_FLAG else frozenset(answer.split(","))


def is_yes(answer: str) -> bool:
    """Whether a canonical validation answer says the task was followed."""
    return answer == YES


def screen_answers(raws: Iterable[RawAnswer], *, stage: Stage, pushed: set[tuple[str, str]],
                   answered: set[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """One ``answers`` row per raw answer, each accepted or rejected with a reason.

    ``pushed`` holds the (queue, image_id) pairs sent out in this stage; ``answered`` the
    (queue, image_id, worker_id) triples already accepted. Later duplicates from the same
    worker are rejected, whichever arrives in the same call or came before.
    """
    seen = set(answered)
    rows = []
    for raw in raws:
        row = _base_row(raw)
        try:
            key = _check_identity(raw, stage=stage, pushed=pushed, seen=seen)
            row["answer"] = canonical_answer(stage, raw.value)
            seen.add(key)
        except AnswerError as exc:
            row.update(status="rejected", reason=str(exc.reason), detail=exc.detail)
        rows.append(row)
    return rows


def _check_identity(raw: RawAnswer, *, stage: Stage, pushed: set[tuple[str, str]],
                    seen: set[tuple[str, str, str]]) -> tuple[str, str, str]:
    if raw.unreadable is not None:
        raise AnswerError(AnswerReason.UNREADABLE, raw.unreadable)
    if raw.skipped:
        raise AnswerError(AnswerReason.SKIPPED, "the annotator skipped the task")
    if raw.stage != stage.value:
        raise AnswerError(AnswerReason.WRONG_STAGE, f"answer for stage {raw.stage!r}")
    if not raw.image_id or not raw.worker_id:
        raise AnswerError(AnswerReason.MISSING_FIELD, "no image_id or no worker_id")
    if raw.queue not in {q.value for q in Queue}:
        raise AnswerError(AnswerReason.UNKNOWN_CHOICE, f"unknown queue {raw.queue!r}")
    if (raw.queue, raw.image_id) not in pushed:
        raise AnswerError(AnswerReason.UNKNOWN_IMAGE,
                          f"image {raw.image_id} was not sent to the {raw.queue} queue")
    key = (raw.queue, raw.image_id, raw.worker_id)
    if key in seen:
        raise AnswerError(AnswerReason.DUPLICATE_ANSWER,
                          f"worker {raw.worker_id} already answered image {raw.image_id}")
    return key


def _base_row(raw: RawAnswer) -> dict[str, Any]:
    return {
        "answer_id": raw.answer_id, "stage": raw.stage, "queue": raw.queue,
        "image_id": raw.image_id, "worker_id": raw.worker_id, "answer": None,
        "answered_at": raw.answered_at, "origin": raw.origin, "status": "accepted",
        "reason": None, "detail": None,
        "raw": json.dumps(raw.raw or {"value": raw.value}, sort_keys=True, default=str),
    }
