"""Writing a release: a staging folder filled file by file, then committed in one step.

Every file of a release is first written into a local staging folder (under
``ROOT/releases/`` for a local root, so the commit is one rename; a temporary folder for an
S3 root, uploaded with ``SHA256SUMS`` last). With an S3 root on a cluster the jobs' files
(spool files, shards) are staged under the root instead (``remote``), and copied into the
release server-side at the commit. A release folder that exists is never touched:
``check_new_release`` refuses it up front and ``commit_release`` again at the end. Names
inside the staging folder are checked with ``safe_key``, so nothing lands outside it.

Images are written in two passes over a process pool: ``run_image_job`` reads each stored
object, checks it and makes its published bytes (so every size is known before the shards
are planned), spooling only those that differ from the stored bytes; then ``run_shard_job``
writes each planned shard, copying every image from the stored object or the spool. An
object a previous publish checked and sealed (``checked_objects``) skips the first pass.
What a killed run leaves is removed by ``remove_dead_staging``.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, Self, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.release import (
    CHECKSUMS,
    CONTRACTS_PAGE,
    CONTRACTS_RESULTS,
    DATA_DOCS,
    RELEASES,
    REPORT,
    check_version,
)
from tasks.catalog import object_sha256
from tasks.processes import end_with_process
from tasks.publish.checked_objects import Seal, seal_of, settled
from tasks.publish.containers import inspect_member
from tasks.publish.published_image import published_image
from tasks.publish.remote import (
    IN_PLACE_BYTES,
    STAGING_PREFIX,
    ReadAhead,
    RemoteSources,
    RemoteStaging,
    dead_staging_keys,
)
from tasks.publish.shards import ShardError, ShardMember, read_members, write_shard
from tasks.storage import LocalStorage, S3Storage, Storage, open_storage, safe_key

COPY_THREADS = 8  # server-side copies in flight at a commit of worker-staged files
OBJECT_KEY = re.compile(r"objects/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}\.[a-z]{2,4}")  # fullmatch

_Job = TypeVar("_Job")
_Result = TypeVar("_Result")


class JobPool(Protocol):
    """Where the image, shard and crop jobs run: ``worker_pool``'s processes, or a Dask
    cluster (``flows.cluster.ClusterJobs``). Results come back in job order."""

    def map(self, fn: Callable[[Any], _Result], jobs: Iterable[Any], /) -> Iterator[_Result]:
        """``fn`` over ``jobs``, started at once; the results in job order."""
        ...


class StagingNotVisible(RuntimeError):
    """A job's process cannot see the staging folder (a cluster worker on another machine)."""


def check_visible(folder: Path) -> None:
    """Raise ``StagingNotVisible`` when ``folder`` (made by the flow's process) is missing
    here: with a local root a Dask worker writes the release's files into the flow's
    staging folder under the root, so it must mount the root at the same path. (With an S3
    root the jobs stage under the root instead: ``tasks.publish.remote``.)"""
    if not folder.is_dir():
        raise StagingNotVisible(
            f"{folder} is not visible on this worker ({socket.gethostname()}): publishing a "
            "local root on a cluster writes into its staging folder, so every worker must "
            "mount the root at the same path (an S3 root needs no shared folder)")


class ReleaseExists(RuntimeError):
    """The release folder already exists: releases are immutable."""


def release_prefix(version: str) -> str:
    """Key prefix of a release under the dataset root."""
    return f"{RELEASES}/{check_version(version)}"


def check_new_release(root: Storage, version: str) -> None:
    """Raise ``ReleaseExists`` when anything exists under ``releases/<version>/``."""
    prefix = release_prefix(version)
    if isinstance(root, LocalStorage) and (root.path / prefix).exists():
        raise ReleaseExists(f"{root.uri}/{prefix} exists; a release is never overwritten")
    if root.list(prefix):
        raise ReleaseExists(f"{root.uri}/{prefix} exists; a release is never overwritten")


