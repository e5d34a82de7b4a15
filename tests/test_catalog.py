"""The append-only catalog: batches commit atomically, uncommitted files are invisible."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from schemas.tables import SUBMISSIONS
from tasks.catalog import Catalog, image_id_for, pseudonymize
from tasks.storage import LocalStorage


def _subs(n: int, batch: str) -> pa.Table:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [{"submission_id": f"{batch}-{i}", "batch_id": batch, "source": "/s",
             "file": f"{i}.jpg", "outcome": "rejected", "reason": "missing_file",
             "ingested_at": now} for i in range(n)]
    return pa.Table.from_pylist(rows, schema=SUBMISSIONS)


def test_round_trip_and_uncommitted_batches_are_invisible(tmp_path):
    cat = Catalog(LocalStorage(tmp_path))
    cat.write_batch("b1", {"submissions": _subs(3, "b1")}, info={})
    # a killed run: the table file landed, the commit marker did not
    cat.root.write_bytes("catalog/submissions/b2.parquet", b"half written")
    assert cat.read_table("submissions").num_rows == 3
    assert cat.remove_uncommitted() == ["catalog/submissions/b2.parquet"]
    cat.write_batch("b3", {"submissions": _subs(2, "b3")}, info={})
    assert sorted(cat.read_table("submissions", columns=["submission_id"])
                  .column("submission_id").to_pylist()) == ["b1-0", "b1-1", "b1-2", "b3-0", "b3-1"]


def test_empty_catalog_reads_as_empty_tables(tmp_path):
    cat = Catalog(LocalStorage(tmp_path))
    assert cat.read_table("images").num_rows == 0
    assert cat.read_table("images", columns=["phash"]).column_names == ["phash"]


def test_salt_is_kept_with_the_catalog_and_pseudonyms_are_stable(tmp_path):
    salt = Catalog(LocalStorage(tmp_path)).salt()
    assert Catalog(LocalStorage(tmp_path)).salt() == salt
    a = pseudonymize(["w1", None, "w2"], salt=salt)
    assert a == pseudonymize(["w1", None, "w2"], salt=salt)
    assert a[1] is None and a[0] != a[2] and "w1" not in a[0]
    assert pseudonymize(["w1"], salt="other")[0] != a[0]


def test_image_id_is_a_uuid_of_the_sha256():
    sha = "0123456789abcdef" * 4
    assert image_id_for(sha) == "01234567-89ab-cdef-0123-456789abcdef"
