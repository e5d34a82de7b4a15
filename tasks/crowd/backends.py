"""The crowd adapter: one interface, several back ends.

A back end ``push``es tasks (an image that needs answers) and ``pull``s the answers given
so far as ``RawAnswer`` records. This module has the interface and the file back end, for
campaigns run on another crowd platform: pending tasks are exported as a CSV under
``crowd/<stage>/outbox/`` of the dataset root, and answer tables (CSV or JSONL) dropped in
``crowd/<stage>/inbox/`` are imported. An answer table that cannot be read at all (not
UTF-8, not CSV or JSON, JSON nested too deep, required columns missing) is moved to
``crowd/<stage>/quarantine/`` with a ``<name>.reason.json`` saying why, and the run goes on
with the other tables. The simulated crowd (``tasks.simulation.crowd``) writes its answers
into the same inbox; Label Studio lives in ``annotation_ui``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Container
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from schemas.crowd import Queue, Stage
from tasks.crowd.answers import RAW_COLUMNS, RawAnswer, parse_json, raw_json
from tasks.storage import Storage

EXPORT_COLUMNS = ("task_id", "stage", "queue", "round", "image_id", "image_uri", "gesture",
                  "answers_wanted", "width", "height", "preannotation", "note")
ANSWER_FILE_COLUMNS = ("image_id", "worker_id", "answer", "reason", "queue", "stage", "time")
REQUIRED_ANSWER_COLUMNS = ("image_id", "worker_id", "answer")
REASON_SUFFIX = ".reason.json"  # next to a quarantined answer table: why it is there


class AnswerTableError(ValueError):
    """An answer table that cannot be read at all (rather than a bad row in it)."""


@dataclass(frozen=True)
class CrowdTask:
    """One image to show to ``answers_wanted`` more people (or to an expert)."""

    image_id: str
    queue: Queue
    round: int
    answers_wanted: int
    asked_before: int  # answers asked for this image in earlier rounds
    is_golden: bool  # never shown to workers: control tasks look like any other
    object_key: str  # the image under the dataset root
    gesture: str  # the gesture the photographer was asked to show
    width: int = 0  # oriented size in pixels
    height: int = 0
    preannotation: str | None = None  # annotation stage: boxes to start from (answer JSON)
    note: str | None = None  # for the reviewer: what an audit suspects of the labels


@dataclass(frozen=True)
class PushedTask:
    """A task as the back end accepted it (the answers it will collect may differ)."""

    image_id: str
    queue: Queue
    round: int
    answers_wanted: int
    external_id: str | None


class CrowdBackend(Protocol):
    """Where crowd work goes and where its answers come from."""

    name: str

    def push(self, stage: Stage, tasks: list[CrowdTask], *, batch_id: str) -> list[PushedTask]:
        """Send ``tasks``; idempotent for a task that is already out."""
        ...

    def pull(self, stage: Stage, *, recorded: Container[str] = frozenset()) -> pd.DataFrame:
        """Every answer available now, as a raw answer table (``RAW_COLUMNS``).

        ``recorded``: answer ids already in the catalog. A back end may leave them out; the
        caller drops any that come back anyway.
        """
        ...


def inbox_prefix(stage: Stage) -> str:
    """Where answer files for ``stage`` are dropped, under the dataset root."""
    return f"crowd/{stage.value}/inbox"


def outbox_prefix(stage: Stage) -> str:
    """Where exported task tables for ``stage`` are written, under the dataset root."""
    return f"crowd/{stage.value}/outbox"


def quarantine_prefix(stage: Stage) -> str:
    """Where answer tables of ``stage`` that could not be read are moved, with the reason."""
    return f"crowd/{stage.value}/quarantine"


def table_id(data: bytes) -> str:
    """An answer table's id: the start of its sha256 (the same content is the same table)."""
    return hashlib.sha256(data).hexdigest()[:16]


def file_answer_id(table: str, row: int | str) -> str:
    """The answer id of row ``row`` (0-based; ``unreadable`` for the whole table) of a table."""
    return f"file:{table}:{row}"


