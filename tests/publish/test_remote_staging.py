"""Worker-side staging (``tasks.publish.remote``): an S3 root published on a cluster whose
workers share no folder with the flow. The jobs stage their files under the root, and the
release they make is the one local staging makes, byte for byte."""

from __future__ import annotations

import hashlib
import pickle
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from tasks.publish import remote as remote_module
from tasks.publish import writer
from tasks.publish.assembly import SplitPlan, publish_images, write_split_shards
from tasks.publish.crops import crop_jobs
from tasks.publish.published_image import published_image
from tasks.publish.remote import ReadAhead, RemoteSources, RemoteStaging, remote_staging
from tasks.publish.shards import ShardError, plan_shards
from tasks.publish.writer import (
    ImageJob,
    checksums,
    commit_release,
    discard,
    remove_dead_staging,
    shard_members,
    staging_dir,
    write_file,
)
from tasks.storage import LocalStorage, S3Storage
from tests.publish.phone_photos import personal_exif, stored_photos


class _CountingStore:
    """A storage that serves ranges of in-memory files and counts its GETs."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.gets: list[tuple[str, int, int]] = []

    def read_range(self, key: str, offset: int, size: int) -> bytes:
        self.gets.append((key, offset, size))
        return self.files[key][offset:offset + size]


def test_reads_run_ahead_in_order_and_out_of_order_is_refused() -> None:
    keys = [f"k{n}" for n in range(20)]
    with ReadAhead(lambda key: key.upper(), keys, ahead=3) as objects:
        assert [objects.read_next(k) for k in keys[:5]] == [k.upper() for k in keys[:5]]
        with pytest.raises(ValueError, match="out of order"):
            objects.read_next("k9")


def test_back_to_back_members_come_in_one_ranged_get(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote_module, "SPAN_BYTES", 100)
    spool = bytes(range(256))
    store = _CountingStore({"spool": spool, "obj-a": b"A" * 30, "obj-b": b"B" * 7})
    # spool[0:40] and spool[40:90] touch: one GET; spool[90:130] would pass 100 bytes: a new
    # one; then two objects, then the spool again further on (not touching: a GET of its own)
    sources = [("spool", 0), ("spool", 40), ("spool", 90), ("obj-a", 0), ("obj-b", 0),
               ("spool", 200)]
    sizes = [40, 50, 40, 30, 7, 20]
    with RemoteSources(store, sources, sizes=sizes) as reader:  # type: ignore[arg-type]
        got = [bytes(reader.read(i)) for i in range(len(sources))]
    assert got == [store.files[k][o:o + n] for (k, o), n in zip(sources, sizes, strict=True)]
    assert sorted(store.gets) == sorted([("spool", 0, 90), ("spool", 90, 40), ("obj-a", 0, 30),
                                         ("obj-b", 0, 7), ("spool", 200, 20)])


@pytest.fixture()
def s3_root(s3_server, monkeypatch: pytest.MonkeyPatch) -> S3Storage:
    """An empty S3 root, credentials in this process's environment."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = f"remote-{hashlib.sha256(str(id(monkeypatch)).encode()).hexdigest()[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    return S3Storage(f"s3://{bucket}/root", endpoint_url=s3_server.endpoint_url)


def _photos(stores: list, exifs: list) -> tuple[list[bytes], pd.DataFrame]:
    """Small JPEGs with those EXIF blocks, stored as objects in every store; their bytes
    and the catalog rows ``publish_images`` reads."""
    stored, shas, keys = stored_photos(stores, exifs)
    ids = [f"img{n}" for n in range(len(stored))]
    return stored, pd.DataFrame({"image_id": ids, "object_key": keys, "sha256": shas,
                                 "orientation": 1, "bytes": [len(d) for d in stored]})


