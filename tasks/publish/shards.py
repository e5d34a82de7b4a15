"""WebDataset tar shards, reproducible byte for byte, with every member's offset known upfront.

A shard is a plain POSIX (ustar) tar: for each sample, ``<key>.<ext>`` (the published image
bytes: upright, no metadata) then ``<key>.json`` (its annotation), in sorted key order, every header fixed (mode
0644, uid/gid 0, no owner names, mtime ``MTIME``), ended by two zero blocks and padded to a
whole tar record, as GNU tar and Python's tarfile do. WebDataset groups members by the key
before the first dot of the file name; a key is an image_id (a UUID), or in the crops view
(``tasks.publish.crops``) a crop id ``<image_id>_<box_index>``, so it has no dot.

Because every header is 512 bytes and the data of each member is padded to 512, the place of
every member follows from the sizes alone: ``plan_shards`` cuts the samples into shards and
computes the offsets before a byte is written. The manifest is built from that plan, and
``write_shard`` checks that what it writes lands exactly where the plan said.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from _hashlib import HASH

BLOCK = 512
RECORD = 20 * BLOCK  # tar record size: the archive length is a multiple of it
MTIME = 0  # fixed member time: the bytes must not depend on when a release was cut
END_OF_ARCHIVE = 2 * BLOCK
WRITEBACK_BYTES = 32 << 20  # a shard's written bytes go to writeback in steps of this
_ZEROS = bytes(BLOCK)  # padding after a member's data
# an image at least this large is hashed by a helper thread while it is written; below it
# the handoff (about 25 us) costs more than the overlap saves
HASH_ASIDE_BYTES = 256 << 10


class ShardError(RuntimeError):
    """A sample's bytes differ from what the catalog recorded, or a member landed elsewhere."""


@dataclass(frozen=True)
class ShardMember:
    """One sample in a planned shard: where its two members' data sit."""

    key: str
    ext: str  # the image member's extension: jpg, png, webp
    shard: str  # name relative to the release, e.g. shards/train-000000.tar
    offset: int  # byte offset of the image data
    size: int
    json_offset: int
    json_size: int


