"""The writer lock of a dataset root, across real processes (local roots and S3 leases)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tasks.lock import LOCK_KEY, RootLocked, S3Lease, writer_lock
from tasks.storage import LocalStorage, S3Storage

REPO = Path(__file__).resolve().parents[1]

HOLDER = textwrap.dedent("""
    import os, sys, time
    from tasks.lock import writer_lock
    from tasks.storage import open_storage
    ttl = float(os.environ.get("HAGRID_TEST_TTL", "120"))
    with writer_lock(open_storage(sys.argv[1]), command="holder-test", wait_s=float(sys.argv[2]),
                     ttl_s=ttl):
        print("held", flush=True)
        time.sleep(float(sys.argv[3]))
    print("released", flush=True)
""")


@contextmanager
def holder(root: str, *, hold_s: float = 60.0, wait_s: float = 0.0,
           env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """Another process that takes the root's lock and holds it for ``hold_s`` seconds."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, root, str(wait_s), str(hold_s)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_second_process_is_refused_with_who_holds_the_lock(tmp_path):
    with holder(str(tmp_path)) as other:
        with pytest.raises(RootLocked) as refused, writer_lock(LocalStorage(tmp_path),
                                                                command="me"):
            pass
        assert refused.value.holder["pid"] == other.pid
        assert refused.value.holder["command"] == "holder-test"
        assert "holder-test" in str(refused.value) and "since" in str(refused.value)


def test_waiting_takes_the_lock_once_the_holder_ends(tmp_path):
    with holder(str(tmp_path), hold_s=1.5):
        started = time.monotonic()
        with writer_lock(LocalStorage(tmp_path), command="me", wait_s=30) as state:
            waited = time.monotonic() - started
            assert state.dead_holder is None  # the holder released it cleanly
    assert 0.5 < waited < 20


def test_a_killed_holder_never_leaves_the_root_locked_and_is_reported_dead(tmp_path):
    with holder(str(tmp_path)) as other:
        other.send_signal(signal.SIGKILL)
        other.wait()
    with writer_lock(LocalStorage(tmp_path), command="me") as state:
        assert state.dead_holder is not None and state.dead_holder["pid"] == other.pid
        record = json.loads((tmp_path / LOCK_KEY).read_text())
        assert record["command"] == "me" and record["pid"] == os.getpid()
    assert (tmp_path / LOCK_KEY).read_text() == ""  # a clean release clears the record


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    root = LocalStorage(tmp_path)
    with writer_lock(root, command="pipeline") as outer:
        with writer_lock(root, command="ingest") as inner:
            assert inner.record == outer.record and inner.dead_holder is None
        assert_refused_elsewhere(str(tmp_path))  # still held by the outer block
    with writer_lock(root, command="again"):
        pass


def assert_refused_elsewhere(root: str) -> None:
    """Another process must fail to take the lock now."""
    done = subprocess.run([sys.executable, "-c", HOLDER, root, "0", "0"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0 and "RootLocked" in done.stderr, done.stderr


def _s3_store(s3_server, bucket: str) -> S3Storage:
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    store = S3Storage(f"s3://{bucket}/root", endpoint_url=s3_server.endpoint_url)
    store.client = client  # explicit dummy credentials, never os.environ
    return store


@pytest.mark.slow
def test_s3_lease_refuses_a_second_run_and_expires_after_its_holder_dies(s3_server):
    store = _s3_store(s3_server, "locks")
    with holder(store.uri, env={**s3_server.env(), "HAGRID_TEST_TTL": "3"}) as other:
        with pytest.raises(RootLocked) as refused, writer_lock(store, command="me"):
            pass
        assert refused.value.holder["pid"] == other.pid
        other.send_signal(signal.SIGKILL)
        other.wait()
    # the dead holder's lease has not expired yet
    with pytest.raises(RootLocked), writer_lock(store, command="me"):
        pass
    body = store.client.get_object(Bucket="locks", Key=f"root/{LOCK_KEY}")["Body"].read()
    time.sleep(max(0.0, json.loads(body)["expires_at"] - time.time()) + 0.5)
    with writer_lock(store, command="me") as state:
        assert state.dead_holder is not None and state.dead_holder["pid"] == other.pid
    assert "Contents" not in store.client.list_objects_v2(Bucket="locks", Prefix="root/")


@pytest.mark.slow
def test_s3_lease_is_renewed_while_held(s3_server):
    store = _s3_store(s3_server, "renew")
    first = S3Lease(store, ttl_s=1.5)
    ok, _ = first.try_acquire({"command": "first", "pid": 1})
    assert ok
    time.sleep(2.5)  # longer than the ttl: only renewals keep it
    second = S3Lease(store, ttl_s=1.5)
    ok, other = second.try_acquire({"command": "second", "pid": 2})
    assert not ok and other is not None and other["command"] == "first"
    first.release()
    ok, dead = second.try_acquire({"command": "second", "pid": 2})
    assert ok and dead is None
    second.release()
