"""One small adapter over a root URI: a local directory or ``s3://bucket/prefix``.

Nothing else in the code knows which one it is. Keys are ``/``-separated paths relative to
the root. Writes are atomic (a local temp file renamed into place; a single S3 PUT).
"""

from __future__ import annotations

import builtins
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Protocol


class SourceError(RuntimeError):
    """The source or root itself is broken (unreachable bucket, missing folder or table)."""


class InputRefused(Exception):
    """An input of a source that ``read_input`` refuses to read (one of the kinds below)."""


class OutsideSourceError(InputRefused):
    """The key resolves (through a symlink) to a place outside the source root."""


class NotRegularFileError(InputRefused):
    """The key is a FIFO, a device, a socket or a folder, not a regular file."""


class TooLargeError(InputRefused):
    """The input is larger than the size cap."""


class Storage(Protocol):
    """What the pipeline needs from a place that holds files."""

    uri: str

    def read_bytes(self, key: str) -> bytes:
        """The whole content of ``key``; ``FileNotFoundError`` when absent."""
        ...

    def read_input(self, key: str, *, max_bytes: int) -> bytes:
        """An untrusted input of a source, at most ``max_bytes`` (never more than one byte past
        the cap is read); ``InputRefused`` subclasses say why not, ``FileNotFoundError``."""
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

    def remove_partial_writes(self) -> builtins.list[str]:
        """Remove what interrupted writes left (temp files, unfinished uploads); list them.

        Only safe while no other writer is active (under the root's writer lock).
        """
        ...


def safe_key(key: str) -> str:
    """Normalise a relative key; raise ``ValueError`` when it escapes the root."""
    if not key or key.startswith(("/", "\\")) or "\\" in key or ":" in key.split("/")[0]:
        raise ValueError(f"not a relative path: {key!r}")
    parts = PurePosixPath(key).parts
    if any(p in ("..", "") for p in parts):
        raise ValueError(f"path escapes the source: {key!r}")
    return "/".join(p for p in parts if p != ".")


