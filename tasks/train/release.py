"""A release checked before any training, and its hands read from the chosen view.

The checks, in order, each a ``ReleaseError`` naming the file: ``SHA256SUMS`` is there and
well formed; ``release.json`` and every manifest (``manifests/`` and ``crops/manifests/``)
is listed and matches its digest, and no manifest is unlisted; the manifests read have the
release schema (``MANIFEST`` / ``CROPS_MANIFEST``: the same columns of the same types);
every shard they point to is listed, present, long enough for its last member and (by
default) matches its digest. Only the shards of the splits and the view trained on are read.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.release import CHECKSUMS, CROPS, CROPS_MANIFEST, MANIFEST, MANIFESTS, RELEASE_INFO
from tasks.publish.exports import ExportError, release_classes
from tasks.storage import LocalStorage, Storage, open_storage
from tasks.train.hands import Hands, LabelError, hands_from_crops, hands_from_frames

_CHECKSUM_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")  # fullmatch: sha256sum's format
_HASH_PIECE = 8 << 20
TRAIN_SPLIT = "train"
EVAL_SPLITS: tuple[str, ...] = ("val", "test")  # the first one present is evaluated on


class ReleaseError(ValueError):
    """The release cannot be trained from: a checksum, a file or a schema is wrong."""


@dataclass(frozen=True)
class TrainingRelease:
    """What a run trains and evaluates on, from a checked release."""

    uri: str
    version: str
    checksums_sha256: str  # digest of the release's SHA256SUMS file
    classes: tuple[str, ...]  # the gesture head's outputs, in the release's class order
    view: str  # full | crops
    train_split: str
    eval_split: str
    train: Hands
    evaluation: Hands

    def describe(self) -> dict[str, Any]:
        """The release as recorded in run.json."""
        return {"version": self.version, "uri": self.uri,
                "sha256sums_sha256": self.checksums_sha256, "view": self.view,
                "train_split": self.train_split, "eval_split": self.eval_split,
                "classes": list(self.classes), "train_images": self.train.n_images,
                "train_hands": len(self.train), "eval_hands": len(self.evaluation)}


def parse_checksums(data: bytes) -> dict[str, str]:
    """``SHA256SUMS`` as ``{path: digest}``; ReleaseError on a malformed line or a path
    listed twice."""
    listed: dict[str, str] = {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ReleaseError(f"{CHECKSUMS} is not text") from None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _CHECKSUM_LINE.fullmatch(line)
        if match is None or match[2] in listed:
            raise ReleaseError(f"{CHECKSUMS} line {number} is not '<sha256>  <path>' "
                               "or lists a path twice")
        listed[match[2]] = match[1]
    return listed


def schema_problems(schema: pa.Schema, expected: pa.Schema) -> list[str]:
    """How ``schema`` differs from ``expected`` in column names and types (nullability and
    metadata aside); empty when it does not."""
    have = {f.name: f.type for f in schema}
    want = {f.name: f.type for f in expected}
    problems = [f"missing column {n}" for n in want if n not in have]
    problems += [f"unexpected column {n}" for n in have if n not in want]
    problems += [f"column {n} is {have[n]}, expected {t}" for n, t in want.items()
                 if n in have and not have[n].equals(t)]
    return problems


def _sha256(storage: Storage, key: str) -> str:
    """sha256 of a release file, read in pieces when it is local."""
    digest = hashlib.sha256()
    if isinstance(storage, LocalStorage):
        with (storage.path / key).open("rb") as fh:
            while piece := fh.read(_HASH_PIECE):
                digest.update(piece)
    else:  # no streaming read in the storage adapter: one GET
        digest.update(storage.read_bytes(key))
    return digest.hexdigest()


def _read_checked(storage: Storage, key: str, listed: Mapping[str, str]) -> bytes:
    """A small release file, its bytes checked against ``SHA256SUMS``."""
    if key not in listed:
        raise ReleaseError(f"{key} is not listed in {CHECKSUMS}")
    try:
        data = storage.read_bytes(key)
    except FileNotFoundError:
        raise ReleaseError(f"{key} is listed in {CHECKSUMS} but missing") from None
    if hashlib.sha256(data).hexdigest() != listed[key]:
        raise ReleaseError(f"{key} does not match its digest in {CHECKSUMS}")
    return data


def check_documents(storage: Storage, listed: Mapping[str, str]) -> dict[str, bytes]:
    """release.json and every manifest of both views, checked; ``{key: bytes}``."""
    manifests = {k for k in listed if _is_manifest(k)}
    manifests |= {k for prefix in (MANIFESTS, f"{CROPS}/{MANIFESTS}")
                  for k in storage.list(prefix) if _is_manifest(k)}
    keys = [RELEASE_INFO, *sorted(manifests)]
    return {key: _read_checked(storage, key, listed) for key in keys}


def _is_manifest(key: str) -> bool:
    parent = str(PurePosixPath(key).parent)
    return parent in (MANIFESTS, f"{CROPS}/{MANIFESTS}") and key.endswith(".parquet")


def read_manifest(data: bytes, *, key: str, expected: pa.Schema) -> pa.Table:
    """A manifest of the expected schema; ReleaseError when it is not Parquet or differs."""
    try:
        table = pq.read_table(io.BytesIO(data))
    except (OSError, pa.ArrowException) as exc:
        raise ReleaseError(f"{key} is not a readable Parquet manifest: {exc}") from None
    problems = schema_problems(table.schema, expected)
    if problems:
        raise ReleaseError(f"{key} has another schema than the release's: "
                           f"{'; '.join(problems[:6])}")
    return table


def choose_splits(documents: Iterable[str]) -> tuple[str, str]:
    """(train split, evaluation split): ``train``, and ``val`` when present, else ``test``."""
    present = {PurePosixPath(k).stem for k in documents
               if str(PurePosixPath(k).parent) == MANIFESTS}
    if TRAIN_SPLIT not in present:
        raise ReleaseError(f"the release has no {MANIFESTS}/{TRAIN_SPLIT}.parquet")
    for split in EVAL_SPLITS:
        if split in present:
            return TRAIN_SPLIT, split
    raise ReleaseError(f"the release has no evaluation split (one of {EVAL_SPLITS})")


def choose_view(view: str, documents: Iterable[str], splits: Iterable[str]) -> str:
    """``full`` or ``crops``: ``auto`` takes the crops view when it holds every split."""
    have = all(f"{CROPS}/{MANIFESTS}/{s}.parquet" in set(documents) for s in splits)
    if view == "crops" and not have:
        raise ReleaseError(f"the release has no crops view ({CROPS}/{MANIFESTS}/) for "
                           f"{', '.join(splits)}")
    if view == "auto":
        return "crops" if have else "full"
    return view


def check_shards(storage: Storage, tables: Iterable[pa.Table], listed: Mapping[str, str], *,
                 hash_shards: bool) -> None:
    """Every shard the tables point to: listed, present, as long as the end of its last
    member, and matching its digest when ``hash_shards``."""
    ends: dict[str, int] = {}
    for table in tables:
        end = pc.add(table["offset"], table["size"])
        grouped = pa.table({"shard": table["shard"], "end": end}).group_by("shard")
        for row in grouped.aggregate([("end", "max")]).to_pylist():
            ends[row["shard"]] = max(ends.get(row["shard"], 0), row["end_max"])
    for shard in sorted(ends):
        if shard not in listed:
            raise ReleaseError(f"shard {shard} is not listed in {CHECKSUMS}")
        if not storage.exists(shard):
            raise ReleaseError(f"shard {shard} is missing")
        if not _reaches(storage, shard, ends[shard]):
            raise ReleaseError(f"shard {shard} is shorter than its members reach "
                               f"({ends[shard]} bytes)")
        if hash_shards and _sha256(storage, shard) != listed[shard]:
            raise ReleaseError(f"shard {shard} does not match its digest in {CHECKSUMS}")


def _reaches(storage: Storage, key: str, end: int) -> bool:
    """True when ``key`` is at least ``end`` bytes long (its last byte is read)."""
    try:
        storage.read_range(key, end - 1, 1)
    except EOFError:
        return False
    except Exception as exc:  # S3 answers a range past the end with an InvalidRange error
        if getattr(exc, "response", {}).get("Error", {}).get("Code") == "InvalidRange":
            return False
        raise
    return True


def _classes(storage: Storage) -> tuple[str, ...]:
    try:
        return release_classes(storage)
    except ExportError as exc:
        raise ReleaseError(str(exc)) from None


def _version(info: bytes, uri: str) -> str:
    try:
        parsed = json.loads(info)
    except ValueError:
        raise ReleaseError(f"{RELEASE_INFO} is not JSON") from None
    version = parsed.get("version") if isinstance(parsed, dict) else None
    return str(version) if version else PurePosixPath(uri.rstrip("/")).name


def open_release(uri: str, *, view: str = "auto", hash_shards: bool = True,
                 endpoint_url: str | None = None) -> TrainingRelease:
    """Check the release at ``uri`` (a folder or ``s3://``) and read the hands of its train
    and evaluation splits from ``view`` (auto, full or crops). Raises ReleaseError."""
    storage = open_storage(uri, endpoint_url=endpoint_url)
    try:
        sums = storage.read_bytes(CHECKSUMS)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ReleaseError(f"not a release: no {CHECKSUMS} in {uri}") from None
    listed = parse_checksums(sums)
    documents = check_documents(storage, listed)
    splits = choose_splits(documents)
    chosen = choose_view(view, documents, splits)
    folder, schema = (f"{CROPS}/{MANIFESTS}", CROPS_MANIFEST) if chosen == "crops" \
        else (MANIFESTS, MANIFEST)
    keys = [f"{folder}/{split}.parquet" for split in splits]
    tables = [read_manifest(documents[k], key=k, expected=schema) for k in keys]
    check_shards(storage, tables, listed, hash_shards=hash_shards)
    classes = _classes(storage)
    read = hands_from_crops if chosen == "crops" else hands_from_frames
    try:
        train, evaluation = (read(t, classes=classes, where=k)
                             for t, k in zip(tables, keys, strict=True))
    except LabelError as exc:
        raise ReleaseError(str(exc)) from None
    if not len(train) or not len(evaluation):
        raise ReleaseError(f"no hand boxes in {keys[0] if not len(train) else keys[1]}")
    return TrainingRelease(uri=storage.uri, version=_version(documents[RELEASE_INFO], uri),
                           checksums_sha256=hashlib.sha256(sums).hexdigest(), classes=classes,
                           view=chosen, train_split=splits[0], eval_split=splits[1],
                           train=train, evaluation=evaluation)
