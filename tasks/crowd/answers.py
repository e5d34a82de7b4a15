"""Raw crowd answers -> canonical answers, or a recorded rejection. No I/O.

Every back end (Label Studio, answer files, the simulated crowd) hands over raw answers: a
table with ``RAW_COLUMNS`` (``raw_frame`` builds one from ``RawAnswer`` records; the file back
end builds it column by column). ``screen_answer_frame`` turns each row into exactly one
``answers`` row: accepted with its canonical form, or rejected with an ``AnswerReason``.
Nothing is dropped and nothing here raises on bad input.

Worker ids are opaque: two ids are the same worker when they are equal after removing
surrounding whitespace (``W1`` and ``w1`` are two workers). ``clean_ids`` is that rule.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

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
from schemas.tables import ANSWERS
from schemas.taxonomy import DEFAULT_TAXONOMY, load_taxonomy
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


def canonical_answer(stage: Stage, value: Any, *, taxonomy: str = DEFAULT_TAXONOMY) -> str:
    """The canonical string of an answer in ``stage``; ``AnswerError`` when it is malformed.

    ``taxonomy``: whose box labels an annotation answer may use.
    """
    if stage is Stage.VALIDATION:
        return _canonical_validation(value)
    if stage is Stage.ANNOTATION:
        return _canonical_annotation(value, taxonomy=taxonomy)
    return _canonical_filtration(value)


def _canonical_annotation(value: Any, *, taxonomy: str) -> str:
    """Boxes + leading hand: a Label Studio result list, or a HaGRID-style entry (or JSON)."""
    labels = set(load_taxonomy(taxonomy).box_labels)
    if isinstance(value, str):
        try:
            value = parse_json(value)
        except ValueError as exc:
            raise AnswerError(AnswerReason.UNREADABLE, f"annotation is not JSON: {exc}") from exc
    try:
        if isinstance(value, dict):
            return answer_json(from_hagrid(value, labels=labels))
        return answer_json(from_labelstudio(value, labels=labels))
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


# ---- JSON from outside -------------------------------------------------------------------

MAX_JSON_DEPTH = 32  # answers nest a few levels; a thousand exhaust Python's recursion limit
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the arrays and objects of JSON ``text`` nest deeper than ``limit`` (strings
    skipped; a cheap count rules out most texts at once)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for token in _JSON_TOKENS.finditer(text):
        char = text[token.start()]
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def parse_json(text: str) -> Any:
    """``json.loads`` that refuses nesting deeper than ``MAX_JSON_DEPTH`` with a
    ``ValueError`` (instead of the ``RecursionError`` no caller expects)."""
    if json_too_deep(text):
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text)


# ---- screening ----------------------------------------------------------------------------

RAW_COLUMNS = tuple(f.name for f in fields(RawAnswer))  # a raw answer table; raw as JSON text
SCREENED_COLUMNS = tuple(n for n in ANSWERS.names if n not in ("batch_id", "recorded_at"))
QUEUES = frozenset(q.value for q in Queue)


def raw_json(raw: Any) -> str:
    """The ``raw`` column: an answer as received, as JSON text."""
    return json.dumps(raw, sort_keys=True, default=str)


def raw_frame(raws: Iterable[RawAnswer]) -> pd.DataFrame:
    """``RawAnswer`` records as a raw answer table (``RAW_COLUMNS``)."""
    rows = [(r.answer_id, r.stage, r.queue, r.image_id, r.worker_id, r.value, r.answered_at,
             r.origin, raw_json(r.raw or {"value": r.value}), r.skipped, r.unreadable)
            for r in raws]
    frame = pd.DataFrame(rows, columns=list(RAW_COLUMNS))
    frame["value"] = frame["value"].astype(object)
    frame["skipped"] = frame["skipped"].astype(bool)
    return frame


def clean_ids(values: pd.Series) -> pd.Series:
    """Image or worker ids as compared and stored: as given, without surrounding whitespace;
    empty or missing: NaN. Case is kept: a platform's ids are opaque."""
    text = values.astype("str").str.strip()
    return text.mask(text.str.len() == 0)