class FileCrowd:
    """Tasks out as a CSV table, answers in as CSV/JSONL tables, all under the dataset root."""

    name = "file"

    def __init__(self, root: Storage) -> None:
        self.root = root

    def push(self, stage: Stage, tasks: list[CrowdTask], *, batch_id: str) -> list[PushedTask]:
        """Write the tasks to ``crowd/<stage>/outbox/<batch_id>.csv`` (no control marks)."""
        if not tasks:
            return []
        key = f"{outbox_prefix(stage)}/{batch_id}.csv"
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for t in tasks:
            writer.writerow({"task_id": f"{t.queue.value}:{t.image_id}:{t.round}",
                             "stage": stage.value, "queue": t.queue.value, "round": t.round,
                             "image_id": t.image_id, "image_uri": self.image_uri(t.object_key),
                             "gesture": t.gesture, "answers_wanted": t.answers_wanted,
                             "width": t.width, "height": t.height,
                             "preannotation": t.preannotation or "", "note": t.note or ""})
        self.root.write_bytes(key, buf.getvalue().encode())
        return [PushedTask(t.image_id, t.queue, t.round, t.answers_wanted, key) for t in tasks]

    def image_uri(self, object_key: str) -> str:
        """Where a person (or another platform) can fetch the image."""
        return f"{self.root.uri.rstrip('/')}/{object_key}"

    def import_file(self, stage: Stage, name: str, data: bytes) -> str:
        """Drop an answer table into the inbox (named by its content, so twice is once)."""
        suffix = ".jsonl" if _is_jsonl(name) else ".csv"
        key = f"{inbox_prefix(stage)}/{table_id(data)}{suffix}"
        if not self.root.exists(key):
            self.root.write_bytes(key, data)
        return key

    def pull(self, stage: Stage, *, recorded: Container[str] = frozenset()) -> pd.DataFrame:
        """Every row of every answer table in the inbox, as raw answers.

        A table whose first row is ``recorded`` is skipped unread (a table's rows are all
        recorded in the same batch). A table that cannot be read is quarantined and comes
        back as one ``unreadable`` answer that says where it went and why.
        """
        frames = []
        for key in sorted(self.root.list(inbox_prefix(stage))):
            data = self.root.read_bytes(key)
            if file_answer_id(table_id(data), 0) in recorded:
                continue
            name = key.rsplit("/", 1)[1]
            origin = f"{self.name}:{name}"
            try:
                frames.append(answer_table_frame(data, name=name, stage=stage, origin=origin))
            except AnswerTableError as exc:
                where = self.quarantine(stage, key, data, reason=str(exc))
                frames.append(unreadable_table(
                    data, stage=stage, origin=origin,
                    why=f"answer table {name} quarantined as {where}: {exc}"))
        if len(frames) > 1:
            return pd.concat(frames, ignore_index=True)
        return frames[0] if frames else pd.DataFrame(columns=list(RAW_COLUMNS))

    def quarantine(self, stage: Stage, key: str, data: bytes, *, reason: str) -> str:
        """Move an inbox table to the stage's quarantine, with ``<name>.reason.json``."""
        target = f"{quarantine_prefix(stage)}/{key.rsplit('/', 1)[1]}"
        note = {"file": key, "reason": reason,
                "quarantined_at": dt.datetime.now(dt.UTC).isoformat()}
        self.root.write_bytes(target, data)
        self.root.write_bytes(target + REASON_SUFFIX, json.dumps(note, indent=1).encode())
        self.root.delete(key)
        return target


def quarantined_tables(root: Storage, stage: Stage, *,
                       since: dt.datetime | None = None) -> dict[str, dict[str, str]]:
    """Quarantined answer tables of ``stage`` (moved there at ``since`` or later):
    quarantine key -> its reason note (``file``, ``reason``, ``quarantined_at``)."""
    out = {}
    for key in sorted(root.list(quarantine_prefix(stage))):
        if not key.endswith(REASON_SUFFIX):
            continue
        try:
            note = json.loads(root.read_bytes(key))
            when = dt.datetime.fromisoformat(note["quarantined_at"])
        except (ValueError, TypeError, KeyError):
            continue  # a quarantined table that happens to be named like a note
        if since is None or when >= since:
            out[key.removesuffix(REASON_SUFFIX)] = note
    return out


