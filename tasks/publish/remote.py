"""Worker-side staging: publishing an S3 root on a cluster whose workers share no folder.

Without a cluster, or with a local root, every job writes into the flow's staging folder.
With an S3 root on a Dask cluster the image, shard and crop jobs run on machines that cannot
see that folder, so they stage under the root instead, at the run's prefix
``releases/.staging-<version>-<hex>/`` (``RemoteStaging``):

- each job builds its file (a spool file, a shard, a crop spool) in a temporary folder of
  its own machine and uploads it to the prefix, under the name it would have in the folder;
- its inputs come by ranged GETs (``RemoteSources``): stored objects, spool files and the
  shards the crops are cut from. Members lying back to back in one file come in one GET.

The flow's process keeps the small files (manifests, exports, report, checksums) in its
local staging folder. ``writer.commit_release`` copies the prefix's files into
``releases/<version>/`` server-side, uploads the local ones, ``SHA256SUMS`` last, then
deletes the prefix; ``writer.remove_dead_staging`` deletes the prefixes killed runs left.
Nothing under a staging prefix is a release: readers find releases by their ``SHA256SUMS``.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Self, TypeVar

from schemas.release import RELEASES, check_version
from tasks.storage import S3Storage, Storage, safe_key

_Item = TypeVar("_Item")
_Read = TypeVar("_Read")

STAGING_PREFIX = ".staging-"  # releases/.staging-<version>-<hex>: a release being built
SPAN_BYTES = 16 << 20  # at most this much in one ranged GET ...
READ_AHEAD = 8  # ... and this many GETs in flight (threads), ahead of the writer
# An image published as stored stays in its object when it is at least this large: the
# shard job GETs it there. A smaller one goes into a spool file with its neighbours, so the
# shard job reads many in one GET (requests, not bytes, bound small objects on S3).
IN_PLACE_BYTES = 256 << 10


@dataclass(frozen=True)
class RemoteStaging:
    """A run's staging prefix under an S3 dataset root (picklable: a URI, not a client)."""

    root_uri: str
    endpoint_url: str | None
    prefix: str  # releases/.staging-<version>-<hex>

    def key(self, name: str) -> str:
        """The key under the root of the release file ``name`` (never outside the prefix)."""
        return f"{self.prefix}/{safe_key(name)}"

    def name(self, key: str) -> str:
        """The release file name of a key under the prefix (``key``'s inverse)."""
        if not key.startswith(f"{self.prefix}/"):
            raise ValueError(f"{key} is not under {self.prefix}/")
        return key[len(self.prefix) + 1:]

    def storage(self) -> S3Storage:
        """The root, with a client built in this process (credentials from its environment)."""
        return S3Storage(self.root_uri, endpoint_url=self.endpoint_url)

    def files(self) -> list[str]:
        """The names of every file staged under the prefix so far, sorted."""
        return [self.name(key) for key in self.storage().list(self.prefix)]

    def remove(self, folder: str = "") -> None:
        """Delete every key under the prefix (or under its ``folder``)."""
        store = self.storage()
        for key in store.list(self.key(folder) if folder else self.prefix):
            store.delete(key)


def remote_staging(root: Storage, version: str, *, endpoint_url: str | None) -> RemoteStaging:
    """A fresh staging prefix for a release of ``root`` (an ``S3Storage``)."""
    if not isinstance(root, S3Storage):
        raise TypeError(f"{root.uri}: worker-side staging is for S3 roots")
    prefix = f"{RELEASES}/{STAGING_PREFIX}{check_version(version)}-{secrets.token_hex(4)}"
    return RemoteStaging(root.uri, endpoint_url, prefix)


def dead_staging_keys(root: Storage) -> list[str]:
    """Every key under a staging prefix of ``root`` (``releases/.staging-*/``)."""
    return [key for key in root.list(RELEASES)
            if key.split("/")[1].startswith(STAGING_PREFIX)]


class ReadAhead(Generic[_Item, _Read]):
    """``read`` called for ``items`` in turn, with up to ``ahead`` calls running ahead in
    threads (S3 GETs wait on the network, not the CPU), so memory holds about ``ahead``
    results. Leaving the ``with`` block cancels what is still queued."""

    def __init__(self, read: Callable[[_Item], _Read], items: Sequence[_Item], *,
                 ahead: int = READ_AHEAD) -> None:
        self.read, self.ahead = read, ahead
        self.pool = ThreadPoolExecutor(ahead, thread_name_prefix="read-ahead")
        self.pending: deque[tuple[_Item, Future[_Read]]] = deque()
        self.items, self.submitted = items, 0

    def _fill(self) -> None:
        while len(self.pending) < self.ahead and self.submitted < len(self.items):
            item = self.items[self.submitted]
            self.pending.append((item, self.pool.submit(self.read, item)))
            self.submitted += 1

    def next(self) -> tuple[_Item, _Read]:
        """The next item and what ``read`` returned for it (``StopIteration`` past the end)."""
        self._fill()
        if not self.pending:
            raise StopIteration
        item, future = self.pending.popleft()
        got = future.result()
        self._fill()
        return item, got

    def read_next(self, item: _Item) -> _Read:
        """What ``read(item)`` returned; ``item`` must be the next of ``items``."""
        if not self.pending or self.pending[0][0] != item:
            self._fill()
        if not self.pending or self.pending[0][0] != item:
            raise ValueError(f"{item} read out of order")
        return self.next()[1]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RemoteSources:
    """Reads members' bytes from (key, offset) sources under an S3 root, in member order.

    Consecutive members that lie back to back in one object (a spool file, a shard) are
    fetched by one ranged GET of at most ``SPAN_BYTES`` (one alone may pass it); up to
    ``READ_AHEAD`` GETs run ahead (``ReadAhead``), so memory holds about that many spans.
    ``read(i)`` must be called for i = 0, 1, 2, ... in turn.
    """

    def __init__(self, storage: Storage, sources: Sequence[tuple[str, int]], *,
                 sizes: Sequence[int]) -> None:
        spans = _spans(sources, sizes)  # (key, start, length, [(member, offset in span)])
        self.where: dict[int, tuple[int, int, int]] = {}  # member -> (span, start, size)
        for n, (_, _, _, members) in enumerate(spans):
            for index, start in members:
                self.where[index] = (n, start, sizes[index])
        self.gets = ReadAhead(lambda n: storage.read_range(*spans[n][:3]), range(len(spans)))
        self.current: tuple[int, bytes] | None = None

    def read(self, index: int) -> memoryview:
        """The bytes of member ``index``."""
        span, start, size = self.where[index]
        while self.current is None or self.current[0] != span:
            self.current = self.gets.next()
        return memoryview(self.current[1])[start:start + size]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.gets.__exit__(*exc)


def _spans(sources: Sequence[tuple[str, int]], sizes: Sequence[int]
           ) -> list[tuple[str, int, int, list[tuple[int, int]]]]:
    """Group members into ranged GETs: runs of back-to-back members of one key."""
    spans: list[tuple[str, int, int, list[tuple[int, int]]]] = []
    for index, ((key, offset), size) in enumerate(zip(sources, sizes, strict=True)):
        if spans:
            last_key, start, length, members = spans[-1]
            if last_key == key and start + length == offset and length + size <= SPAN_BYTES:
                members.append((index, length))
                spans[-1] = (key, start, length + size, members)
                continue
        spans.append((key, offset, size, [(index, 0)]))
    return spans