def padded(size: int) -> int:
    """Bytes a member's data takes in a tar (a whole number of blocks)."""
    return -(-size // BLOCK) * BLOCK


def archive_size(payload: int) -> int:
    """Total shard length for ``payload`` bytes of headers and padded data."""
    return -(-(payload + END_OF_ARCHIVE) // RECORD) * RECORD


_USTAR_FIXED = (b"0000644\x00" + b"0000000\x00" * 2, b"%011o\x00" % MTIME,
                b"0" + bytes(100) + b"ustar\x0000" + bytes(64 + 16 + 167))
# what the fixed fields add to a header's checksum, its own field counted as 8 spaces
_USTAR_FIXED_SUM = sum(_USTAR_FIXED[0]) + sum(_USTAR_FIXED[1]) + 8 * 32 + sum(_USTAR_FIXED[2])


def member_header(name: str, size: int) -> bytes:
    """The fixed 512-byte ustar header of a regular file member.

    Byte for byte what ``tarfile.TarInfo.tobuf(format=USTAR_FORMAT)`` writes for mode 0644,
    uid/gid 0, empty owner names and mtime ``MTIME`` (a test holds it to that), built
    directly because tobuf costs about 18 us, a third of a small sample's budget.
    """
    encoded = name.encode("utf-8")
    if len(encoded) > 100 or size >= 8**11:
        raise ShardError(f"member does not fit one ustar header: {name!r} ({size} bytes)")
    mode_ids, mtime, tail = _USTAR_FIXED
    size_field = b"%011o\x00" % size
    checksum = sum(encoded) + sum(size_field) + _USTAR_FIXED_SUM  # the zero bytes add 0
    return (encoded.ljust(100, b"\x00") + mode_ids + size_field + mtime
            + b"%06o\x00 " % checksum + tail)


def plan_shards(samples: pd.DataFrame, *, split: str, max_bytes: int,
                max_count: int, folder: str = "shards") -> list[ShardMember]:
    """Cut samples (columns key, ext, size, json_size; in write order) into shards named
    ``<folder>/<split>-<n:06d>.tar``.

    A shard closes before it would pass ``max_bytes`` (its whole length, end blocks and
    record padding included) or hold more than ``max_count`` samples. A single sample larger
    than ``max_bytes`` gets a shard of its own.
    """
    sizes = samples["size"].to_numpy(dtype=np.int64)
    json_sizes = samples["json_size"].to_numpy(dtype=np.int64)
    footprint = 2 * BLOCK + (-(-sizes // BLOCK) * BLOCK) + (-(-json_sizes // BLOCK) * BLOCK)
    plan: list[ShardMember] = []
    shard_no, used, count = 0, 0, 0
    for key, ext, size, json_size, step in zip(samples["key"], samples["ext"], sizes,
                                                json_sizes, footprint, strict=True):
        if count and (count >= max_count or archive_size(used + int(step)) > max_bytes):
            shard_no, used, count = shard_no + 1, 0, 0
        offset = used + BLOCK
        json_offset = offset + padded(int(size)) + BLOCK
        plan.append(ShardMember(key=str(key), ext=str(ext),
                                shard=shard_name(split, shard_no, folder=folder),
                                offset=offset, size=int(size), json_offset=json_offset,
                                json_size=int(json_size)))
        used += int(step)
        count += 1
    return plan


def shard_name(split: str, number: int, *, folder: str = "shards") -> str:
    """The release-relative name of a split's ``number``-th shard in ``folder``."""
    return f"{folder}/{split}-{number:06d}.tar"


def group_by_shard(plan: Sequence[ShardMember]) -> dict[str, list[ShardMember]]:
    """The planned members of each shard, in order."""
    shards: dict[str, list[ShardMember]] = {}
    for member in plan:
        shards.setdefault(member.shard, []).append(member)
    return shards


def write_shard(path: Path, members: Sequence[ShardMember], *,
                image_bytes: Callable[[ShardMember], bytes | memoryview],
                json_bytes: Callable[[ShardMember], bytes],
                sha256: Callable[[ShardMember], str] | None = None) -> tuple[int, str]:
    """Write one planned shard to ``path`` (fsynced); return its length and sha256.

    ``image_bytes`` / ``json_bytes`` give each member's content (``image_bytes`` may return
    a view into a buffer it reuses, but not before the call after next: two buffers taken
    in turn); when ``sha256`` is given, every image is checked against it. Raises
    ``ShardError`` (and removes the partial file) when a content's size or hash differs
    from the plan.

    Each sample goes out in one ``writev`` of its pieces (no copy into a buffer); a large
    one is added to the shard's sha256 by a helper thread, which goes on hashing it while
    this thread writes it and reads the next (all three calls release the GIL, so a shard
    written alone uses two cores and is bound by its sha256 alone). The written ranges go to
    writeback as the shard grows (``start_writeback``), so the final fsync finds little
    left to write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    digest, position, flushed = hashlib.sha256(), 0, 0
    try:
        with ThreadPoolExecutor(1) as hasher:
            hashing: Future[None] | None = None  # the previous sample, still being hashed
            for member in members:
                data, meta = image_bytes(member), json_bytes(member)
                _check_member(member, data, meta, position=position, sha256=sha256)
                pieces = _sample_pieces(member, data, meta)
                if hashing is not None:
                    hashing.result()  # the digest takes the samples in order
                    hashing = None
                if len(data) >= HASH_ASIDE_BYTES:  # its buffer is not reused before the
                    hashing = hasher.submit(_update, digest, pieces)  # next read returns
                else:
                    _update(digest, pieces)
                position += _write_all(fd, pieces)
                if position - flushed >= WRITEBACK_BYTES:
                    start_writeback(fd, flushed, position - flushed)
                    flushed = position
            if hashing is not None:
                hashing.result()
        end = bytes(archive_size(position) - position)
        _update(digest, (end,))
        position += _write_all(fd, (end,))
        os.fsync(fd)
        return position, digest.hexdigest()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def _sample_pieces(member: ShardMember, data: bytes | memoryview,
                  meta: bytes) -> tuple[bytes | memoryview, ...]:
    """A sample's bytes in the tar, in order: image header, image, padding, json header,
    json, padding."""
    return (member_header(f"{member.key}.{member.ext}", len(data)), data,
            _ZEROS[:padded(len(data)) - len(data)],
            member_header(f"{member.key}.json", len(meta)), meta,
            _ZEROS[:padded(len(meta)) - len(meta)])


def _check_member(member: ShardMember, data: bytes | memoryview, meta: bytes, *,
                  position: int, sha256: Callable[[ShardMember], str] | None) -> None:
    """Raise ``ShardError`` unless the content has its planned size (and sha256) and would
    land at its planned offset."""
    if len(data) != member.size or len(meta) != member.json_size:
        raise ShardError(f"{member.key}: content size differs from the catalog")
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256(member):
        raise ShardError(f"{member.key}: image bytes do not match their sha256")
    if position + BLOCK != member.offset:
        raise ShardError(f"{member.key}: would land at {position + BLOCK}, "
                         f"planned {member.offset}")


def _update(digest: HASH, pieces: Sequence[bytes | memoryview]) -> None:
    for piece in pieces:
        digest.update(piece)


def _write_all(fd: int, pieces: Sequence[bytes | memoryview]) -> int:
    """Append ``pieces`` to ``fd``: one ``writev``, then the rest of a short write; return
    how many bytes that was."""
    total, done = sum(map(len, pieces)), os.writev(fd, pieces)
    rest = b"".join(pieces)[done:] if done < total else b""
    while rest:
        rest = rest[os.write(fd, rest):]
    return total


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes of ``fd`` from ``offset`` to disk now.

    Linux's ``POSIX_FADV_DONTNEED`` starts writeback of the dirty pages of the range and
    drops only the clean ones, so pages just written stay cached; without it a shard's
    pages would wait for the final fsync (the kernel writes dirty pages back on its own
    only past ``dirty_background_ratio`` of memory). A no-op where the call is missing.
    """
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def read_members(path: Path) -> Iterator[tuple[str, int, int]]:
    """(name, data offset, size) of every member of a tar, read with Python's tarfile."""
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            yield info.name, info.offset_data, info.size