def screen_answers(raws: Iterable[RawAnswer], *, stage: Stage, pushed: set[tuple[str, str]],
                   answered: set[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """``screen_answer_frame`` over ``RawAnswer`` records, as one dict per answers row.

    ``pushed`` holds the (queue, image_id) pairs sent out in this stage; ``answered`` the
    (queue, image_id, worker_id) triples already accepted.
    """
    rows = screen_answer_frame(
        raw_frame(raws), stage=stage,
        pushed=pd.DataFrame(sorted(pushed), columns=["queue", "image_id"]),
        answered=pd.DataFrame(sorted(answered), columns=["queue", "image_id", "worker_id"]))
    return pa.Table.from_pandas(rows, preserve_index=False).to_pylist()


def screen_answer_frame(raw: pd.DataFrame, *, stage: Stage, pushed: pd.DataFrame,
                        answered: pd.DataFrame,
                        taxonomy: str = DEFAULT_TAXONOMY) -> pd.DataFrame:
    """One ``answers`` row (``SCREENED_COLUMNS``) per raw answer, accepted or rejected.

    The first failing check gives the reason: unreadable, skipped, wrong stage, no image or
    worker, unknown queue, image not pushed (``pushed``: queue, image_id), then a duplicate
    (``answered``: queue, image_id, worker_id already accepted, or an earlier accepted row of
    the same worker here), then the answer itself. A worker whose first answer was malformed
    may still answer properly. ``taxonomy``: whose box labels an annotation may use.
    """
    if raw.empty:
        return pd.DataFrame(columns=list(SCREENED_COLUMNS))
    raw = raw.reset_index(drop=True)
    image, worker = clean_ids(raw["image_id"]), clean_ids(raw["worker_id"])
    queue = raw["queue"].astype("str")
    reason = np.full(len(raw), None, dtype=object)
    detail = np.full(len(raw), None, dtype=object)
    answer = np.full(len(raw), None, dtype=object)
    pending = _identity_checks(raw, stage=stage, image=image, worker=worker, queue=queue,
                               pushed=pushed, reason=reason, detail=detail)
    idx = np.flatnonzero(pending)
    canon, why, why_detail = _canonical_column(stage, raw["value"].iloc[idx],
                                               taxonomy=taxonomy)
    keys, known = _row_keys([queue.iloc[idx], image.iloc[idx], worker.iloc[idx]],
                            [answered[c] for c in ("queue", "image_id", "worker_id")])
    earlier = np.isin(keys, known)
    fine = pd.isna(why) & ~earlier
    duplicate = earlier | (pd.Series(fine).groupby(keys).cumsum().to_numpy() - fine > 0)
    reason[idx], detail[idx], answer[idx] = why, why_detail, canon
    dup = idx[duplicate]
    reason[dup], answer[dup] = AnswerReason.DUPLICATE_ANSWER.value, None
    detail[dup] = ("worker " + worker.iloc[dup] + " already answered image "
                   + image.iloc[dup]).to_numpy(dtype=object)
    return pd.DataFrame({
        "answer_id": raw["answer_id"], "stage": stage.value, "queue": queue,
        "image_id": image, "worker_id": worker, "answer": answer,
        "answered_at": pd.to_datetime(raw["answered_at"], utc=True),
        "origin": raw["origin"], "status": np.where(pd.isna(reason), "accepted", "rejected"),
        "reason": reason, "detail": detail, "raw": raw["raw"]},
        columns=list(SCREENED_COLUMNS)).reset_index(drop=True)


def _identity_checks(raw: pd.DataFrame, *, stage: Stage, image: pd.Series, worker: pd.Series,
                     queue: pd.Series, pushed: pd.DataFrame, reason: np.ndarray,
                     detail: np.ndarray) -> np.ndarray:
    """Fill ``reason`` and ``detail`` for the rows the first failing check rejects; the mask of
    rows that passed every check."""
    pending = np.ones(len(raw), dtype=bool)  # narrowed in place by each check in turn
    # (which rows fail, why, detail of the failing rows), in order; lazy, so that each
    # check only sees the rows every earlier one let through
    checks: list[tuple[Any, AnswerReason, Any]] = [
        (lambda: raw["unreadable"].notna(), AnswerReason.UNREADABLE,
         lambda m: raw["unreadable"][m]),
        (lambda: raw["skipped"].astype(bool), AnswerReason.SKIPPED,
         lambda m: "the annotator skipped the task"),
        (lambda: raw["stage"] != stage.value, AnswerReason.WRONG_STAGE,
         lambda m: "answer for stage '" + raw["stage"][m].astype("str") + "'"),
        (lambda: image.isna() | worker.isna(), AnswerReason.MISSING_FIELD,
         lambda m: "no image_id or no worker_id"),
        (lambda: ~queue.isin(QUEUES), AnswerReason.UNKNOWN_CHOICE,
         lambda m: "unknown queue '" + queue[m] + "'"),
        (lambda: ~_in_pairs(queue, image, pushed, pending), AnswerReason.UNKNOWN_IMAGE,
         lambda m: "image " + image[m] + " was not sent to the " + queue[m] + " queue"),
    ]
    for failing, why, text in checks:
        hit = pending & np.asarray(failing(), dtype=bool)
        if hit.any():
            reason[hit] = why.value
            found = text(hit)
            detail[hit] = found if isinstance(found, str) else found.to_numpy(dtype=object)
            pending &= ~hit
    return pending


def _in_pairs(queue: pd.Series, image: pd.Series, pairs: pd.DataFrame,
              rows: np.ndarray) -> np.ndarray:
    """Whether (queue, image) of each of ``rows`` is a (queue, image_id) row of ``pairs``
    (False elsewhere)."""
    out = np.zeros(len(queue), dtype=bool)
    idx = np.flatnonzero(rows)
    keys, known = _row_keys([queue.iloc[idx], image.iloc[idx]],
                            [pairs["queue"], pairs["image_id"]])
    out[idx] = np.isin(keys, known)
    return out


def _row_keys(left: list[pd.Series], right: list[pd.Series]) -> tuple[np.ndarray, np.ndarray]:
    """One integer per row of two tables with the same key columns: equal rows, equal keys
    (columns factorized together, no Python string per value)."""
    lkeys, rkeys = np.zeros(len(left[0]), np.int64), np.zeros(len(right[0]), np.int64)
    for lcol, rcol in zip(left, right, strict=True):
        both = pd.concat([lcol.astype("str"), rcol.astype("str")], ignore_index=True)
        codes, distinct = pd.factorize(both)  # -1 for missing: + 1 below
        lkeys = lkeys * (len(distinct) + 1) + codes[:len(lcol)] + 1
        rkeys = rkeys * (len(distinct) + 1) + codes[len(lcol):] + 1
    return lkeys, rkeys


def _canonical_column(stage: Stage, values: pd.Series, *, taxonomy: str,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``canonical_answer`` of each value: (answer, reason, detail), None where n/a. Answers
    repeat a lot: each distinct text is checked once."""
    try:
        codes, distinct = pd.factorize(values)
    except TypeError:  # lists or mappings
        return _canonical_each(stage, values.to_numpy(dtype=object), taxonomy=taxonomy)
    checked = np.empty((len(distinct) + 1, 3), dtype=object)
    for i, value in enumerate([*distinct, None]):  # code -1 (missing): the last row
        checked[i] = _try_canonical(stage, value, taxonomy=taxonomy)
    return checked[codes, 0], checked[codes, 1], checked[codes, 2]


def _canonical_each(stage: Stage, values: np.ndarray, *, taxonomy: str,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_canonical_column`` one value at a time; validation ``{"valid", "reason"}`` pairs
    repeat too: each distinct pair is checked once."""
    answer = np.full(len(values), None, dtype=object)
    reason = np.full(len(values), None, dtype=object)
    detail = np.full(len(values), None, dtype=object)
    seen: dict[Any, tuple[str | None, str | None, str | None]] = {}
    for i, value in enumerate(values):
        key = _memo_key(value)
        got = seen.get(key) if key is not None else None
        if got is None:
            got = _try_canonical(stage, value, taxonomy=taxonomy)
            if key is not None:
                seen[key] = got
        answer[i], reason[i], detail[i] = got
    return answer, reason, detail


def _memo_key(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.keys() == {"valid", "reason"} and all(
            v is None or isinstance(v, str) for v in value.values()):
        return ("valid", value["valid"], value["reason"])
    return None


def _try_canonical(stage: Stage, value: Any, *,
                   taxonomy: str) -> tuple[str | None, str | None, str | None]:
    try:
        return (canonical_answer(stage, None if _is_missing(value) else value,
                                 taxonomy=taxonomy), None, None)
    except AnswerError as exc:
        return None, str(exc.reason), exc.detail


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