def answer_table_frame(data: bytes, *, name: str, stage: Stage, origin: str) -> pd.DataFrame:
    """The rows of a CSV or JSONL answer table as raw answers (``RAW_COLUMNS``).

    ``AnswerTableError`` when the table cannot be read at all: not UTF-8, not CSV or JSON
    Lines, JSON nested deeper than ``answers.MAX_JSON_DEPTH``, or without the columns
    ``REQUIRED_ANSWER_COLUMNS``. Answer ids follow the content, whatever the file's name.
    """
    rows, raw = _jsonl_rows(data) if _is_jsonl(name) else _csv_rows(data)
    return _raw_answers(rows, raw, table=table_id(data), stage=stage, origin=origin)


def unreadable_table(data: bytes, *, stage: Stage, origin: str, why: str) -> pd.DataFrame:
    """A table that could not be read, as one raw answer the screening rejects."""
    return pd.DataFrame([{
        "answer_id": file_answer_id(table_id(data), "unreadable"), "stage": stage.value,
        "queue": Queue.CROWD.value, "image_id": None, "worker_id": None, "value": None,
        "answered_at": None, "origin": origin, "raw": raw_json({"unreadable": why}),
        "skipped": False, "unreadable": why}], columns=list(RAW_COLUMNS))


def read_answer_table(data: bytes, *, name: str, stage: Stage, origin: str) -> list[RawAnswer]:
    """Rows of a CSV/JSONL answer table as ``RawAnswer`` records; a table that cannot be
    read is one unreadable answer."""
    try:
        frame = answer_table_frame(data, name=name, stage=stage, origin=origin)
    except AnswerTableError as exc:
        frame = unreadable_table(data, stage=stage, origin=origin,
                                 why=f"unreadable answer table {name}: {exc}")
    frame = frame.astype(object).where(frame.notna(), None)
    return [RawAnswer(**{**row, "raw": json.loads(row["raw"])})
            for row in frame.to_dict("records")]


def _is_jsonl(name: str) -> bool:
    return name.lower().endswith((".jsonl", ".json"))


def _csv_rows(data: bytes) -> tuple[pd.DataFrame, pd.Series]:
    """Every column as text, and each row as JSON; Arrow's reader for a regular table, the
    ``csv`` module (the reference) for anything it refuses."""
    try:
        rows = _arrow_csv(data)
    except (pa.ArrowInvalid, csv.Error, UnicodeDecodeError):
        rows = _python_csv(data)
    missing = [c for c in REQUIRED_ANSWER_COLUMNS if c not in rows.columns]
    if missing:
        raise AnswerTableError(f"a CSV answer table needs the columns {REQUIRED_ANSWER_COLUMNS}"
                               f" (missing: {', '.join(missing)})")
    return rows, _rows_as_json(rows)


def _rows_as_json(rows: pd.DataFrame, *, chunk: int = 65536) -> pd.Series:
    """Each row as a JSON object, a chunk at a time (one JSON text of a whole large table,
    split into a million Python strings, held gigabytes at once)."""
    parts = [pa.array(rows.iloc[i:i + chunk].to_json(orient="records", lines=True)
                      .rstrip("\n").split("\n"), type=pa.large_string())
             for i in range(0, len(rows), chunk)]
    return pa.chunked_array(parts, type=pa.large_string()).to_pandas()


def _header(data: bytes) -> list[str]:
    first = data.split(b"\n", 1)[0].decode("utf-8-sig")
    return next(csv.reader([first]), [])


def _arrow_csv(data: bytes) -> pd.DataFrame:
    names = _header(data)
    if not names or len(set(names)) != len(names):
        raise pa.ArrowInvalid("no header, or a repeated column name")
    table = pa_csv.read_csv(
        io.BytesIO(data), parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                              strings_can_be_null=False))
    if table.schema.names != names:
        raise pa.ArrowInvalid("the header spans lines")
    return table.to_pandas()