def _plan(ids: list[str], published: pd.DataFrame) -> SplitPlan:
    plan = plan_shards(pd.DataFrame({"key": ids, "ext": "jpg",
                                     "size": published.loc[ids, "size"].to_numpy(),
                                     "json_size": 3}), split="train", max_bytes=1 << 20,
                       max_count=2)
    return SplitPlan(split="train", manifest=pa.table({}), plan=plan,
                     json_members=dict.fromkeys(ids, b"{}\n"),
                     sources=dict(zip(ids, zip(published["source"],
                                               published["source_offset"].tolist(),
                                               strict=True), strict=True)))


@pytest.mark.slow
@pytest.mark.parametrize("in_place", [True, False])
def test_staged_under_the_root_the_release_is_the_locally_staged_one(
        s3_root: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        in_place: bool) -> None:
    """``in_place``: images published as stored stay in their objects (large ones), or go
    into the spool file with the others (small ones, the default for these 64x48 photos)."""
    if in_place:
        monkeypatch.setattr(writer, "IN_PLACE_BYTES", 0)
    local_root = LocalStorage(tmp_path / "local")
    stored, images = _photos([s3_root, local_root],
                             [None, personal_exif(1), None, personal_exif(2), None])
    ids = images["image_id"].tolist()

    # the reference: a local root, staged in its folder
    local_staging = staging_dir(local_root, "v1")
    made = publish_images(local_root, local_staging / ".published", images, ids, pool=None)
    reference = write_split_shards(local_staging, [_plan(ids, made)], pool=None)

    remote = remote_staging(s3_root, "v1", endpoint_url=s3_root.endpoint_url)
    assert remote.prefix.startswith("releases/.staging-v1-")
    staging = staging_dir(s3_root, "v1")  # the flow's own folder: the small files
    published = publish_images(s3_root, Path(".published"), images, ids, pool=None,
                               remote=remote)
    # an image published as stored is read from its object when in place; the others from
    # a spool file staged under the prefix
    expect = [published_image(d, orientation=1) for d in stored]
    assert published["size"].tolist() == [len(p) for p in expect]
    spool_key = f"{remote.prefix}/.published/000000.bin"
    assert published["source"].tolist() == [
        images["object_key"][i] if in_place and i in (0, 2, 4) else spool_key
        for i in range(5)]
    assert s3_root.read_bytes(spool_key) == (expect[1] + expect[3] if in_place
                                             else b"".join(expect))
    assert not list(staging.iterdir())  # nothing landed in the flow's folder

    written = write_split_shards(staging, [_plan(ids, published)], pool=None, remote=remote)
    assert {k: (w.sha256, w.size) for k, w in written.items()} == \
        {k: (w.sha256, w.size) for k, w in reference.items()}
    assert len(written) == 3  # two images a shard
    # read back by the jobs (remote) and by the flow (local): the same members
    assert all(w.members for w in written.values())
    assert all(w.members is None for w in reference.values())
    pd.testing.assert_frame_equal(shard_members(staging, written),
                                  shard_members(local_staging, reference))
    for name in written:  # byte for byte, under the prefix
        assert s3_root.read_bytes(remote.key(name)) == (local_staging / name).read_bytes()
    assert remote.files() == sorted(written)  # the spool file went once read
    assert not list(staging.iterdir())

    write_file(staging, "manifests/train.parquet", b"manifest")
    sums = checksums(staging, known={k: w.sha256 for k, w in written.items()}, remote=remote)
    listed = {name: digest for digest, name in (line.split("  ")
                                                 for line in sums.decode().splitlines())}
    assert sorted(listed) == ["manifests/train.parquet", *sorted(written)]
    assert listed["manifests/train.parquet"] == hashlib.sha256(b"manifest").hexdigest()
    write_file(staging, "SHA256SUMS", sums)
    uri = commit_release(s3_root, staging, "v1", remote)
    assert uri == f"{s3_root.uri}/releases/v1"
    assert s3_root.list("releases") == sorted(
        ["releases/v1/SHA256SUMS", "releases/v1/manifests/train.parquet",
         *(f"releases/v1/{name}" for name in written)])
    for name, shard in written.items():
        assert hashlib.sha256(s3_root.read_bytes(f"releases/v1/{name}")).hexdigest() \
            == shard.sha256
    assert not staging.exists()


