"""Writing a release: a staging folder filled file by file, then committed in one step.

Every file of a release is first written into a local staging folder (under
``ROOT/releases/`` for a local root, so the commit is one rename; a temporary folder for an
S3 root, uploaded with ``SHA256SUMS`` last). A release folder that exists is never touched:
``check_new_release`` refuses it up front and ``commit_release`` again at the end. Names
inside the staging folder are checked with ``safe_key``, so nothing lands outside it.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.release import CHECKSUMS, DATA_DOCS, RELEASES, check_version
from tasks.publish.shards import ShardMember, read_members, write_shard
from tasks.storage import LocalStorage, Storage, open_storage, safe_key

OBJECT_KEY = re.compile(r"^objects/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}\.[a-z]{2,4}$")


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
    name = f".staging-{check_version(version)}-{secrets.token_hex(4)}"
    if isinstance(root, LocalStorage):
        path = root.path / RELEASES / name
        path.mkdir(parents=True)
        return path
    return Path(tempfile.mkdtemp(prefix=name))


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
class ShardJob:
    """Everything one process needs to write one shard (picklable)."""

    path: Path
    members: list[ShardMember]
    object_keys: list[str]  # where each member's image is under the dataset root
    json_members: list[bytes]
    sha256: list[str]
    root_uri: str
    endpoint_url: str | None = None


def run_shard_job(job: ShardJob) -> tuple[str, str]:
    """Write one shard, reading and checking each image; return (path, sha256)."""
    root = open_storage(job.root_uri, endpoint_url=job.endpoint_url)
    position = {m.key: i for i, m in enumerate(job.members)}
    if isinstance(root, LocalStorage):  # a plain open() per image: no per-call path checks
        base = f"{root.path}/"
        paths = [base + k for k in job.object_keys if OBJECT_KEY.match(k)]
        if len(paths) != len(job.object_keys):
            raise ValueError("an object key is not objects/ab/cd/<sha256>.<ext>")

        def image(m: ShardMember) -> bytes:
            with open(paths[position[m.key]], "rb", buffering=0) as fh:
                return fh.read()
    else:
        def image(m: ShardMember) -> bytes:
            return root.read_bytes(job.object_keys[position[m.key]])
    _, digest = write_shard(job.path, job.members, image_bytes=image,
                            json_bytes=lambda m: job.json_members[position[m.key]],
                            sha256=lambda m: job.sha256[position[m.key]])
    return str(job.path), digest


def write_shards(jobs: Sequence[ShardJob], *, workers: int) -> list[str]:
    """Run the shard jobs, in ``workers`` processes when there are several; return digests.

    Processes, not threads: for small images the per-sample Python work (open, hash,
    headers) holds the GIL. The pool starts with ``forkserver``, since forking a process
    that runs Prefect's threads is not safe.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [run_shard_job(job)[1] for job in jobs]
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        return [digest for _, digest in pool.map(run_shard_job, jobs)]


def shard_members(staging: Path) -> pd.DataFrame:
    """Every member actually found in the written shards (read back with tarfile).

    Columns: shard, key, ext, offset, size; what the contracts compare the manifests with.
    """
    rows = []
    for path in sorted((staging / "shards").glob("*.tar")):
        shard = path.relative_to(staging).as_posix()
        for name, offset, size in read_members(path):
            key, _, ext = name.partition(".")
            rows.append((shard, key, ext, offset, size))
    return pd.DataFrame(rows, columns=["shard", "key", "ext", "offset", "size"])


def checksums(staging: Path, *, known: Mapping[str, str] | None = None) -> bytes:
    """``SHA256SUMS`` of every staged file (``sha256sum -c`` format, sorted by path).

    ``known`` gives digests already computed while writing (the shards), so they are not
    read again.
    """
    known = known or {}
    lines = []
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        key = path.relative_to(staging).as_posix()
        if key == CHECKSUMS:
            continue
        lines.append(f"{known.get(key) or file_sha256(path)}  {key}\n")
    return "".join(lines).encode()


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def commit_release(root: Storage, staging: Path, version: str) -> str:
    """Move the staged release into ``releases/<version>``; return its URI.

    Local: one rename (refused when the target exists). S3: upload every file, the
    checksums last, since a release without ``SHA256SUMS`` is not a release.
    """
    check_new_release(root, version)
    prefix = release_prefix(version)
    if isinstance(root, LocalStorage):
        staging.rename(root.path / prefix)
        _fsync_dir(root.path / RELEASES)
        return str(root.path / prefix)
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == CHECKSUMS)
    for path in files:
        root.put_file(f"{prefix}/{path.relative_to(staging).as_posix()}", path)
    shutil.rmtree(staging, ignore_errors=True)
    return f"{root.uri}/{prefix}"


def keep_refused_docs(root: Storage, staging: Path, version: str) -> str:
    """Copy the Data Docs of a refused release to ``releases/.refused-<version>/``."""
    prefix = f"{RELEASES}/.refused-{check_version(version)}"
    for key in root.list(prefix):
        root.delete(key)
    docs = staging / DATA_DOCS
    for path in sorted(p for p in docs.rglob("*") if p.is_file()):
        root.write_bytes(f"{prefix}/{DATA_DOCS}/{path.relative_to(docs).as_posix()}",
                         path.read_bytes(), durable=False)
    root.sync()
    return f"{root.uri}/{prefix}"


def discard(staging: Path) -> None:
    """Remove a staging folder (a release that was refused)."""
    shutil.rmtree(staging, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
