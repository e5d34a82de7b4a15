"""What killed publish runs leave behind: staging folders, unfinished uploads, workers."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from tasks.publish import checked_objects
from tasks.publish.assembly import SplitPlan, publish_images, write_split_shards
from tasks.publish.published_image import published_image
from tasks.publish.shards import ShardError, ShardMember, plan_shards, read_members
from tasks.publish.writer import (
    ImageJob,
    ShardJob,
    StagingNotVisible,
    remove_dead_staging,
    run_image_job,
    run_shard_job,
    shard_members,
    staging_dir,
    write_file,
)
from tasks.storage import LocalStorage
from tests.publish.phone_photos import personal_exif, stored_photos

REPO = Path(__file__).resolve().parents[2]


def test_dead_staging_folders_are_removed_and_releases_kept(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "root")
    release = store.path / "releases" / "v1"
    release.mkdir(parents=True)
    (release / "SHA256SUMS").write_text("")
    refused = store.path / "releases" / ".refused-v2" / "data_docs"
    refused.mkdir(parents=True)
    (refused / "index.html").write_text("<html/>")
    dead = [staging_dir(store, "v2"), staging_dir(store, "v3")]
    write_file(dead[0], "shards/train-000000.tar", b"x" * 1000)
    write_file(dead[1], ".published/000000.bin", b"y" * 1000)
    removed = remove_dead_staging(store)
    assert sorted(removed) == sorted(str(p) for p in dead)
    assert sorted(p.name for p in (store.path / "releases").iterdir()) == [".refused-v2", "v1"]
    assert (release / "SHA256SUMS").is_file() and (refused / "index.html").is_file()
    assert remove_dead_staging(store) == []
    assert remove_dead_staging(LocalStorage(tmp_path / "empty")) == []


def _stored_photos(store: LocalStorage, exifs: list[Image.Exif | None]
                   ) -> tuple[list[bytes], list[str], list[str]]:
    return stored_photos([store], exifs)


def test_clean_images_are_read_in_place_and_only_changed_ones_spooled(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "root")
    # clean, stripped, clean
    stored, shas, keys = _stored_photos(store, [None, personal_exif(1), None])
    staging = staging_dir(store, "v1")
    spool = staging / ".published" / "000000.bin"
    spool.parent.mkdir()
    made = run_image_job(ImageJob(spool=spool, object_keys=keys, sha256=shas,
                                  orientation=[1, 1, 1], root_uri=store.uri))
    published = [published_image(d, orientation=1) for d in stored]
    assert published[1] != stored[1] and published[0] == stored[0]
    assert [m[:2] for m in made] == [(len(p), hashlib.sha256(p).hexdigest()) for p in published]
    assert [m[2:4] for m in made] == [(str(store.path / keys[0]), 0), (str(spool), 0),
                                      (str(store.path / keys[2]), 0)]
    assert [m[4] for m in made] == [None, None, None]  # written just now: too recent to seal
    assert spool.read_bytes() == published[1]

    ids = ["a", "b", "c"]
    plan = plan_shards(pd.DataFrame({"key": ids, "ext": "jpg", "size": [m[0] for m in made],
                                     "json_size": 3}), split="train", max_bytes=1 << 20,
                       max_count=10)
    split = SplitPlan(split="train", manifest=pa.table({}), plan=plan,
                      json_members=dict.fromkeys(ids, b"{}\n"),
                      sources={i: m[2:4] for i, m in zip(ids, made, strict=True)},
                      seals={i: m[4] for i, m in zip(ids, made, strict=True)})
    written = write_split_shards(staging, [split], pool=None)
    shard = staging / "shards" / "train-000000.tar"
    assert {k: w.sha256 for k, w in written.items()} == {
        "shards/train-000000.tar": hashlib.sha256(shard.read_bytes()).hexdigest()}
    assert written["shards/train-000000.tar"].size == shard.stat().st_size
    # the members as read back from the shard: each image's size, a json beside it
    members = shard_members(staging, written)
    assert members["shard"].unique().tolist() == ["shards/train-000000.tar"]
    assert members[members["ext"] == "jpg"]["size"].tolist() == [len(p) for p in published]
    assert members[members["ext"] == "jpg"]["width"].tolist() == [64, 64, 64]
    assert members[members["ext"] == "json"]["key"].tolist() == ids
    with shard.open("rb") as fh:
        found = {}
        for name, offset, size in read_members(shard):
            fh.seek(offset)
            found[name] = fh.read(size)
    assert [found[f"{i}.jpg"] for i in ids] == published
    assert not spool.exists()  # a spool file goes once read; the stored objects stay
    assert [(store.path / k).read_bytes() for k in keys] == stored


def test_a_sealed_object_is_not_read_again_and_a_changed_one_is_read_or_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checked_objects, "RACY_NS", 0)  # objects written just now may be sealed
    store = LocalStorage(tmp_path / "root")
    stored, shas, keys = _stored_photos(store, [None, None])
    staging = staging_dir(store, "v1")
    (staging / "shards").mkdir()

    def images(sha256: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"image_id": ["a", "b"], "object_key": keys, "sha256": sha256,
                             "orientation": 1, "bytes": [len(d) for d in stored]})

    def made(sha256: list[str]) -> pd.DataFrame:
        return publish_images(store, staging / ".published", images(sha256), ["a", "b"],
                              pool=None)

    first = made(shas)  # read and checked: sealed, and recorded
    seals = first["seal"].tolist()
    assert seals == [checked_objects.seal_of(os.stat(store.path / k)) for k in keys]
    assert checked_objects.load_checked(store) == {(k, 1): s for k, s in zip(keys, seals,
                                                                             strict=True)}
    wrong = ["0" * 64, shas[1]]
    # with their seals recorded the objects are not read: a wrong sha256 goes unnoticed
    assert made(wrong)["sha256"].tolist() == wrong
    checked_objects.save_checked(store, {})
    with pytest.raises(ShardError, match="do not match their sha256"):
        made(wrong)  # without them, they are read and checked
    made(shas)
    # any write moves the ctime: the object is read and checked again, and sealed anew
    time.sleep(0.01)
    (store.path / keys[0]).write_bytes(stored[0])
    with pytest.raises(ShardError, match="do not match their sha256"):
        made(wrong)
    again = made(shas)["seal"].tolist()
    assert again[0] != seals[0] and again[1] == seals[1]
    assert checked_objects.load_checked(store)[(keys[0], 1)] == again[0]
    # and the shard pass refuses an object whose seal changed after the image pass
    ids = ["a", "b"]
    plan = plan_shards(pd.DataFrame({"key": ids, "ext": "jpg", "size": [len(d) for d in stored],
                                     "json_size": 3}), split="train", max_bytes=1 << 20,
                       max_count=10)
    shard_job = ShardJob(path=staging / "shards" / "train-000000.tar", members=plan,
                         sources=[(str(store.path / k), 0) for k in keys],
                         json_members=[b"{}\n"] * 2, seals=seals)
    with pytest.raises(ShardError, match="changed after it was checked"):
        run_shard_job(shard_job)
    assert not shard_job.path.exists()
    run_shard_job(ShardJob(path=shard_job.path, members=plan, sources=shard_job.sources,
                           json_members=shard_job.json_members, seals=again))
    assert shard_job.path.is_file()


def test_the_checked_objects_record_round_trips_and_a_bad_one_is_ignored(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "root")
    assert checked_objects.load_checked(store) == {}
    seals = {("objects/ab/cd/" + "e" * 64 + ".jpg", 1): checked_objects.Seal(7, 100, 5, 6),
             ("objects/ab/cd/" + "f" * 64 + ".png", 6): checked_objects.Seal(8, 200, 5, 6)}
    checked_objects.save_checked(store, seals)
    assert checked_objects.load_checked(store) == seals
    store.write_bytes(checked_objects.CHECKED_OBJECTS, b"not parquet")
    assert checked_objects.load_checked(store) == {}


@pytest.mark.slow
def test_unfinished_s3_uploads_and_local_staging_are_removed(s3_server, monkeypatch,
                                                             tmp_path: Path) -> None:
    from tasks.storage import S3Storage

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this machine's temp folder
    s3_server.client().create_bucket(Bucket="staging")
    store = S3Storage("s3://staging/root", endpoint_url=s3_server.endpoint_url)
    other = S3Storage("s3://staging/other", endpoint_url=s3_server.endpoint_url)
    for key in ("releases/v1/shards/train-000000.tar", "releases/v1/SHA256SUMS",
                "releases/v2/shards/train-000000.tar", "releases/v2/manifests/train.parquet",
                "releases/.refused-v3/data_docs/index.html", "catalog/images/a.parquet"):
        store.write_bytes(key, b"data")
    mine, theirs = staging_dir(store, "v2"), staging_dir(other, "v9")
    removed = remove_dead_staging(store)
    assert sorted(removed) == sorted(["s3://staging/root/releases/v2", str(mine)])
    assert store.list("releases") == ["releases/.refused-v3/data_docs/index.html",
                                      "releases/v1/SHA256SUMS",
                                      "releases/v1/shards/train-000000.tar"]
    assert not mine.exists() and theirs.is_dir()  # another root's run may be alive


POOL_SCRIPT = """
import sys, time
from tasks.publish.writer import worker_pool
with worker_pool(2) as pool:
    jobs = [pool.submit(time.sleep, 300) for _ in range(2)]
    while len(pool._processes) < 2:
        time.sleep(0.05)
    print(*pool._processes, flush=True)
    time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_pool_workers_end_when_the_publishing_process_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT], cwd=REPO,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    workers: list[int] = []
    try:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)  # kill -9 of the CLI
        parent.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)]
    finally:
        parent.kill()
        for pid in workers:  # only the workers this test started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_that_cannot_see_the_staging_folder_says_so(tmp_path: Path) -> None:
    """A cluster worker on another machine: the flow's staging folder is not there."""
    missing = tmp_path / "elsewhere" / "releases" / ".staging-v1-0000"
    image_job = ImageJob(spool=missing / ".published" / "000000.bin", object_keys=[],
                         sha256=[], orientation=[], root_uri=str(tmp_path))
    with pytest.raises(StagingNotVisible, match="every worker must mount"):
        run_image_job(image_job)
    member = ShardMember(key="a", ext="jpg", shard="shards/train-000000.tar", offset=0,
                         size=1, json_offset=0, json_size=1)
    with pytest.raises(StagingNotVisible, match=str(missing / "shards")):
        run_shard_job(ShardJob(path=missing / "shards" / "train-000000.tar", members=[member],
                               sources=[(str(tmp_path / "x"), 0)], json_members=[b"{}"]))
    assert not missing.exists()  # nothing was made on the worker's side


