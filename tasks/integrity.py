"""A dataset root's consistency: what dead runs left, what is inconsistent, what can be fixed.

- ``remove_dead_run_debris``: after a run died holding the writer lock (``tasks.lock``), the
  next holder removes its uncommitted table files, temp files, unfinished uploads and
  release staging folders. Under the lock nothing else is writing, so all of it is debris.
- ``find_problems`` (pure) and ``check_root``: a committed batch whose tables disagree (an
  accepted input without its ``images`` row, an ``images`` row without its input), an input
  recorded twice, an image recorded twice, objects without rows, rows without objects.
- ``repair_root``: fixes what can be fixed without losing a row. A missing ``images`` row is
  rebuilt from its object (inspected again) in a new ``repair`` batch. A row recorded twice
  is removed from its later batch file, which is rewritten; the removed rows are kept under
  ``catalog/_repairs/<repair>/`` with the reason, so nothing disappears. An input accepted
  twice for the same bytes becomes the exact duplicate it should have been. Objects that no
  row of either table names are removed. Rows whose object is missing cannot be fixed here:
  they are reported.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.reasons import Outcome, Reason
from schemas.settings import IngestSettings
from schemas.tables import CATALOG_TABLES, IMAGES
from tasks.catalog import Catalog, object_sha256
from tasks.ingest.inspection import ImageFeatures, inspect_image
from tasks.lock import writer_lock
from tasks.storage import Storage

REPAIRS = "catalog/_repairs"


@dataclass(frozen=True)
class Problem:
    """One inconsistency of a dataset root."""

    kind: str  # see PROBLEM_KINDS
    key: str  # the submission id, image id or object key concerned
    detail: str
    fixable: bool


PROBLEM_KINDS = {
    "uncommitted_files": "table files of a batch that never committed (a killed run)",
    "input_recorded_twice": "one input (submission_id) has two submissions rows",
    "image_recorded_twice": "one image_id has two images rows",
    "accepted_without_image_row": "an accepted input whose images row is missing",
    "image_row_without_input": "an images row whose accepted input is not in submissions",
    "object_without_row": "an object that no submissions or images row names",
    "row_without_object": "an images row whose object is missing (not fixable here)",
    "object_bytes_changed": "an object whose bytes no longer have the sha256 in its name "
                            "(check --content; not fixable here)",
}


@dataclass
class RepairReport:
    """What ``repair_root`` did."""

    repair_id: str
    fixed: dict[str, int] = field(default_factory=dict)
    left: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {"repair_id": self.repair_id, "fixed": self.fixed,
                "left": [asdict(p) for p in self.left]}


def remove_dead_run_debris(root: Storage) -> dict[str, list[str]]:
    """Remove what runs that died holding the lock left; call only while holding it."""
    from tasks.publish.writer import remove_dead_staging

    return {"uncommitted_files": Catalog(root).remove_uncommitted(),
            "partial_writes": root.remove_partial_writes(),
            "release_staging": remove_dead_staging(root)}


def find_problems(submissions: pd.DataFrame, images: pd.DataFrame, *, objects: set[str],
                  uncommitted: Sequence[str] = ()) -> list[Problem]:
    """Every inconsistency between the committed tables and the objects (no I/O)."""
    out = [Problem("uncommitted_files", k, "batch has no commit marker", True)
           for k in uncommitted]
    for sid in submissions.loc[submissions["submission_id"].duplicated(), "submission_id"]:
        out.append(Problem("input_recorded_twice", sid, "later record removed on repair", True))
    for iid in images.loc[images["image_id"].duplicated(), "image_id"]:
        out.append(Problem("image_recorded_twice", iid, "later row removed on repair", True))
    accepted = submissions[submissions["outcome"] == Outcome.ACCEPTED.value]
    accepted = accepted.drop_duplicates("submission_id")
    known = set(images["image_id"])
    stored = _objects_by_sha(objects)
    for row in accepted[~accepted["image_id"].isin(known)].itertuples():
        has_object = row.sha256 in stored
        out.append(Problem("accepted_without_image_row", str(row.submission_id),
                           f"image {row.image_id}; object {'present' if has_object else 'missing'}",
                           has_object))
    for row in images[~images["submission_id"].isin(set(accepted["submission_id"]))].itertuples():
        out.append(Problem("image_row_without_input", str(row.image_id),
                           f"submission {row.submission_id} not recorded as accepted", False))
    named = set(images["object_key"])
    named_shas = set(submissions["sha256"].dropna())
    for sha, key in sorted(stored.items(), key=lambda kv: kv[1]):
        if key not in named and sha not in named_shas:
            out.append(Problem("object_without_row", key, "no row names it", True))
    for row in images[~images["object_key"].isin(objects)].itertuples():
        out.append(Problem("row_without_object", str(row.object_key),
                           f"image {row.image_id}", False))
    return out


def check_root(root: Storage, *, content: bool = False) -> list[Problem]:
    """Every inconsistency of ``root`` (reads the tables and lists the objects); with
    ``content`` also every object whose bytes no longer have the sha256 its key names
    (``changed_objects``)."""
    catalog = Catalog(root)
    objects = set(root.list("objects"))
    problems = find_problems(_frame(catalog, "submissions"), _frame(catalog, "images"),
                             objects=objects, uncommitted=catalog.uncommitted_files())
    if content:
        problems += [Problem("object_bytes_changed", key, f"its bytes hash to {sha}", False)
                     for key, sha in changed_objects(root, sorted(objects))]
    return problems


def changed_objects(root: Storage, keys: Sequence[str]) -> list[tuple[str, str]]:
    """(key, actual sha256) of every object among ``keys`` whose bytes no longer hash to the
    sha256 in its name (each read whole, one at a time). Such an object is also dropped from the
    record of checked objects (``tasks.publish.checked_objects``): its seal may be intact
    (a disk flipping bits), and no publish may take it on trust. Call under the writer lock.
    """
    from tasks.publish.checked_objects import load_checked, save_checked

    changed = []
    for key, expected in _objects_by_sha(keys).items():
        actual = hashlib.sha256(root.read_bytes(expected)).hexdigest()
        if actual != key:
            changed.append((expected, actual))
    damaged = {key for key, _ in changed}
    recorded = load_checked(root)
    if any(key in damaged for key, _ in recorded):
        save_checked(root, {k: v for k, v in recorded.items() if k[0] not in damaged})
    return changed


def repair_root(root: Storage, *, settings: IngestSettings | None = None) -> RepairReport:
    """Fix what can be fixed without losing a row (call while holding the writer lock)."""
    catalog = Catalog(root)
    report = RepairReport(repair_id=dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
                          + f"-{secrets.token_hex(3)}")
    removed = catalog.remove_uncommitted()
    report.fixed["uncommitted_files"] = len(removed)
    report.fixed.update(_remove_duplicate_rows(catalog, report.repair_id))
    report.fixed["accepted_without_image_row"] = _rebuild_image_rows(
        catalog, report.repair_id, settings or IngestSettings())
    problems = check_root(root)
    orphans = [p.key for p in problems if p.kind == "object_without_row"]
    for key in orphans:
        root.delete(key)
    report.fixed["object_without_row"] = len(orphans)
    report.left = [p for p in problems if p.kind != "object_without_row"]
    return report


def _remove_duplicate_rows(catalog: Catalog, repair_id: str) -> dict[str, int]:
    """Keep the first row per key (commit order); later duplicates move to the archive."""
    fixed = {"input_recorded_twice": 0, "image_recorded_twice": 0}
    seen_subs: set[str] = set()
    seen_images: set[str] = set()
    for batch in catalog.committed_batches():
        subs = _read_batch(catalog, "submissions", batch)
        images = _read_batch(catalog, "images", batch)
        if subs is None and images is None:
            continue
        if images is not None:
            dup = images["image_id"].isin(seen_images) | images["image_id"].duplicated()
            if dup.any():
                _archive(catalog, repair_id, "images", batch, images[dup], "image_recorded_twice")
                _rewrite(catalog, "images", batch, images[~dup])
                fixed["image_recorded_twice"] += int(dup.sum())
                if subs is not None:
                    subs = _demote_to_duplicates(catalog, repair_id, batch, subs,
                                                 set(images.loc[dup, "submission_id"]))
            seen_images |= set(images.loc[~dup, "image_id"])
        if subs is not None:
            dup = subs["submission_id"].isin(seen_subs) | subs["submission_id"].duplicated()
            if dup.any():
                _archive(catalog, repair_id, "submissions", batch, subs[dup],
                         "input_recorded_twice")
                _rewrite(catalog, "submissions", batch, subs[~dup])
                fixed["input_recorded_twice"] += int(dup.sum())
            seen_subs |= set(subs.loc[~dup, "submission_id"])
    return fixed


def _demote_to_duplicates(catalog: Catalog, repair_id: str, batch: str, subs: pd.DataFrame,
                          submission_ids: set[str]) -> pd.DataFrame:
    """An input accepted a second time for the same bytes: an exact duplicate after all."""
    hit = subs["submission_id"].isin(submission_ids) & (subs["outcome"] == Outcome.ACCEPTED.value)
    if not hit.any():
        return subs
    _archive(catalog, repair_id, "submissions", batch, subs[hit], "accepted_twice")
    subs = subs.copy()
    subs.loc[hit, "duplicate_of"] = subs.loc[hit, "image_id"]
    subs.loc[hit, "detail"] = [f"exact_duplicate of {i} (repair {repair_id}: accepted twice "
                               "by concurrent runs)" for i in subs.loc[hit, "image_id"]]
    subs.loc[hit, "outcome"] = Outcome.REJECTED.value
    subs.loc[hit, "reason"] = Reason.EXACT_DUPLICATE.value
    subs.loc[hit, "image_id"] = None
    subs.loc[hit, "duplicate_distance"] = 0
    _rewrite(catalog, "submissions", batch, subs)
    return subs


def _rebuild_image_rows(catalog: Catalog, repair_id: str, settings: IngestSettings) -> int:
    """Inspect the object of each accepted input without an images row again; write rows."""
    subs, images = _frame(catalog, "submissions"), _frame(catalog, "images")
    accepted = subs[subs["outcome"] == Outcome.ACCEPTED.value].drop_duplicates("submission_id")
    missing = accepted[~accepted["image_id"].isin(set(images["image_id"]))]
    objects = _objects_by_sha(catalog.root.list("objects"))
    now = dt.datetime.now(dt.UTC)
    batch_id = f"repair-{repair_id}"
    rows = []
    for row in missing.itertuples():
        key = objects.get(row.sha256)
        if key is None:
            continue
        features = inspect_image(catalog.root.read_bytes(key), formats=settings.formats,
                                 max_pixels=settings.max_pixels, min_side=0)
        if not isinstance(features, ImageFeatures):
            continue
        rows.append(_image_row(features, row, key=key, batch_id=batch_id, now=now))
    if rows:
        catalog.write_batch(batch_id, {"images": pa.Table.from_pylist(rows, schema=IMAGES)},
                            info={"kind": "repair", "repair_id": repair_id,
                                  "rebuilt_image_rows": len(rows)})
    return len(rows)


def _image_row(f: ImageFeatures, sub: Any, *, key: str, batch_id: str,
               now: dt.datetime) -> dict[str, object]:
    return {"image_id": sub.image_id, "sha256": f.sha256, "object_key": key,
            "format": f.format, "width": f.width, "height": f.height,
            "orientation": f.orientation, "bytes": f.bytes, "user_id": sub.user_key,
            "gesture": sub.gesture, "submitted_at": sub.submitted_at,
            "submission_id": sub.submission_id, "phash": f.phash,
            "phash_mirror": f.phash_mirror, "thumb": f.thumb, "batch_id": batch_id,
            "ingested_at": now}


def _frame(catalog: Catalog, table: str) -> pd.DataFrame:
    return catalog.read_table(table).to_pandas()


def _read_batch(catalog: Catalog, table: str, batch: str) -> pd.DataFrame | None:
    key = f"catalog/{table}/{batch}.parquet"
    if not catalog.root.exists(key):
        return None
    schema = CATALOG_TABLES[table]
    return pq.read_table(io.BytesIO(catalog.root.read_bytes(key)), schema=schema).to_pandas()


def _parquet(table: str, frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, schema=CATALOG_TABLES[table],
                                        preserve_index=False), buf, compression="zstd")
    return buf.getvalue()


def _rewrite(catalog: Catalog, table: str, batch: str, frame: pd.DataFrame) -> None:
    catalog.root.write_bytes(f"catalog/{table}/{batch}.parquet", _parquet(table, frame))


def _archive(catalog: Catalog, repair_id: str, table: str, batch: str, rows: pd.DataFrame,
             reason: str) -> None:
    """Keep removed or replaced rows, with why, under ``catalog/_repairs/<repair>/``."""
    base = f"{REPAIRS}/{repair_id}/{table}/{batch}-{reason}"
    catalog.root.write_bytes(f"{base}.parquet", _parquet(table, rows))
    catalog.root.write_bytes(f"{base}.json", json.dumps(
        {"table": table, "batch": batch, "reason": reason, "rows": len(rows),
         "meaning": PROBLEM_KINDS.get(reason, reason)}, sort_keys=True).encode())


def _objects_by_sha(keys: Iterable[str]) -> dict[str, str]:
    """sha256 -> object key (``objects/ab/cd/<sha256>.<ext>``, see ``catalog.object_key``)."""
    return {object_sha256(k): k for k in keys}


@contextmanager
def exclusive_writer(root: Storage, *, command: str,
                     wait_s: float = 0.0) -> Iterator[dict[str, list[str]]]:
    """Hold ``root``'s writer lock; first remove what a run that died holding it left.

    Yields the debris removed (empty when the previous run ended cleanly). Raises
    ``tasks.lock.RootLocked`` when another run holds the lock for longer than ``wait_s``.
    """
    with writer_lock(root, command=command, wait_s=wait_s) as state:
        debris: dict[str, list[str]] = {}
        if state.dead_holder is not None:
            debris = remove_dead_run_debris(root)
        yield debris