@pytest.mark.slow
def test_an_object_replaced_after_the_image_pass_is_refused_by_the_shard_job(
        s3_root: S3Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "IN_PLACE_BYTES", 0)  # read in place, as large objects are
    _, images = _photos([s3_root], [None, None])
    ids = images["image_id"].tolist()
    remote = remote_staging(s3_root, "v1", endpoint_url=s3_root.endpoint_url)
    staging = staging_dir(s3_root, "v1")
    made = publish_images(s3_root, Path(".published"), images, ids, pool=None, remote=remote)
    assert made["source"].tolist() == images["object_key"].tolist()  # read in place
    key = images["object_key"][1]
    data = bytearray(s3_root.read_bytes(key))
    data[-3] ^= 0xFF  # same size, other bytes: a size check alone would not see it
    s3_root.write_bytes(key, bytes(data))
    with pytest.raises(ShardError, match="changed after it was checked"):
        write_split_shards(staging, [_plan(ids, made)], pool=None, remote=remote)
    assert not [n for n in remote.files() if n.startswith("shards/")]
    discard(staging, remote)


@pytest.mark.slow
def test_a_refused_or_dead_run_leaves_nothing_under_the_root(
        s3_root: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _, images = _photos([s3_root], [personal_exif(1), None])
    ids = images["image_id"].tolist()
    # a refused release: the flow discards both its folder and the prefix
    remote = remote_staging(s3_root, "v1", endpoint_url=s3_root.endpoint_url)
    staging = staging_dir(s3_root, "v1")
    made = publish_images(s3_root, Path(".published"), images, ids, pool=None, remote=remote)
    write_split_shards(staging, [_plan(ids, made)], pool=None, remote=remote)
    assert remote.files()
    discard(staging, remote)
    assert not staging.exists() and s3_root.list("releases") == []
    # a killed run: its prefix stays until the next run under the lock removes it
    dead = remote_staging(s3_root, "v2", endpoint_url=s3_root.endpoint_url)
    publish_images(s3_root, Path(".published"), images, ids, pool=None, remote=dead)
    s3_root.write_bytes("releases/v0/SHA256SUMS", b"")  # a complete release stays
    removed = remove_dead_staging(s3_root)
    assert removed == [f"{s3_root.uri}/{dead.prefix}"]
    assert s3_root.list("releases") == ["releases/v0/SHA256SUMS"]


def test_jobs_staged_under_the_root_name_no_local_folder(tmp_path: Path) -> None:
    """What a worker on another machine gets holds keys and the root's URI, no path of the
    flow's machine: the jobs are the same wherever the flow's staging folder is."""
    remote = RemoteStaging("s3://bucket/root", "http://127.0.0.1:1", "releases/.staging-v1-ab")
    job = ImageJob(spool=Path(remote.key(".published/000000.bin")),
                   object_keys=["objects/ab/cd/" + "e" * 64 + ".jpg"], sha256=["e" * 64],
                   orientation=[1], root_uri=remote.root_uri, remote=remote)
    rows = pd.DataFrame({"image_id": ["a", "a"], "image_shard": "shards/train-000000.tar",
                         "image_offset": 512, "image_size": 100, "image_width": 64,
                         "image_height": 48, "left": [0, 8], "top": [0, 8], "side": [32, 16]})
    crops = crop_jobs(rows, tmp_path, Path(".published"), size=32, remote=remote)
    assert crops[0].images == [(f"{remote.prefix}/shards/train-000000.tar", 512, 100, 64, 48)]
    assert crops[0].spool.as_posix() == f"{remote.prefix}/.published/crops-000000.bin"
    for pickled in (pickle.dumps(job), *(pickle.dumps(c) for c in crops)):
        assert str(tmp_path).encode() not in pickled
        assert tempfile.gettempdir().encode() not in pickled
    assert job.spool.as_posix() == "releases/.staging-v1-ab/.published/000000.bin"
    with pytest.raises(ValueError):
        remote.key("../outside")