def process_umask() -> int:
    """This process's umask, read from ``/proc`` (Linux) without changing it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc: read by setting, then restore at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file: 0666 less the umask."""
    return 0o666 & ~process_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` would give a new folder: 0777 less the umask."""
    return 0o777 & ~process_umask()


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

    def read_input(self, key: str, *, max_bytes: int) -> bytes:
        """A regular file whose real path is under the root, of at most ``max_bytes``.

        A symlink is followed only while it stays under the root. FIFOs, devices and sockets
        are refused before opening, and ``O_NONBLOCK`` keeps one swapped in meanwhile from
        blocking (``fstat`` then refuses it); ``O_NOFOLLOW`` refuses a final link swapped in.
        """
        real = Path(os.path.realpath(self._p(key)))
        if not real.is_relative_to(self.path):
            raise OutsideSourceError(f"{key} is a link that leads out of {self.path}")
        if not stat.S_ISREG(os.stat(real).st_mode):
            raise NotRegularFileError(f"{key} is not a regular file")
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotRegularFileError(f"{key} is not a regular file")
            if info.st_size > max_bytes:
                raise TooLargeError(f"{key}: {info.st_size} bytes, more than {max_bytes}")
            data = fh.read(info.st_size + 1)
            if len(data) > info.st_size:  # grew since fstat: read on, up to one byte past the cap
                data += fh.read(max_bytes + 1 - len(data))
        if len(data) > max_bytes:
            raise TooLargeError(f"{key}: more than {max_bytes} bytes")
        return data

    def write_bytes(self, key: str, data: bytes, *, durable: bool = True) -> None:
        """Write to a temp file in the same folder (fsync when durable), rename into place."""
        target = self._p(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
        try:
            os.fchmod(fd, file_mode())  # mkstemp makes 0600: other readers need the umask's
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
        if offset < 0 or size < 0:
            raise ValueError(f"{key}: no range of {size} bytes at {offset}")
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
        os.chmod(path, file_mode())  # staged by mkstemp/mkdtemp code: 0600 otherwise
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
        """Every file under ``prefix``, skipping hidden temp files of interrupted writes.

        Symlinked folders are not descended into (one may lead out of the root); a symlinked
        file is listed, and ``read_input`` checks where it leads.
        """
        base = self._p(prefix) if prefix else self.path
        if not base.is_dir() or not Path(os.path.realpath(base)).is_relative_to(self.path):
            return []
        out = []
        for dirpath, _dirs, files in os.walk(base, followlinks=False):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                out.append(Path(dirpath, name).relative_to(self.path).as_posix())
        return sorted(out)

    def delete(self, key: str) -> None:
        """Remove the file if present."""
        self._p(key).unlink(missing_ok=True)

    def remove_partial_writes(self) -> builtins.list[str]:
        """Delete the ``.tmp-*`` files of writes a killed run never renamed into place."""
        removed = []
        for dirpath, _dirs, files in os.walk(self.path):
            for name in files:
                if name.startswith(".tmp-"):
                    path = Path(dirpath, name)
                    path.unlink(missing_ok=True)
                    removed.append(path.relative_to(self.path).as_posix())
        return sorted(removed)

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
        self.endpoint_url = endpoint_url
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its boto3 client (which does not pickle): a process or Dask worker
        that receives it builds its own, with credentials from its own environment."""
        return {k: v for k, v in self.__dict__.items() if k != "client"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import boto3

        self.__dict__.update(state)
        self.client = boto3.client("s3", endpoint_url=self.endpoint_url)

    def _k(self, key: str) -> str:
        key = safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def read_bytes(self, key: str) -> bytes:
        """GET the object; a missing key raises ``FileNotFoundError``."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(key) from exc

    def read_input(self, key: str, *, max_bytes: int) -> bytes:
        """A ranged GET of the first ``max_bytes + 1`` bytes; ``TooLargeError`` past the cap,
        decided from the object's size in the reply before its body is read."""
        from botocore.exceptions import ClientError

        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self._k(key),
                                         Range=f"bytes=0-{max_bytes}")
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(key) from exc
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # a first byte out of range: the object is empty
            raise
        with got["Body"] as body:
            total = (got.get("ContentRange") or "").rpartition("/")[2]  # "bytes 0-N/SIZE"
            size = int(total) if total.isdigit() else int(got.get("ContentLength") or 0)
            if size > max_bytes:
                raise TooLargeError(f"{key}: {size} bytes, more than {max_bytes}")
            data: bytes = body.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise TooLargeError(f"{key}: more than {max_bytes} bytes")
        return data

    def write_bytes(self, key: str, data: bytes, *, durable: bool = True) -> None:
        """PUT the object (atomic and durable in S3 once it returns)."""
        self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)

    def sync(self) -> None:
        """Nothing to do: a PUT is durable when it returns."""

    def read_range(self, key: str, offset: int, size: int) -> bytes:
        """A ranged GET; as the local read, a range past the end (S3's 416 InvalidRange, or
        a short body) raises ``EOFError`` and an absent key ``FileNotFoundError``."""
        if offset < 0 or size < 0:
            raise ValueError(f"{key}: no range of {size} bytes at {offset}")
        if size == 0:
            return b""
        from botocore.exceptions import ClientError

        byte_range = f"bytes={offset}-{offset + size - 1}"
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._k(key), Range=byte_range)
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(key) from exc
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                raise EOFError(f"{key}: wanted {size} bytes at {offset}, past the end") from exc
            raise
        data: bytes = body["Body"].read()
        if len(data) != size:
            raise EOFError(f"{key}: wanted {size} bytes at {offset}, got {len(data)}")
        return data

    def put_file(self, key: str, path: Path) -> None:
        """Upload the file (multipart for large ones), then remove the local copy."""
        self.client.upload_file(str(path), self.bucket, self._k(key))
        Path(path).unlink()

    def copy(self, key: str, to: str) -> None:
        """Copy the object ``key`` to ``to`` inside the bucket, server-side (no bytes pass
        through this process; boto3 switches to a multipart copy for large objects)."""
        self.client.copy({"Bucket": self.bucket, "Key": self._k(key)}, self.bucket,
                         self._k(to))

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

    def remove_partial_writes(self) -> builtins.list[str]:
        """Abort the multipart uploads under the prefix that a killed run left unfinished."""
        prefix = f"{self.prefix}/" if self.prefix else ""
        removed = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for upload in page.get("Uploads", []):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                   UploadId=upload["UploadId"])
                removed.append(upload["Key"][len(prefix):])
        return sorted(removed)

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