def test_large_members_read_into_reused_buffers_are_hashed_as_written(tmp_path: Path) -> None:
    # consecutive members over HASH_ASIDE_BYTES: each is hashed aside while the next is read
    # into the other buffer, so a buffer reused too early would show in the digest
    rng = random.Random(5)
    blobs = [rng.randbytes(size) for size in (300_000, 400_000, 10, 350_000, 280_000, 20)]
    spool = tmp_path / "spool.bin"
    spool.write_bytes(b"".join(blobs[:3]))
    sources: list[tuple[str, int]] = [(str(spool), 0), (str(spool), len(blobs[0])),
                                      (str(spool), len(blobs[0]) + len(blobs[1]))]
    for n, blob in enumerate(blobs[3:]):
        (tmp_path / f"object-{n}").write_bytes(blob)
        sources.append((str(tmp_path / f"object-{n}"), 0))
    ids = [f"k{n}" for n in range(len(blobs))]
    plan = plan_shards(pd.DataFrame({"key": ids, "ext": "jpg", "size": [len(b) for b in blobs],
                                     "json_size": 3}), split="train", max_bytes=1 << 24,
                       max_count=10)
    path = tmp_path / "shards" / "train-000000.tar"
    path.parent.mkdir()
    digest = run_shard_job(ShardJob(path=path, members=plan, sources=sources,
                                    json_members=[b"{}\n"] * len(ids))).sha256
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest
    assert [data[m.offset:m.offset + m.size] for m in plan] == blobs
