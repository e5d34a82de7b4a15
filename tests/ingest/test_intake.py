"""Submissions tables (CSV / JSONL / Parquet) and planning each input's early reason."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.reasons import Reason
from schemas.taxonomy import load_taxonomy
from tasks.ingest.intake import parse_submissions, plan_inputs
from tasks.storage import SourceError

ROWS: list[dict] = [
    {"file": "a.jpg", "user_id": "w1", "gesture": "like", "submitted_at": "2026-01-01T10:00:00"},
    {"file": "b.jpg", "user_id": 17, "gesture": "palm", "submitted_at": "2026-01-01T10:01:00"},
]


def _csv(rows: list[dict]) -> bytes:
    lines = ["file,user_id,gesture,submitted_at"]
    lines += [f"{r['file']},{r['user_id']},{r['gesture']},{r['submitted_at']}" for r in rows]
    return ("\n".join(lines) + "\n").encode()


def _parquet(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{**r, "user_id": str(r["user_id"])} for r in rows]), buf)
    return buf.getvalue()


@pytest.mark.parametrize("name, data", [
    ("s.csv", _csv(ROWS)),
    ("s.jsonl", "\n".join(json.dumps(r) for r in ROWS).encode()),
    ("s.parquet", _parquet(ROWS)),
])
def test_every_format_parses_to_the_same_strings(name, data):
    table = parse_submissions(data, name=name)
    assert table.column("file").to_pylist() == ["a.jpg", "b.jpg"]
    assert table.column("user_id").to_pylist() == ["w1", "17"]
    assert table.column("submitted_at").to_pylist()[0].startswith("2026-01-01T10:00")


def test_submitted_at_is_optional():
    table = parse_submissions(b"file,user_id,gesture\na.jpg,w1,like\n", name="t.csv")
    assert table.column("submitted_at").to_pylist() == [None]


@pytest.mark.parametrize("name, data", [
    ("t.csv", b"file,gesture\na.jpg,like\n"),
    ("t.jsonl", b'{"file": "a.jpg", "user_id": "w1", "gesture": "like"}\n{not json'),
    ("t.parquet", b"PAR1 this is not parquet"),
    ("t.xlsx", b"whatever"),
])
def test_malformed_tables_raise_a_source_error(name, data):
    with pytest.raises(SourceError):
        parse_submissions(data, name=name)


def test_plan_gives_early_reasons_and_finds_unlisted_files():
    table = parse_submissions(_csv([
        {"file": "a.jpg", "user_id": "w1", "gesture": "like", "submitted_at": "t"},
        {"file": "../etc/passwd", "user_id": "w1", "gesture": "like", "submitted_at": "t"},
        {"file": "gone.jpg", "user_id": "w2", "gesture": "like", "submitted_at": "t"},
        {"file": "b.jpg", "user_id": "w2", "gesture": "thumbs_sideways", "submitted_at": "t"},
        {"file": "c.jpg", "user_id": "", "gesture": "like", "submitted_at": "t"},
        {"file": "a.jpg", "user_id": "w1", "gesture": "like", "submitted_at": "t"},
    ]), name="s.csv")
    keys = ["a.jpg", "b.jpg", "c.jpg", "extra/d.PNG", "notes.txt", "s.csv"]
    plan = plan_inputs(table, source="/src", source_keys=keys, taxonomy=load_taxonomy())
    reasons = [(p.file, p.reason) for p in plan]
    assert reasons == [
        ("a.jpg", None), ("../etc/passwd", Reason.INVALID_PATH), ("gone.jpg", Reason.MISSING_FILE),
        ("b.jpg", Reason.UNKNOWN_GESTURE), ("c.jpg", Reason.INVALID_METADATA), ("a.jpg", None),
        ("extra/d.PNG", Reason.MISSING_METADATA),
    ]
    ids = [p.submission_id for p in plan]
    assert len(set(ids)) == len(ids), "a repeated identical row is still its own input"
    again = plan_inputs(table, source="/src", source_keys=keys, taxonomy=load_taxonomy())
    assert [p.submission_id for p in again] == ids, "ids are stable across runs"
