"""Reading a submissions table and planning what each input needs (no image I/O here)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemas.reasons import Reason
from schemas.tables import SUBMISSION_TABLE_OPTIONAL, SUBMISSION_TABLE_REQUIRED
from schemas.taxonomy import Taxonomy
from tasks.storage import SourceError, safe_key

REQUIRED_COLUMNS = SUBMISSION_TABLE_REQUIRED
OPTIONAL_COLUMNS = SUBMISSION_TABLE_OPTIONAL
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".gif", ".bmp", ".tif", ".tiff"}
)


@dataclass(frozen=True)
class PlannedInput:
    """One input of a run: a table row, or a file of the source that no row names."""

    submission_id: str
    file: str
    row_index: int | None
    user_id: str | None
    gesture: str | None
    submitted_at: str | None
    reason: Reason | None = None  # decided before reading the file, if any
    detail: str | None = None

    @property
    def needs_read(self) -> bool:
        """False when there is no file to read (missing, or a path outside the source)."""
        return self.reason not in (Reason.MISSING_FILE, Reason.INVALID_PATH)


def parse_submissions(data: bytes, *, name: str) -> pa.Table:
    """Parse a CSV, JSONL or Parquet submissions table; ``SourceError`` when malformed."""
    suffix = PurePosixPath(name.lower()).suffix
    try:
        if suffix == ".csv":
            check_unique_columns(_csv_header(data), name=name)
            types = {c: pa.string() for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
            table = pacsv.read_csv(
                io.BytesIO(data), convert_options=pacsv.ConvertOptions(column_types=types)
            )
        elif suffix in (".jsonl", ".ndjson", ".json"):
            table = _read_jsonl(data)
        elif suffix in (".parquet", ".pq"):
            check_unique_columns(pq.read_schema(io.BytesIO(data)).names, name=name)
            table = pq.read_table(io.BytesIO(data))
        else:
            raise SourceError(f"{name}: unknown table format {suffix!r} (csv, jsonl, parquet)")
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"{name}: malformed submissions table: {exc}") from exc
    except RecursionError as exc:  # JSON nested deeper than the parser's stack allows
        raise SourceError(f"{name}: malformed submissions table: nested too deeply") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise SourceError(f"{name}: submissions table lacks column(s) {missing}")
    return _as_strings(table)


def _csv_header(data: bytes) -> list[str]:
    """The column names of a CSV table (its first record, quoted newlines included)."""
    text = io.StringIO(data.decode("utf-8-sig", errors="replace"), newline="")
    return next(csv.reader(text), [])


def check_unique_columns(names: list[str], *, name: str) -> None:
    """``SourceError`` naming a column the pipeline reads that the table has more than once."""
    counts = Counter(names)
    twice = [c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if counts[c] > 1]
    if twice:
        raise SourceError(f"{name}: column {twice[0]!r} appears {counts[twice[0]]} times "
                          "in the submissions table")


def _read_jsonl(data: bytes) -> pa.Table:
    """One JSON object per line; values of the known columns become strings."""
    rows = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise pa.ArrowInvalid(f"line {number}: {exc}") from exc
        if not isinstance(obj, dict):
            raise pa.ArrowInvalid(f"line {number}: not a JSON object")
        rows.append(obj)
    names = [c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if any(c in r for r in rows)]
    return pa.table({c: pa.array([_text(r.get(c)) for r in rows], pa.string()) for c in names})


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _as_strings(table: pa.Table) -> pa.Table:
    cols = {}
    for name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
        if name not in table.column_names:
            cols[name] = pa.nulls(table.num_rows, pa.string())
            continue
        col = table[name]
        if pa.types.is_timestamp(col.type):
            col = pc.strftime(col, format="%Y-%m-%dT%H:%M:%S")
        cols[name] = col.cast(pa.string())
    return pa.table(cols)


def submission_id(source: str, fields: tuple[str | None, ...], occurrence: int) -> str:
    """Stable identity of an input: the same row of the same source gets the same id."""
    text = "\x1f".join([source, *("" if f is None else f for f in fields), str(occurrence)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def plan_inputs(table: pa.Table, *, source: str, source_keys: list[str],
                taxonomy: Taxonomy) -> list[PlannedInput]:
    """Every input in table order, then the unlisted image files, with early reasons."""
    present = set(source_keys)
    seen: Counter[tuple[str | None, ...]] = Counter()
    planned, listed = [], set()
    rows = table.to_pylist()
    for index, row in enumerate(rows):
        fields = (row["file"], row["user_id"], row["gesture"], row["submitted_at"])
        seen[fields] += 1
        sid = submission_id(source, fields, seen[fields])
        item = _plan_row(row, index=index, sid=sid, present=present, taxonomy=taxonomy)
        listed.add(item.file)
        planned.append(item)
    for key in source_keys:
        if key not in listed and PurePosixPath(key.lower()).suffix in IMAGE_EXTENSIONS:
            sid = submission_id(source, (key, None, None, None), 1)
            planned.append(PlannedInput(sid, key, None, None, None, None,
                                        Reason.MISSING_METADATA, "no row in the submissions table"))
    return planned


def _plan_row(row: dict, *, index: int, sid: str, present: set[str],
              taxonomy: Taxonomy) -> PlannedInput:
    raw_file = (row["file"] or "").strip()
    user, gesture = (row["user_id"] or "").strip() or None, (row["gesture"] or "").strip() or None
    base = {"submission_id": sid, "row_index": index, "user_id": user, "gesture": gesture,
            "submitted_at": row["submitted_at"]}
    try:
        key = safe_key(raw_file)
    except ValueError as exc:
        return PlannedInput(file=raw_file, reason=Reason.INVALID_PATH, detail=str(exc), **base)
    if key not in present:
        return PlannedInput(file=key, reason=Reason.MISSING_FILE,
                            detail="the row's file is not in the source", **base)
    if user is None or gesture is None:
        return PlannedInput(file=key, reason=Reason.INVALID_METADATA,
                            detail="empty user_id or gesture", **base)
    if not taxonomy.is_gesture(gesture):
        return PlannedInput(file=key, reason=Reason.UNKNOWN_GESTURE,
                            detail=f"{gesture!r} is not in taxonomy {taxonomy.name}", **base)
    return PlannedInput(file=key, **base)


def nested_root_folder(source_uri: str, root_uri: str) -> str | None:
    """The root's folder relative to the source when the root lies inside it, else None.

    Its files (objects, catalog) are the pipeline's own, never inputs: listing them as source
    files would re-ingest every stored object on the next run. A root that is the source
    folder itself leaves nothing to tell apart: ``SourceError``.
    """
    source, root = source_uri.rstrip("/"), root_uri.rstrip("/")
    if root == source:
        raise SourceError(f"the root is the source folder itself: {root}")
    if not root.startswith(source + "/"):
        return None
    return root[len(source) + 1:]


def without_folder(keys: list[str], folder: str | None) -> list[str]:
    """``keys`` less those under ``folder`` (None: all of them)."""
    if folder is None:
        return keys
    return [k for k in keys if not k.startswith(folder + "/")]