def staging_dir(root: Storage, version: str) -> Path:
    """A fresh, empty local folder to build the release in."""
    if isinstance(root, LocalStorage):
        path = root.path / RELEASES / f"{STAGING_PREFIX}{check_version(version)}-" \
            f"{secrets.token_hex(4)}"
        path.mkdir(parents=True)
        return path
    return Path(tempfile.mkdtemp(prefix=f"{_temp_staging_prefix(root)}{check_version(version)}-"))


def _temp_staging_prefix(root: Storage) -> str:
    """Name prefix of this root's temporary staging folders (S3 roots), in the temp folder."""
    return f"hagrid-staging-{hashlib.sha256(root.uri.encode()).hexdigest()[:12]}-"


def remove_dead_staging(root: Storage) -> list[str]:
    """Remove what killed publish runs left under ``root``; return what was removed.

    Call it only under the dataset root's writer lock: then no publish of this root is
    running and every staging folder belongs to a dead run. Removed: the staging folders
    (``releases/.staging-*`` of a local root; this S3 root's temporary staging folders on
    this machine) and, for an S3 root, the keys under its staging prefixes
    (``releases/.staging-*/``, written by a cluster's workers) and every
    ``releases/<version>/`` without ``SHA256SUMS`` (an upload cut short: the checksums go
    up last). Complete releases and the kept Data
    Docs of refused ones (``releases/.refused-*``) stay. Unfinished multipart uploads are
    the storage's to abort (``remove_partial_writes``).
    """
    if isinstance(root, LocalStorage):
        folder = root.path / RELEASES
        found = sorted(folder.glob(f"{STAGING_PREFIX}*")) if folder.is_dir() else []
        removed = []
    else:
        found = sorted(Path(tempfile.gettempdir()).glob(f"{_temp_staging_prefix(root)}*"))
        removed = _remove_unfinished_uploads(root)
        prefixes = set()
        for key in dead_staging_keys(root):
            root.delete(key)
            prefixes.add("/".join(key.split("/")[:2]))
        removed += [f"{root.uri}/{prefix}" for prefix in sorted(prefixes)]
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        removed.append(str(path))
    return removed


def _remove_unfinished_uploads(root: Storage) -> list[str]:
    """Delete the keys of every release prefix that has no ``SHA256SUMS``; list the prefixes."""
    versions: dict[str, list[str]] = {}
    for key in root.list(RELEASES):
        parts = key.split("/")
        if len(parts) >= 3 and not parts[1].startswith("."):
            versions.setdefault(parts[1], []).append(key)
    removed = []
    for version, keys in sorted(versions.items()):
        if f"{RELEASES}/{version}/{CHECKSUMS}" in keys:
            continue
        for key in keys:
            root.delete(key)
        removed.append(f"{root.uri}/{RELEASES}/{version}")
    return removed


