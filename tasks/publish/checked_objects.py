"""Which stored objects a publish already checked, so a later publish need not read them twice.

Publishing checks every stored object against the catalog's sha256 before its bytes go into
a shard: one full sha256 pass, then another for the shard's own digest. For an object whose
published bytes are its stored bytes (upright, no metadata to strip: most of a release),
the first pass is the only reason to read it before the shards are planned, and it was done
by the previous publish already.

So a publish of a local root records, for every object it checked and published unchanged,
that object's *seal*: inode, size, modification and status-change times as one ``fstat``
gave them right before the bytes were read and hashed. A later publish that finds the
object's seal unchanged (one ``stat``, no read) takes its size and sha256 from the catalog;
the shard pass then reads it once, and ``fstat``s it again there (``run_shard_job``), so an
object changed between the two passes is refused either way. Any write to a file moves its
ctime, which no program can set back, so a changed seal means "read and check again".

What a seal cannot see is a change that bypasses the file system (a failing disk
flipping bits under an unchanged inode); ``hagrid check --content`` reads every object for
that, and drops a damaged one from the record (``tasks.integrity.changed_objects``). A
seal is taken only when the file's ctime is at least ``RACY_NS`` old, so a write in the same
clock tick as the one the seal saw cannot go unnoticed (git's "racily clean" rule).

The record is ``ROOT/cache/checked-objects.parquet``, written whole (temp file, rename)
under the root's writer lock by the publish that adds to it. It is a cache: when it is
missing, unreadable or made by other publishing rules (``RULES``), every object is simply
read and checked again. S3 roots have no seals; their objects are always read.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import CHECKED_OBJECT_SEALS
from tasks.storage import LocalStorage, Storage

CHECKED_OBJECTS = "cache/checked-objects.parquet"
RULES = 1  # bump when published_image gives other bytes for the same stored bytes
RACY_NS = 2_000_000_000  # a seal is taken only this long after the file's last change

log = logging.getLogger(__name__)

class Seal(NamedTuple):
    """What ``stat`` says about a file that would change if its bytes did."""

    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int


def seal_of(st: os.stat_result) -> Seal:
    """The seal of a ``stat``/``fstat`` result."""
    return Seal(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stat_seal(path: str) -> Seal | None:
    """The file's seal now (one ``stat``), None when it is gone."""
    try:
        return seal_of(os.stat(path))
    except FileNotFoundError:
        return None


def settled(seal: Seal, *, now_ns: int) -> bool:
    """Whether the file's last change is at least ``RACY_NS`` before ``now_ns`` (the time
    the seal was taken), so that a later write cannot share its timestamps."""
    return now_ns - max(seal.mtime_ns, seal.ctime_ns) >= RACY_NS


CheckedKey = tuple[str, int]  # (object_key, orientation)


def load_checked(root: Storage) -> dict[CheckedKey, Seal]:
    """The recorded seals of ``root`` (empty for an S3 root, or when there is no usable
    record: it is only a cache)."""
    if not isinstance(root, LocalStorage) or not root.exists(CHECKED_OBJECTS):
        return {}
    try:
        table = pq.read_table(io.BytesIO(root.read_bytes(CHECKED_OBJECTS)))
        if not table.schema.equals(CHECKED_OBJECT_SEALS):
            raise ValueError(f"schema {table.schema} is not {CHECKED_OBJECT_SEALS}")
    except (OSError, ValueError, pa.ArrowException) as exc:
        log.warning("%s/%s is unusable, every object is read again: %s", root.uri,
                    CHECKED_OBJECTS, exc)
        return {}
    columns = table.to_pydict()
    return {(key, orientation): Seal(ino, size, mtime, ctime)
            for key, orientation, rules, ino, size, mtime, ctime in zip(
                columns["object_key"], columns["orientation"], columns["rules"],
                columns["ino"], columns["size"], columns["mtime_ns"], columns["ctime_ns"],
                strict=True)
            if rules == RULES}


def save_checked(root: Storage, seals: Mapping[CheckedKey, Seal]) -> None:
    """Replace the record with ``seals`` (sorted, so the same seals give the same file).
    Call it under the root's writer lock; nothing for an S3 root."""
    if not isinstance(root, LocalStorage):
        return
    keys, values = list(seals.keys()), list(seals.values())
    columns = [list(c) for c in zip(*keys, strict=True)] if keys else [[], []]
    fields = [list(c) for c in zip(*values, strict=True)] if values else [[], [], [], []]
    table = pa.table({"object_key": columns[0], "orientation": columns[1],
                      "rules": [RULES] * len(keys), "ino": fields[0], "size": fields[1],
                      "mtime_ns": fields[2], "ctime_ns": fields[3]}, schema=CHECKED_OBJECT_SEALS)
    table = table.sort_by([("object_key", "ascending"), ("orientation", "ascending")])
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    root.write_bytes(CHECKED_OBJECTS, buf.getvalue())