def _python_csv(data: bytes) -> pd.DataFrame:
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
        header = next(reader, None)
        rows = [r for r in reader if r]
    except UnicodeDecodeError as exc:
        raise AnswerTableError(f"not UTF-8: {exc}") from exc
    except csv.Error as exc:
        raise AnswerTableError(f"not a CSV table: {exc}") from exc
    if not header:
        raise AnswerTableError("empty: no header row")
    width = len(header)
    frame = pd.DataFrame({name: [r[i] if i < len(r) else None for r in rows]
                          for i, name in enumerate(header)}, dtype=object)
    if any(len(r) > width for r in rows):
        frame["_extra"] = [r[width:] or None for r in rows]
    return frame


def _jsonl_rows(data: bytes) -> tuple[pd.DataFrame, pd.Series]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnswerTableError(f"not UTF-8: {exc}") from exc
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                obj = parse_json(line)
            except ValueError as exc:
                raise AnswerTableError(f"line {n}: {exc}") from exc
            rows.append(obj if isinstance(obj, dict) else {"_line": n, "_value": obj})
    if not any(set(REQUIRED_ANSWER_COLUMNS) <= row.keys() for row in rows):
        raise AnswerTableError(f"no JSON object with the fields {REQUIRED_ANSWER_COLUMNS}")
    frame = pd.DataFrame({c: [_text(r.get(c)) if c in ("image_id", "worker_id", "queue",
                                                       "stage", "reason", "time")
                              else r.get(c) for r in rows]
                          for c in ANSWER_FILE_COLUMNS}, dtype=object)
    return frame, pd.Series([raw_json(r) for r in rows], dtype="str")


def _raw_answers(rows: pd.DataFrame, raw: pd.Series, *, table: str, stage: Stage,
                 origin: str) -> pd.DataFrame:
    """Raw answers from the columns of an answer table (a validation ``answer`` with a
    ``reason`` becomes ``{"valid", "reason"}``)."""
    n = len(rows)
    column = {c: rows[c] if c in rows else pd.Series([None] * n, dtype=object)
              for c in ANSWER_FILE_COLUMNS}
    value = _values(column["answer"])
    if stage is Stage.VALIDATION:
        reason = column["reason"].to_numpy(dtype=object)
        given = np.flatnonzero([isinstance(r, str) and r != "" for r in reason])
        pair = [i for i in given if isinstance(value[i], str)]
        value[pair] = [{"valid": value[i], "reason": reason[i]} for i in pair]
    times = column["time"]
    return pd.DataFrame({
        "answer_id": pc.binary_join_element_wise(
            file_answer_id(table, ""), pc.cast(pa.array(np.arange(n)), pa.string()),
            "").to_pandas(),
        "stage": _vocabulary(column["stage"], default=stage.value),
        "queue": _vocabulary(column["queue"], default=Queue.CROWD.value),
        "image_id": column["image_id"], "worker_id": column["worker_id"], "value": value,
        "answered_at": times.map({t: _time(t) for t in times.unique()}),
        "origin": origin, "raw": raw, "skipped": False, "unreadable": None},
        columns=list(RAW_COLUMNS))


def _values(answers: pd.Series) -> np.ndarray:
    """The answers as Python objects; repeated texts share one object (a table of 875k
    answers holds a few dozen distinct ones)."""
    try:
        codes, distinct = pd.factorize(answers)
    except TypeError:  # lists or mappings (JSON Lines): as they are
        return answers.to_numpy(dtype=object).copy()
    return np.asarray([*distinct, None], dtype=object)[codes]  # code -1: missing


def _vocabulary(values: pd.Series, *, default: str) -> pd.Series:
    """A stage or queue name as our vocabulary writes it (lower case); ``default`` if empty."""
    text = values.astype("str").str.strip().str.lower()
    return text.mask(text.isna() | (text == ""), default)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _time(value: Any) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)