def staged_path(staging: Path, key: str) -> Path:
    """The path of release-relative ``key`` inside ``staging`` (never outside it)."""
    path = staging / safe_key(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_file(staging: Path, key: str, data: bytes) -> None:
    """Write one release file into the staging folder."""
    staged_path(staging, key).write_bytes(data)


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as Parquet bytes (zstd); the same table always gives the same bytes."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=65_536)
    return buf.getvalue()


@dataclass(frozen=True)
class ImageJob:
    """One process's share of the images: read, check, make the published bytes; those that
    differ from the stored bytes go back to back into ``spool`` (picklable)."""

    spool: Path
    object_keys: list[str]  # where each image is under the dataset root
    sha256: list[str]  # of the stored object, as the catalog recorded it
    orientation: list[int]  # EXIF orientation recorded at ingest
    root_uri: str
    endpoint_url: str | None = None
    # staged under the root (a cluster, an S3 root): ``spool`` is the spool file's key there,
    # and an image published as stored is read from its object's key by the shard job
    remote: RemoteStaging | None = None


MadeImage = tuple[int, str, str, int, Seal | None]  # size, sha256, file, offset, seal


def run_image_job(job: ImageJob) -> list[MadeImage]:
    """Check every image and make its published bytes; return (size, sha256, file, offset,
    seal) of each, in order: where the shard pass will find them.

    Each stored object is checked against its sha256 here, the one hash of its bytes
    before the shard's own. An image whose published bytes are its stored bytes (upright,
    no metadata to strip) stays where it is: its file is the stored object (local roots),
    and its seal is the ``fstat`` taken before the bytes were read (None while the file's
    last change is too recent to seal, ``checked_objects.settled``). Any other image is
    appended to the job's spool file, created on the first one.

    With ``job.remote`` (an S3 root on a cluster) the objects are read ahead in threads
    (``remote.ReadAhead``); an image published as stored stays at its object's key when
    it is at least ``remote.IN_PLACE_BYTES`` large, and the spool file is written in this
    machine's temporary folder, then uploaded to the key ``job.spool``.
    """
    if job.remote is None:
        check_visible(job.spool.parent)
        read, object_file = _object_reader(job.root_uri, job.endpoint_url, job.object_keys)
        return _make_images(job, job.spool, read, object_file)
    store = job.remote.storage()
    with (tempfile.TemporaryDirectory(prefix="hagrid-spool-") as tmp,
          ReadAhead(lambda key: (store.read_bytes(key), None), job.object_keys) as objects):
        local = Path(tmp) / job.spool.name
        made = _make_images(job, local, objects.read_next, lambda key: key,
                            in_place_bytes=IN_PLACE_BYTES)
        if local.exists():
            store.put_file(job.spool.as_posix(), local)
    key = job.spool.as_posix()
    return [(size, sha, key if file == str(local) else file, offset, seal)
            for size, sha, file, offset, seal in made]


def _make_images(job: ImageJob, spool_path: Path,
                 read: Callable[[str], tuple[bytes, Seal | None]],
                 object_file: Callable[[str], str] | None, *,
                 in_place_bytes: int = 0) -> list[MadeImage]:
    """``run_image_job``'s loop: the images of ``job``, spooled into ``spool_path``, but
    those published as stored that ``object_file`` names and that are at least
    ``in_place_bytes`` large."""
    made: list[MadeImage] = []
    with ExitStack() as stack:
        spool: BinaryIO | None = None
        for key, sha, orientation in zip(job.object_keys, job.sha256, job.orientation,
                                         strict=True):
            data, seal = read(key)
            if hashlib.sha256(data).hexdigest() != sha:
                raise ShardError(f"{key}: stored bytes do not match their sha256")
            try:
                published = published_image(data, orientation=orientation)
            except (ValueError, OSError) as exc:  # a malformed container, a failed decode
                raise ShardError(f"{key}: cannot make its published image: {exc}") from exc
            if published is data and object_file is not None and len(data) >= in_place_bytes:
                made.append((len(data), sha, object_file(key), 0, seal))
                continue
            if spool is None:
                spool = stack.enter_context(spool_path.open("wb"))
            digest = sha if published is data else hashlib.sha256(published).hexdigest()
            made.append((len(published), digest, str(spool_path), spool.tell(), None))
            spool.write(published)
    return made


def _object_reader(root_uri: str, endpoint_url: str | None, keys: Sequence[str]
                   ) -> tuple[Callable[[str], tuple[bytes, Seal | None]],
                              Callable[[str], str] | None]:
    """How to read an object's bytes by key (with the file's settled seal, taken by
    ``fstat`` before the read; None for an S3 root), and its file path (local roots, else
    None)."""
    root = open_storage(root_uri, endpoint_url=endpoint_url)
    if not isinstance(root, LocalStorage):
        return lambda key: (root.read_bytes(key), None), None
    if not all(OBJECT_KEY.fullmatch(k) for k in keys):  # then a plain open() per image is safe
        raise ValueError("an object key is not objects/ab/cd/<sha256>.<ext>")
    base = f"{root.path}/"

    def read(key: str) -> tuple[bytes, Seal | None]:
        with open(base + key, "rb", buffering=0) as fh:
            seal, now = seal_of(os.fstat(fh.fileno())), time.time_ns()
            return fh.read(), seal if settled(seal, now_ns=now) else None

    return read, lambda key: base + key


@dataclass(frozen=True)
class ShardJob:
    """Everything one process needs to write one shard (picklable)."""

    path: Path
    members: list[ShardMember]
    sources: list[tuple[str, int]]  # (file, offset) of each member's published bytes
    json_members: list[bytes]
    # per member, the seal its stored object had when the image pass checked it (None: a
    # spool file, or a file the image pass could not seal)
    seals: list[Seal | None] | None = None
    # staged under the root (a cluster, an S3 root): ``path`` is the shard's key there and
    # the sources are (key, offset) under the root
    remote: RemoteStaging | None = None


# What a shard holds, read back from the written file: name stem, extension, data offset,
# size, and for an image member its width, height and metadata (``shard_members``)
MemberRow = tuple[str, str, int, int, int | None, int | None, str | None]
MEMBER_COLUMNS = ["key", "ext", "offset", "size", "width", "height", "metadata"]


@dataclass(frozen=True)
class WrittenShard:
    """A shard ``run_shard_job`` wrote: its file (a key under the root when staged
    remotely), sha256, length, and, when staged remotely, its members as the job read
    them back from the written file (None: the flow reads the staged file itself)."""

    path: str
    sha256: str
    size: int
    members: list[MemberRow] | None = None


def run_shard_job(job: ShardJob) -> WrittenShard:
    """Write one shard from its members' sources, read its members back; return them.

    The sources hold bytes the image pass checked (``run_image_job``): stored objects and
    spool files. Each is read into one of two reused buffers; ``write_shard`` checks its size, and
    a stored object with a seal must still have it (``ShardError`` otherwise: it changed
    after it was checked).

    With ``job.remote`` the members come by ranged GETs (``RemoteSources``), and the shard is
    written in this machine's temporary folder, read back for the contracts (``read_back``:
    the flow's process cannot read it), then uploaded to ``job.path``.
    """
    position = {m.key: i for i, m in enumerate(job.members)}
    sizes = [m.size for m in job.members]

    def write(path: Path, read: Callable[[int], memoryview]) -> tuple[int, str]:
        return write_shard(path, job.members, image_bytes=lambda m: read(position[m.key]),
                           json_bytes=lambda m: job.json_members[position[m.key]])

    if job.remote is None:
        check_visible(job.path.parent)
        with _SourceReader(job.sources, sizes=sizes, seals=job.seals) as sources:
            size, digest = write(job.path, sources.read)
        return WrittenShard(str(job.path), digest, size)
    store = job.remote.storage()
    with tempfile.TemporaryDirectory(prefix="hagrid-shard-") as tmp:
        local = Path(tmp) / job.path.name
        with RemoteSources(store, job.sources, sizes=sizes) as remote:
            size, digest = write(local, _unchanged_objects(job.sources, remote.read))
        members = read_back(local)
        store.put_file(job.path.as_posix(), local)
    return WrittenShard(job.path.as_posix(), digest, size, members)


def _unchanged_objects(sources: Sequence[tuple[str, int]],
                       read: Callable[[int], memoryview]) -> Callable[[int], memoryview]:
    """``read``, checking each stored object (``objects/ab/cd/<sha256>.<ext>``) against the
    sha256 in its name: an S3 object has no seal, so one replaced after the image pass
    checked it would otherwise go into the shard unchecked (``ShardError``)."""
    def checked(index: int) -> memoryview:
        data = read(index)
        key = sources[index][0]
        if OBJECT_KEY.fullmatch(key) and hashlib.sha256(data).hexdigest() != object_sha256(key):
            raise ShardError(f"{key} changed after it was checked against its sha256")
        return data
    return checked


class _SourceReader:
    """Reads the members' bytes from their (file, offset) into two buffers in turn: a file
    named more than once (a spool file) stays open, any other (an object) is opened for
    its one read, and ``fstat``ed against its seal when it has one."""

    def __init__(self, sources: Sequence[tuple[str, int]], *, sizes: Sequence[int],
                 seals: Sequence[Seal | None] | None = None) -> None:
        self.sources, self.sizes = sources, sizes
        self.seals = seals or [None] * len(sources)
        # two buffers in turn: ``write_shard`` hashes one sample while the next is read
        self.buffers = [memoryview(bytearray(max(sizes, default=0))) for _ in range(2)]
        self.reads = 0
        counts = Counter(path for path, _ in sources)
        self.shared = {path for path, n in counts.items() if n > 1}
        self.open: dict[str, int] = {}

    def read(self, index: int) -> memoryview:
        """The bytes of member ``index`` (valid until the read after next); short at a
        file's end."""
        path, offset = self.sources[index]
        fd = self.open.get(path)
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
            if path in self.shared:
                self.open[path] = fd
        try:
            seal = self.seals[index]
            if seal is not None and seal_of(os.fstat(fd)) != seal:
                raise ShardError(f"{path} changed after it was checked against its sha256")
            buffer = self.buffers[self.reads % 2]
            self.reads += 1
            got = os.preadv(fd, [buffer[:self.sizes[index]]], offset)
        finally:
            if path not in self.shared:
                os.close(fd)
        return buffer[:got]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.open.values():
            os.close(fd)


@contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """A pool of ``workers`` processes for the image and shard jobs (None: run in-process).

    Processes, not threads: for small images the per-sample Python work (open, hash,
    headers) holds the GIL. The pool starts with ``forkserver``, since forking a process
    that runs Prefect's threads is not safe. Its processes are started at once (a pool
    starts one per job submitted), so their start and imports (about half a second) overlap
    what the caller does next. Every worker ends with this process
    (``tasks.processes.end_with_process``), so a ``kill -9`` of a publish leaves no worker writing on.
    """
    if workers <= 1:
        yield None
        return
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=end_with_process, initargs=(os.getpid(),)) as pool:
        for _ in range(workers):
            pool.submit(_started)
        yield pool


