"""Tar shards: planned offsets match the written bytes, readers agree, bytes are reproducible."""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import webdataset as wds
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.publish.shards import (
    BLOCK,
    HASH_ASIDE_BYTES,
    RECORD,
    ShardError,
    ShardMember,
    group_by_shard,
    member_header,
    plan_shards,
    read_members,
    write_shard,
)


def _samples(sizes: list[int]) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, bytes]]:
    keys = [f"{i:08x}-0000-0000-0000-{i:012x}" for i in range(len(sizes))]
    images = {k: bytes([i % 251]) * s for i, (k, s) in enumerate(zip(keys, sizes, strict=True))}
    metas = {k: f'{{"key":"{k}"}}\n'.encode() for k in keys}
    frame = pd.DataFrame({"key": keys, "ext": "jpg", "size": sizes,
                          "json_size": [len(metas[k]) for k in keys]})
    return frame, images, metas


def _write_all(tmp: Path, plan: list[ShardMember], images: dict[str, bytes],
               metas: dict[str, bytes]) -> dict[str, Path]:
    paths = {}
    for name, members in group_by_shard(plan).items():
        paths[name] = tmp / name
        write_shard(paths[name], members, image_bytes=lambda m: images[m.key],
                    json_bytes=lambda m: metas[m.key])
    return paths


def test_planned_offsets_are_where_tarfile_finds_the_members(tmp_path):
    frame, images, metas = _samples([1, 511, 512, 513, 5000, 0, 77])
    plan = plan_shards(frame, split="train", max_bytes=1 << 20, max_count=100)
    paths = _write_all(tmp_path, plan, images, metas)
    assert list(paths) == ["shards/train-000000.tar"]
    found = {name: (off, size) for name, off, size in read_members(paths[plan[0].shard])}
    for m in plan:
        assert found[f"{m.key}.jpg"] == (m.offset, m.size)
        assert found[f"{m.key}.json"] == (m.json_offset, m.json_size)
        with paths[m.shard].open("rb") as fh:  # random access by offset
            fh.seek(m.offset)
            assert fh.read(m.size) == images[m.key]
    assert paths[plan[0].shard].stat().st_size % RECORD == 0


def test_headers_are_fixed_and_members_ordered(tmp_path):
    frame, images, metas = _samples([10, 20])
    plan = plan_shards(frame, split="test", max_bytes=1 << 20, max_count=10)
    path = _write_all(tmp_path, plan, images, metas)["shards/test-000000.tar"]
    with tarfile.open(path) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == [f"{frame.key[0]}.jpg", f"{frame.key[0]}.json",
                                       f"{frame.key[1]}.jpg", f"{frame.key[1]}.json"]
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode) for i in infos} == {
        (0, 0, 0, "", "", 0o644)}


@pytest.mark.parametrize(("name", "size"), [("a" * 36 + ".jpg", 0), ("k.json", 12_345),
                                            ("\u00e9" * 40 + ".png", 8**11 - 1), ("k" * 100, 7)])
def test_member_header_is_what_tarfile_writes(name: str, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    assert member_header(name, size) == info.tobuf(format=tarfile.USTAR_FORMAT)


def test_shards_are_bounded_by_count_and_size():
    frame, _, _ = _samples([3000] * 10)
    by_count = plan_shards(frame, split="train", max_bytes=1 << 30, max_count=3)
    assert [len(v) for v in group_by_shard(by_count).values()] == [3, 3, 3, 1]
    by_size = plan_shards(frame, split="train", max_bytes=20_480, max_count=100)
    for members in group_by_shard(by_size).values():
        last = members[-1]
        assert last.json_offset + BLOCK + 2 * BLOCK <= 20_480 or len(members) == 1


def test_webdataset_reads_every_sample(tmp_path):
    frame, images, metas = _samples([100, 2000, 700, 1, 4096])
    plan = plan_shards(frame, split="val", max_bytes=1 << 20, max_count=2)
    paths = _write_all(tmp_path, plan, images, metas)
    urls = [str(p) for p in sorted(paths.values())]
    seen = {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False)}
    assert set(seen) == set(frame["key"])
    for key, sample in seen.items():
        assert sample["jpg"] == images[key] and sample["json"] == metas[key]


def test_same_input_same_bytes(tmp_path):
    frame, images, metas = _samples([10, 600, 1500])
    plan = plan_shards(frame, split="train", max_bytes=1 << 20, max_count=100)
    a = _write_all(tmp_path / "a", plan, images, metas)
    b = _write_all(tmp_path / "b", plan, images, metas)
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes()


def test_wrong_size_or_hash_is_refused_and_no_partial_file_is_left(tmp_path):
    frame, images, metas = _samples([10, 20])
    plan = plan_shards(frame, split="train", max_bytes=1 << 20, max_count=100)
    path = tmp_path / "s.tar"
    bad = {**images, frame.key[1]: b"x" * 21}
    with pytest.raises(ShardError, match="size"):
        write_shard(path, plan, image_bytes=lambda m: bad[m.key],
                    json_bytes=lambda m: metas[m.key])
    assert not path.exists()
    with pytest.raises(ShardError, match="sha256"):
        write_shard(path, plan, image_bytes=lambda m: images[m.key],
                    json_bytes=lambda m: metas[m.key], sha256=lambda m: "0" * 64)
    assert not path.exists()


def test_returned_digest_is_the_file_sha256(tmp_path):
    frame, images, metas = _samples([10, HASH_ASIDE_BYTES, 20, HASH_ASIDE_BYTES + 1])
    plan = plan_shards(frame, split="train", max_bytes=1 << 20, max_count=100)
    length, digest = write_shard(tmp_path / "s.tar", plan, image_bytes=lambda m: images[m.key],
                                 json_bytes=lambda m: metas[m.key])
    data = (tmp_path / "s.tar").read_bytes()
    assert len(data) == length and hashlib.sha256(data).hexdigest() == digest


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=40),
       max_count=st.integers(1, 12), max_kb=st.integers(10, 40))
def test_no_key_is_lost_or_duplicated_by_sharding(sizes: list[int], max_count: int,
                                                   max_kb: int) -> None:
    frame, images, metas = _samples(sizes)
    plan = plan_shards(frame, split="train", max_bytes=max_kb * 1024, max_count=max_count)
    assert [m.key for m in plan] == list(frame["key"])
    tars: dict[str, io.BytesIO] = {}
    for name, members in group_by_shard(plan).items():
        assert len(members) <= max_count
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "shard.tar")
            write_shard(path, members, image_bytes=lambda m: images[m.key],
                        json_bytes=lambda m: metas[m.key])
            tars[name] = io.BytesIO(path.read_bytes())
        if len(members) > 1:
            assert len(tars[name].getvalue()) <= max_kb * 1024
    names = []
    for buf in tars.values():
        with tarfile.open(fileobj=buf) as tar:
            names += [i.name for i in tar.getmembers()]
    assert sorted(names) == sorted([f"{k}.jpg" for k in frame.key] +
                                   [f"{k}.json" for k in frame.key])
