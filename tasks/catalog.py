"""The append-only catalog under a dataset root: ``catalog/<table>/<batch>.parquet``.

A batch is written as one Parquet file per table, then a commit marker
``catalog/_commits/<batch>.json`` is written last. Readers only see committed batches, so a
run killed midway leaves nothing half-visible, and the next run carries on from the last
commit. Old files are never edited.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.tables import CATALOG_TABLES
from tasks.storage import Storage

COMMITS = "catalog/_commits"
SALT_KEY = "catalog/_salt"


def object_key(sha256: str, fmt: str) -> str:
    """Content-addressed key of an accepted image: ``objects/ab/cd/<sha256>.<ext>``."""
    ext = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp"}.get(fmt, fmt.lower())
    return f"objects/{sha256[:2]}/{sha256[2:4]}/{sha256}.{ext}"


def object_sha256(key: str) -> str:
    """The sha256 an object key names (``object_key``'s inverse, less the format)."""
    return key.rsplit("/", 1)[1].split(".", 1)[0]


def image_id_for(sha256: str) -> str:
    """The image id: the first 128 bits of the sha256, written as a UUID (HaGRID names)."""
    h = sha256[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class Catalog:
    """Reads and appends the catalog tables of one dataset root."""

    def __init__(self, root: Storage) -> None:
        self.root = root

    def committed_batches(self) -> list[str]:
        """Ids of every committed batch, in commit-name order."""
        return [k.rsplit("/", 1)[1].removesuffix(".json") for k in self.root.list(COMMITS)]

    def table_files(self, table: str) -> list[str]:
        """Keys of the committed Parquet files of ``table``."""
        done = set(self.committed_batches())
        keys = self.root.list(f"catalog/{table}")
        return [k for k in keys if k.endswith(".parquet") and _batch_of(k) in done]

    def read_table(self, table: str, *, columns: list[str] | None = None,
                   filters: pc.Expression | None = None) -> pa.Table:
        """All committed rows of ``table`` (an empty table with the schema when none).

        ``columns`` and ``filters`` (e.g. ``pc.field("stage") == "validation"``) are applied
        while reading: other columns are not decoded, row groups whose statistics rule the
        filter out are skipped.
        """
        schema = CATALOG_TABLES[table]
        parts = [
            pq.read_table(io.BytesIO(self.root.read_bytes(k)), columns=columns, schema=schema,
                          filters=filters)
            for k in self.table_files(table)
        ]
        if not parts:
            wanted = schema if columns is None else pa.schema([schema.field(c) for c in columns])
            return wanted.empty_table()
        return pa.concat_tables(parts)

    def write_batch(self, batch_id: str, tables: dict[str, pa.Table], *, info: dict) -> None:
        """Write one batch: every table file first, the commit marker last."""
        for name, table in tables.items():
            buf = io.BytesIO()
            pq.write_table(table.cast(CATALOG_TABLES[name]), buf, compression="zstd")
            self.root.write_bytes(f"catalog/{name}/{batch_id}.parquet", buf.getvalue())
        marker = json.dumps({"batch_id": batch_id, **info}, sort_keys=True).encode()
        self.root.write_bytes(f"{COMMITS}/{batch_id}.json", marker)

    def uncommitted_files(self) -> list[str]:
        """Table files of batches that never committed (a killed run, or one in progress)."""
        done = set(self.committed_batches())
        return [k for name in CATALOG_TABLES for k in self.root.list(f"catalog/{name}")
                if _batch_of(k) not in done]

    def remove_uncommitted(self) -> list[str]:
        """Delete table files left by a batch that never committed (a killed run)."""
        orphans = self.uncommitted_files()
        for key in orphans:
            self.root.delete(key)
        return orphans

    def salt(self) -> str:
        """The pseudonymisation salt, created once per catalog and kept with it."""
        if self.root.exists(SALT_KEY):
            return self.root.read_bytes(SALT_KEY).decode().strip()
        value = secrets.token_hex(32)
        self.root.write_bytes(SALT_KEY, value.encode())
        return value


def pseudonymize(user_ids: Iterable[str | None], *, salt: str) -> list[str | None]:
    """Salted sha256 of each raw worker id (hex, 32 chars); None stays None."""
    return [
        None if u is None else hashlib.sha256(f"{salt}:{u}".encode()).hexdigest()[:32]
        for u in user_ids
    ]


def _batch_of(key: str) -> str:
    return key.rsplit("/", 1)[1].rsplit(".", 1)[0]