def _started() -> None:
    """A job that does nothing: one per worker makes the pool start them all."""


def run_jobs(pool: JobPool | None, function: Callable[[_Job], _Result],
             jobs: Sequence[_Job]) -> Iterator[_Result]:
    """``function`` over ``jobs``, results in job order, in ``pool`` when there is one."""
    if pool is None or len(jobs) <= 1:
        return map(function, jobs)
    return pool.map(function, jobs)


def read_back(path: Path) -> list[MemberRow]:
    """Every member actually found in a written shard (read back with tarfile): its name
    stem, extension, offset and size; for an image member also width and height (as a
    decoder sees the bytes, no orientation applied) and metadata (the metadata blocks the
    bytes still carry, comma-separated; None when none), None for json members."""
    rows: list[MemberRow] = []
    with path.open("rb") as fh:
        for name, offset, size in read_members(path):
            key, _, ext = name.partition(".")
            image = (None, None, None) if ext == "json" else _image_member(fh, offset, size)
            rows.append((key, ext, offset, size, *image))
    return rows


def shard_members(staging: Path, written: Mapping[str, WrittenShard]) -> pd.DataFrame:
    """The members the ``written`` shards were found to hold, one row each, sorted by shard:
    what the contracts compare the manifests with. A shard staged in ``staging`` is read
    back here (``read_back``); one staged under the root was read back by its job.

    Columns: shard (its name in the release), then ``MEMBER_COLUMNS``; width, height and
    metadata null for json members.
    """
    rows = []
    for name in sorted(written):
        members = written[name].members
        rows += [(name, *row) for row in (read_back(staging / safe_key(name))
                                          if members is None else members)]
    frame = pd.DataFrame(rows, columns=["shard", *MEMBER_COLUMNS])
    return frame.astype({"width": "Int64", "height": "Int64", "metadata": object})


