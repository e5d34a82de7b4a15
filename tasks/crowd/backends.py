"""The crowd adapter: one interface, several back ends.

A back end ``push``es tasks (an image that needs answers) and ``pull``s the answers given
so far as ``RawAnswer`` records. This module has the interface and the file back end, for
campaigns run on another crowd platform: pending tasks are exported as a CSV under
``crowd/<stage>/outbox/`` of the dataset root, and answer tables (CSV or JSONL) dropped in
``crowd/<stage>/inbox/`` are imported. The simulated crowd (``tasks.simulation.crowd``)
writes its answers into the same inbox; Label Studio lives in ``annotation_ui``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.crowd import Queue, Stage
from tasks.crowd.answers import RawAnswer
from tasks.storage import Storage

EXPORT_COLUMNS = ("task_id", "stage", "queue", "round", "image_id", "image_uri", "gesture",
                  "answers_wanted", "width", "height", "preannotation")
ANSWER_FILE_COLUMNS = ("image_id", "worker_id", "answer", "reason", "queue", "stage", "time")


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

    def pull(self, stage: Stage) -> list[RawAnswer]:
        """Every answer available now (already recorded ones are skipped by the caller)."""
        ...


def inbox_prefix(stage: Stage) -> str:
    """Where answer files for ``stage`` are dropped, under the dataset root."""
    return f"crowd/{stage.value}/inbox"


def outbox_prefix(stage: Stage) -> str:
    """Where exported task tables for ``stage`` are written, under the dataset root."""
    return f"crowd/{stage.value}/outbox"


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
                             "preannotation": t.preannotation or ""})
        self.root.write_bytes(key, buf.getvalue().encode())
        return [PushedTask(t.image_id, t.queue, t.round, t.answers_wanted, key) for t in tasks]

    def image_uri(self, object_key: str) -> str:
        """Where a person (or another platform) can fetch the image."""
        return f"{self.root.uri.rstrip('/')}/{object_key}"

    def import_file(self, stage: Stage, name: str, data: bytes) -> str:
        """Drop an answer table into the inbox (named by its content, so twice is once)."""
        digest = hashlib.sha256(data).hexdigest()[:16]
        suffix = ".jsonl" if name.lower().endswith((".jsonl", ".json")) else ".csv"
        key = f"{inbox_prefix(stage)}/{digest}{suffix}"
        if not self.root.exists(key):
            self.root.write_bytes(key, data)
        return key

    def pull(self, stage: Stage) -> list[RawAnswer]:
        """Every row of every answer table in the inbox, as raw answers."""
        out: list[RawAnswer] = []
        for key in sorted(self.root.list(inbox_prefix(stage))):
            out += read_answer_table(self.root.read_bytes(key), name=key, stage=stage,
                                     origin=f"{self.name}:{key.rsplit('/', 1)[1]}")
        return out


def read_answer_table(data: bytes, *, name: str, stage: Stage, origin: str) -> list[RawAnswer]:
    """Rows of a CSV/JSONL answer table; a table that cannot be parsed is one bad answer."""
    file_id = hashlib.sha256(data).hexdigest()[:16]
    try:
        rows = _parse_rows(data, jsonl=name.lower().endswith((".jsonl", ".json")))
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        return [RawAnswer(answer_id=f"file:{file_id}:unreadable", stage=stage.value,
                          queue=Queue.CROWD.value, image_id=None, worker_id=None, value=None,
                          answered_at=None, origin=origin, raw={"file": name},
                          unreadable=f"unreadable answer table {name}: {exc}")]
    return [_raw_from_row(row, answer_id=f"file:{file_id}:{i}", stage=stage, origin=origin)
            for i, row in enumerate(rows)]


def _parse_rows(data: bytes, *, jsonl: bool) -> list[dict[str, Any]]:
    text = data.decode("utf-8-sig")
    if jsonl:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                obj = json.loads(line)
                rows.append(obj if isinstance(obj, dict) else {"_line": n, "_value": obj})
        return rows
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "answer" not in reader.fieldnames:
        raise ValueError(f"a CSV answer table needs the columns {ANSWER_FILE_COLUMNS}")
    return [dict(r) for r in reader]


def _raw_from_row(row: dict[str, Any], *, answer_id: str, stage: Stage,
                  origin: str) -> RawAnswer:
    answer, reason = row.get("answer"), row.get("reason")
    if stage is Stage.VALIDATION and reason not in (None, "") and isinstance(answer, str):
        value: Any = {"valid": answer, "reason": reason}
    else:
        value = answer
    return RawAnswer(
        answer_id=answer_id, stage=str(row.get("stage") or stage.value),
        queue=str(row.get("queue") or Queue.CROWD.value),
        image_id=_text(row.get("image_id")), worker_id=_text(row.get("worker_id")),
        value=value, answered_at=_time(row.get("time")), origin=origin, raw=row)


def _text(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value).strip()


def _time(value: Any) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)
