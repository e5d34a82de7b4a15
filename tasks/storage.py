"""One small adapter over a root URI: a local directory or ``s3://bucket/prefix``.

Nothing else in the code knows which one it is. Keys are ``/``-separated paths relative to
the root. Writes are atomic (a local temp file renamed into place; a single S3 PUT).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Protocol


class SourceError(RuntimeError):
    """The source or root itself is broken (unreachable bucket, missing folder or table)."""


class Storage(Protocol):
    """What the pipeline needs from a place that holds files."""

    uri: str

    def read_bytes(self, key: str) -> bytes:
        """The whole content of ``key``; ``FileNotFoundError`` when absent."""
        ...

    def write_bytes(self, key: str, data: bytes, *, durable: bool = True) -> None:
        """Atomically create or replace ``key`` (``durable``: on disk before returning)."""
        ...

    def sync(self) -> None:
        """Make every earlier non-durable write durable."""
        ...

    def read_range(self, key: str, offset: int, size: int) -> bytes:
        """``size`` bytes of ``key`` from byte ``offset`` (one sample out of a shard)."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Atomically create or replace ``key`` with the content of a local file (moved)."""
        ...

    def exists(self, key: str) -> bool:
        """True when ``key`` exists."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (recursively), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it is absent."""
        ...

    def check(self) -> None:
        """Raise ``SourceError`` when the root cannot be reached."""
        ...


def safe_key(key: str) -> str:
    """Normalise a relative key; raise ``ValueError`` when it escapes the root."""
    if not key or key.startswith(("/", "\\")) or "\\" in key or ":" in key.split("/")[0]:
        raise ValueError(f"not a relative path: {key!r}")
    parts = PurePosixPath(key).parts
    if any(p in ("..", "") for p in parts):
        raise ValueError(f"path escapes the source: {key!r}")
    return "/".join(p for p in parts if p != ".")


class LocalStorage:
    """A directory on the local file system."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root).expanduser().resolve()
        self.uri = str(self.path)

    def _p(self, key: str) -> Path:
        return self.path / safe_key(key)

    def read_bytes(self, key: str) -> bytes:
        """The whole content of ``key``."""
        return self._p(key).read_bytes()

    def write_bytes(self, key: str, data: bytes, *, durable: bool = True) -> None:
        """Write to a temp file in the same folder (fsync when durable), rename into place."""
        target = self._p(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def sync(self) -> None:
        """Flush the file system's dirty pages (one call per batch, not one fsync per file)."""
        os.sync()

    def read_range(self, key: str, offset: int, size: int) -> bytes:
        """Seek and read; a short read (past the end) raises ``EOFError``."""
        with self._p(key).open("rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
        if len(data) != size:
            raise EOFError(f"{key}: wanted {size} bytes at {offset}, got {len(data)}")
        return data

    def put_file(self, key: str, path: Path) -> None:
        """Rename (or copy, across file systems) the file into place."""
        target = self._p(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except OSError:
            shutil.copyfile(path, target.with_name(f".tmp-{target.name}"))
            os.replace(target.with_name(f".tmp-{target.name}"), target)
            Path(path).unlink()

    def exists(self, key: str) -> bool:
        """True when the file exists."""
        return self._p(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        """Every file under ``prefix``, skipping hidden temp files of interrupted writes."""
        base = self._p(prefix) if prefix else self.path
        if not base.is_dir():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                out.append(Path(dirpath, name).relative_to(self.path).as_posix())
        return sorted(out)

    def delete(self, key: str) -> None:
        """Remove the file if present."""
        self._p(key).unlink(missing_ok=True)

    def check(self) -> None:
        """The root must be an existing directory."""
        if not self.path.is_dir():
            raise SourceError(f"not a directory: {self.path}")


class S3Storage:
    """A prefix in an S3 bucket, through boto3 (``AWS_ENDPOINT_URL`` selects the server)."""

    def __init__(self, uri: str, *, endpoint_url: str | None = None) -> None:
        import boto3

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise SourceError(f"no bucket in {uri!r}")
        self.uri = uri.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url)

    def _k(self, key: str) -> str:
        key = safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def read_bytes(self, key: str) -> bytes:
        """GET the object; a missing key raises ``FileNotFoundError``."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(key) from exc

    def write_bytes(self, key: str, data: bytes, *, durable: bool = True) -> None:
        """PUT the object (atomic and durable in S3 once it returns)."""
        self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)

    def sync(self) -> None:
        """Nothing to do: a PUT is durable when it returns."""

    def read_range(self, key: str, offset: int, size: int) -> bytes:
        """A ranged GET."""
        byte_range = f"bytes={offset}-{offset + size - 1}"
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._k(key), Range=byte_range)
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(key) from exc
        data: bytes = body["Body"].read()
        if len(data) != size:
            raise EOFError(f"{key}: wanted {size} bytes at {offset}, got {len(data)}")
        return data

    def put_file(self, key: str, path: Path) -> None:
        """Upload the file (multipart for large ones), then remove the local copy."""
        self.client.upload_file(str(path), self.bucket, self._k(key))
        Path(path).unlink()

    def exists(self, key: str) -> bool:
        """HEAD the object."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._k(key))
            return True
        except ClientError:
            return False

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        full = self._k(prefix) if prefix else self.prefix
        if full:
            full = full.rstrip("/") + "/"
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full
        )
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"][strip:]

    def list(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, sorted."""
        return sorted(self._iter_keys(prefix))

    def delete(self, key: str) -> None:
        """DELETE the object (no error when absent)."""
        self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def check(self) -> None:
        """The bucket must exist and answer."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(f"cannot reach bucket {self.bucket!r}: {exc}") from exc


def open_storage(uri: str | Path, *, endpoint_url: str | None = None) -> Storage:
    """The adapter for ``uri``: ``s3://bucket/prefix`` or a local directory."""
    text = str(uri)
    if text.startswith("s3://"):
        return S3Storage(text, endpoint_url=endpoint_url)
    return LocalStorage(text)