def _image_member(fh: BinaryIO, offset: int, size: int) -> tuple[int | None, int | None,
                                                                    str | None]:
    fh.seek(offset)
    try:
        info = inspect_member(fh.read(size))
    except ValueError as exc:
        return None, None, f"unreadable: {exc}"
    return info.width, info.height, ",".join(info.metadata) or None


def checksums(staging: Path, *, known: Mapping[str, str] | None = None,
              remote: RemoteStaging | None = None) -> bytes:
    """``SHA256SUMS`` of every staged file (``sha256sum -c`` format, sorted by path).

    ``known`` gives digests already computed while writing (the shards), so they are not
    read again. With ``remote``, the files staged under the root count too; each must be in
    ``known`` (``KeyError`` otherwise: nothing is downloaded to hash it).
    """
    known = known or {}
    files: dict[str, Path | None] = {path.relative_to(staging).as_posix(): path
                                     for path in staging.rglob("*") if path.is_file()}
    for name in remote.files() if remote is not None else []:
        if name in files:
            raise ValueError(f"{name} is staged both in {staging} and under the root")
        files[name] = None
    lines = []
    for key in sorted(files):
        if key == CHECKSUMS:
            continue
        path = files[key]
        lines.append(f"{known[key] if path is None else known.get(key) or file_sha256(path)}"
                     f"  {key}\n")
    return "".join(lines).encode()


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def commit_release(root: Storage, staging: Path, version: str,
                   remote: RemoteStaging | None = None) -> str:
    """Move the staged release into ``releases/<version>``; return its URI.

    Local: one rename (refused when the target exists). S3: upload every file, the
    checksums last, since a release without ``SHA256SUMS`` is not a release; with
    ``remote``, first copy the files the workers staged under the root (server-side), and
    delete them once the release is whole.
    """
    check_new_release(root, version)
    prefix = release_prefix(version)
    if isinstance(root, LocalStorage):
        if remote is not None:
            raise ValueError("a local root stages every file in its staging folder")
        staging.rename(root.path / prefix)
        _fsync_dir(root.path / RELEASES)
        return str(root.path / prefix)
    if remote is not None:
        if not isinstance(root, S3Storage):
            raise TypeError(f"{root.uri}: files staged under the root need an S3 root")
        with ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="s3-copy") as copies:
            for done in [copies.submit(root.copy, remote.key(name), f"{prefix}/{name}")
                         for name in remote.files()]:
                done.result()
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == CHECKSUMS)
    for path in files:
        root.put_file(f"{prefix}/{path.relative_to(staging).as_posix()}", path)
    shutil.rmtree(staging, ignore_errors=True)
    if remote is not None:
        remote.remove()
    return f"{root.uri}/{prefix}"


def keep_refused_docs(root: Storage, staging: Path, version: str) -> str:
    """Copy the Data Docs and the contracts page (and results) of a refused release to
    ``releases/.refused-<version>/``, in the release's layout (the page's links hold)."""
    prefix = f"{RELEASES}/.refused-{check_version(version)}"
    for key in root.list(prefix):
        root.delete(key)
    docs = staging / DATA_DOCS
    kept = [*sorted(p for p in docs.rglob("*") if p.is_file()),
            *(staging / REPORT / name for name in (CONTRACTS_PAGE, CONTRACTS_RESULTS))]
    for path in (p for p in kept if p.is_file()):
        root.write_bytes(f"{prefix}/{path.relative_to(staging).as_posix()}",
                         path.read_bytes(), durable=False)
    root.sync()
    return f"{root.uri}/{prefix}"


def discard(staging: Path, remote: RemoteStaging | None = None) -> None:
    """Remove a staging folder (a release that was refused), and with ``remote`` what the
    workers staged under the root."""
    shutil.rmtree(staging, ignore_errors=True)
    if remote is not None:
        remote.remove()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
