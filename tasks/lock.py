"""One writer per dataset root: a lock every flow that writes takes before it starts.

- A local root is locked with an OS file lock (``flock``) on ``ROOT/.hagrid-lock``. The kernel
  releases it when the holder dies, however it dies, so a ``kill -9`` never leaves a root
  locked. The holder's record (command, run, pid, host, since) is written into the file and
  cleared on a clean release: a record found by the next holder means its writer died.
- An S3 root is locked with a lease object ``ROOT/.hagrid-lock`` created by a conditional put
  (``If-None-Match: *``) and renewed by the holder every ``ttl / 3`` (``If-Match`` on its own
  ETag). A lease not renewed for ``ttl`` has expired: the next run takes it over with a
  conditional put on the expired lease's ETag, so two runs never both win.

A run that finds the root locked is refused with ``RootLocked`` (who holds it, since when),
or waits up to ``wait_s`` seconds. The lock is re-entrant within a process, so a flow that
runs other flows as subflows holds it once. ``LockState.dead_holder`` tells the new holder
that the previous run died, so it may remove what that run left (``tasks.integrity``).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tasks.storage import LocalStorage, S3Storage, Storage

LOCK_KEY = ".hagrid-lock"
DEFAULT_TTL_S = 120.0
POLL_S = 0.5


class RootLocked(RuntimeError):
    """Another run holds the dataset root's writer lock."""

    def __init__(self, uri: str, holder: dict[str, Any]) -> None:
        self.uri, self.holder = uri, holder
        who = holder.get("command", "?")
        super().__init__(
            f"dataset root {uri} is locked by `{who}` (run {holder.get('run', '?')}, pid "
            f"{holder.get('pid', '?')} on {holder.get('host', '?')}) since "
            f"{holder.get('since', '?')}; wait for it to finish, or pass --wait")


@dataclass(frozen=True)
class LockState:
    """What the new holder learned when it took the lock."""

    record: dict[str, Any]
    dead_holder: dict[str, Any] | None  # the record of a run that died holding the lock


class _Backend(Protocol):
    def try_acquire(self, record: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """(True, record of a dead holder or None) or (False, the live holder's record)."""
        ...

    def release(self) -> None:
        """Give the lock back and clear the record."""
        ...


def holder_record(command: str) -> dict[str, Any]:
    """Who is taking the lock: shown to a run that is refused."""
    return {"command": command, "run": secrets.token_hex(6), "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


class FileLock:
    """``flock`` on a file of a local root; the record is the file's content."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def try_acquire(self, record: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """Take the lock without blocking."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _parse(_read_fd(fd)) or {"command": "unknown (record not written yet)"}
            os.close(fd)
            return False, holder
        previous = _parse(_read_fd(fd))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record, sort_keys=True).encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return True, previous

    def release(self) -> None:
        """Clear the record (a clean exit), then unlock."""
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


@dataclass
class S3Lease:
    """A lease object in a bucket, renewed by a background thread while held."""

    store: S3Storage
    ttl_s: float = DEFAULT_TTL_S
    etag: str | None = None
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _put(self, record: dict[str, Any], **condition: str) -> str:
        body = {**record, "expires_at": time.time() + self.ttl_s}
        out = self.store.client.put_object(
            Bucket=self.store.bucket, Key=self.store._k(LOCK_KEY),
            Body=json.dumps(body, sort_keys=True).encode(), **condition)
        return str(out["ETag"])

    def try_acquire(self, record: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """Create the lease, or take over an expired one."""
        try:
            self.etag = self._put(record, IfNoneMatch="*")
            self._start(record)
            return True, None
        except Exception as exc:
            if not _precondition_failed(exc):
                raise
        got = self.store.client.get_object(Bucket=self.store.bucket,
                                           Key=self.store._k(LOCK_KEY))
        holder = _parse(got["Body"].read()) or {}
        if float(holder.get("expires_at", 0)) > time.time():
            return False, holder
        try:
            self.etag = self._put(record, IfMatch=got["ETag"])
        except Exception as exc:
            if _precondition_failed(exc):
                return False, holder
            raise
        self._start(record)
        return True, holder

    def _start(self, record: dict[str, Any]) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew, args=(record,), daemon=True,
                                        name="hagrid-lease")
        self._thread.start()

    def _renew(self, record: dict[str, Any]) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.etag = self._put(record, IfMatch=self.etag or "")
            except Exception:  # noqa: BLE001 - a lost lease is reported, the run goes on
                self.lost = True
                return

    def release(self) -> None:
        """Stop renewing, then delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        client, key = self.store.client, self.store._k(LOCK_KEY)
        if not self.lost and self.etag:
            try:
                client.delete_object(Bucket=self.store.bucket, Key=key, IfMatch=self.etag)
            except Exception as exc:
                if not _precondition_failed(exc):
                    raise


def lock_backend(root: Storage, *, ttl_s: float = DEFAULT_TTL_S) -> _Backend:
    """The lock mechanism of ``root``'s kind of storage."""
    if isinstance(root, LocalStorage):
        root.path.mkdir(parents=True, exist_ok=True)
        return FileLock(root.path / LOCK_KEY)
    if isinstance(root, S3Storage):
        return S3Lease(root, ttl_s=ttl_s)
    raise TypeError(f"no writer lock for {type(root).__name__}")


@dataclass
class _Held:
    backend: _Backend
    state: LockState
    depth: int


_HELD: dict[str, _Held] = {}
_HELD_GUARD = threading.Lock()


@contextmanager
def writer_lock(root: Storage, *, command: str, wait_s: float = 0.0,
                ttl_s: float = DEFAULT_TTL_S) -> Iterator[LockState]:
    """Hold ``root``'s writer lock for the block; ``RootLocked`` after ``wait_s`` seconds."""
    with _HELD_GUARD:
        held = _HELD.get(root.uri)
        if held is not None:
            held.depth += 1
    if held is not None:  # a subflow of the holder: nothing new to learn or clean
        try:
            yield LockState(record=held.state.record, dead_holder=None)
        finally:
            with _HELD_GUARD:
                held.depth -= 1
        return
    state, backend = _acquire(root, command=command, wait_s=wait_s, ttl_s=ttl_s)
    with _HELD_GUARD:
        _HELD[root.uri] = _Held(backend, state, 1)
    try:
        yield state
    finally:
        with _HELD_GUARD:
            del _HELD[root.uri]
        backend.release()


def _acquire(root: Storage, *, command: str, wait_s: float,
             ttl_s: float) -> tuple[LockState, _Backend]:
    record = holder_record(command)
    deadline = time.monotonic() + max(wait_s, 0.0)
    while True:
        backend = lock_backend(root, ttl_s=ttl_s)
        ok, other = backend.try_acquire(record)
        if ok:
            return LockState(record=record, dead_holder=other), backend
        if time.monotonic() >= deadline:
            raise RootLocked(root.uri, other or {})
        time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.01)))


def _read_fd(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, min(size, 65536), 0)


def _parse(data: bytes) -> dict[str, Any] | None:
    if not data.strip():
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return {"command": "unknown (unreadable lock record)"}
    return value if isinstance(value, dict) else None


def _precondition_failed(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in {"PreconditionFailed", "ConditionalRequestConflict"} or status in {409, 412}
