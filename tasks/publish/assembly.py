"""The parts of a release computed from the samples: shard plans, exports, contract inputs.

Plain functions over tables; the publish flow decides the order and where files go.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import PIL
import pyarrow as pa
import pyarrow.compute as pc

from schemas.release import COCO, HAGRID, SPLITS, YOLO, PublishSettings, class_names
from schemas.taxonomy import load_taxonomy
from tasks.catalog import Catalog
from tasks.publish.checked_objects import Seal, load_checked, save_checked, stat_seal
from tasks.publish.exports import coco_instances, hagrid_annotations, json_bytes, yolo_labels
from tasks.publish.selection import image_extension, manifest_table, sample_json
from tasks.publish.shards import ShardMember, group_by_shard, plan_shards
from tasks.publish.writer import (
    OBJECT_KEY,
    ImageJob,
    JobPool,
    MadeImage,
    ShardJob,
    run_image_job,
    run_jobs,
    run_shard_job,
    staged_path,
)
from tasks.storage import LocalStorage, Storage

SPOOL = ".published"  # under the staging folder: published bytes until the shards hold them
# An image job (and its spool file) covers about this many stored bytes, small enough that
# the jobs spread evenly over the workers ...
SPOOL_FILE_BYTES = 64 << 20
SPOOL_FILE_COUNT = 4096  # ... and at most this many images


def shard_order(assignment: pd.Series) -> list[str]:
    """Image ids in the order the shards hold them: split by split (``SPLITS``), by id."""
    frame = pd.DataFrame({"image_id": assignment.index, "split": assignment.to_numpy()})
    frame["rank"] = frame["split"].map({s: i for i, s in enumerate(SPLITS)})
    return frame.sort_values(["rank", "image_id"], kind="stable")["image_id"].tolist()


def spool_chunks(sizes: Sequence[int], *, max_bytes: int, max_count: int) -> list[range]:
    """Consecutive runs of items of at most ``max_bytes`` (one item may pass it alone) and
    ``max_count`` items."""
    chunks, start, used = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_count or used + size > max_bytes):
            chunks.append(range(start, i))
            start, used = i, 0
        used += size
    if start < len(sizes):
        chunks.append(range(start, len(sizes)))
    return chunks


def publish_images(root: Storage, spool: Path, images: pd.DataFrame, order: Sequence[str], *,
                   pool: JobPool | None, endpoint_url: str | None = None,
                   recorded: Mapping[tuple[str, int], Seal] | None = None,
                   defer: bool = False) -> pd.DataFrame:
    """Make every image's published bytes once (``published_image``: upright, no metadata),
    in ``order``; memory holds one image per process.

    Returns one row per image_id (index, in ``order``): ``sha256`` and ``size`` of the
    published bytes, and where they are: ``source`` (a file) and ``source_offset``. That
    file is the stored object when the published bytes are the stored bytes (a local root),
    else a spool file under ``spool``; ``seal`` is the stored object's seal when it was
    checked here or by an earlier publish (else None); ``check`` is True where the shard
    pass is to check the object (see below). Each stored image is checked against the
    catalog's sha256 on the way, unless the root's record of checked objects
    (``recorded``, else read from the root) shows a previous publish checked it and its
    seal is unchanged.

    With ``defer``, an upright image (orientation 1) of a local root whose file has the
    catalog's size is not read here: it is planned as published unchanged (its stored size
    and sha256; ``check`` True), and the shard pass checks it as it copies it
    (``ShardJob.check``). A missing file or another size goes through the image pass, which
    says what is wrong.
    """
    meta = images.set_index("image_id").loc[list(order)]
    keys, shas = meta["object_key"].tolist(), meta["sha256"].tolist()
    orientations, sizes = meta["orientation"].astype(int).tolist(), meta["bytes"].tolist()
    checked_keys = list(zip(keys, orientations, strict=True))
    if recorded is None:
        recorded = load_checked(root)
    rows: list[MadeImage | None] = [None] * len(keys)
    check = [False] * len(keys)
    local = isinstance(root, LocalStorage)
    base = f"{root.path}/" if isinstance(root, LocalStorage) else ""
    for i, checked in enumerate(checked_keys):
        if not local or not OBJECT_KEY.fullmatch(checked[0]):
            continue
        seal = recorded.get(checked)  # one stat, no read, per sealed object
        if seal is not None and stat_seal(base + checked[0]) == seal:
            rows[i] = (seal.size, shas[i], base + checked[0], 0, seal)
        elif defer and checked[1] == 1 and _file_size(base + checked[0]) == sizes[i]:
            rows[i], check[i] = (int(sizes[i]), shas[i], base + checked[0], 0, None), True
    pending = [i for i, row in enumerate(rows) if row is None]
    spool.mkdir(parents=True, exist_ok=True)
    runs = spool_chunks([sizes[i] for i in pending], max_bytes=SPOOL_FILE_BYTES,
                        max_count=SPOOL_FILE_COUNT)
    taken = {int(p.stem) for p in spool.glob("*.bin") if p.stem.isdigit()}
    numbers = (n for n in range(len(taken) + len(runs)) if n not in taken)
    jobs = [ImageJob(spool=spool / f"{number:06d}.bin",
                     object_keys=[keys[i] for i in pending[run.start:run.stop]],
                     sha256=[shas[i] for i in pending[run.start:run.stop]],
                     orientation=[orientations[i] for i in pending[run.start:run.stop]],
                     root_uri=root.uri, endpoint_url=endpoint_url)
            for number, run in zip(numbers, runs)]
    for run, made in zip(runs, run_jobs(pool, run_image_job, jobs), strict=True):
        for i, row in zip(pending[run.start:run.stop], made, strict=True):
            rows[i] = row
    made = [row for row in rows if row is not None]
    if len(made) != len(rows):
        raise RuntimeError("an image job returned fewer images than it was given")
    frame = pd.DataFrame(made, columns=["size", "sha256", "source", "source_offset", "seal"],
                         index=pd.Index(list(order), name="image_id"))
    frame["check"] = check
    return frame[["sha256", "size", "source", "source_offset", "seal", "check"]]


def _file_size(path: str) -> int | None:
    """A file's size, None when it cannot be stat'ed (the image pass then says why)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def remember_checked(root: Storage, recorded: Mapping[tuple[str, int], Seal],
                     images: pd.DataFrame, published: pd.DataFrame,
                     checked_by_shards: Mapping[str, Seal]) -> int:
    """Add to the root's record the seals of the objects this publish checked: by the
    image pass (``published``'s seals not in ``recorded``) or by the shard pass
    (``checked_by_shards``: image_id -> seal). Returns how many were new."""
    seals = published["seal"].copy()
    for image_id, seal in checked_by_shards.items():
        seals.loc[image_id] = seal
    meta = images.set_index("image_id").loc[seals.index]
    keys = zip(meta["object_key"].tolist(), meta["orientation"].astype(int).tolist(),
               strict=True)
    new = {key: seal for key, seal in zip(keys, seals.tolist(), strict=True)
           if seal is not None and recorded.get(key) != seal}
    if new:
        save_checked(root, {**recorded, **new})
    return len(new)


@dataclass(frozen=True)
class SplitPlan:
    """One split's samples, where each goes in the shards, and the content of its members."""

    split: str
    manifest: pa.Table  # MANIFEST rows in shard order (sorted by image_id)
    plan: list[ShardMember]
    json_members: dict[str, bytes]  # image_id -> the <key>.json member
    sources: dict[str, tuple[str, int]]  # image_id -> (file, offset) of its bytes
    # image_id -> its stored object's seal (absent or None: no seal, e.g. a spool file)
    seals: dict[str, Seal | None] = field(default_factory=dict)
    # image_id -> the catalog's sha256 of a stored object the shard pass checks itself
    checks: dict[str, str] = field(default_factory=dict)


def plan_split(samples: pa.Table, published: pd.DataFrame, *, split: str,
               settings: PublishSettings, cut_sizes: pd.Series | None = None) -> SplitPlan:
    """Plan one split's shards from the samples (all splits) and the published images.

    ``cut_sizes`` (image_id -> bytes, at least the published size): what the shards are
    cut by (``plan_shards``); the stored size of upright images keeps the cuts where they
    are when an image planned as stored turns out to need stripping.
    """
    rows = samples.filter(pc.equal(samples.column("split"), split))
    ids = rows.column("image_id").to_pylist()
    made = published.loc[ids]
    members = sample_json(rows, two_handed=load_taxonomy(settings.taxonomy).two_handed)
    table = pd.DataFrame({"key": ids,
                          "ext": [image_extension(f) for f in rows.column("format").to_pylist()],
                          "size": made["size"].to_numpy(),
                          "json_size": [len(m) for m in members]})
    if cut_sizes is not None:
        table["cut_size"] = cut_sizes.loc[ids].to_numpy()
    plan = plan_shards(table, split=split, max_bytes=settings.shard_max_bytes,
                       max_count=settings.shard_max_count)
    checks = made["check"] if "check" in made else pd.Series(False, index=made.index)
    return SplitPlan(split=split, manifest=manifest_table(rows, plan), plan=plan,
                     json_members=dict(zip(ids, members, strict=True)),
                     sources=dict(zip(ids, zip(made["source"],
                                               made["source_offset"].tolist(), strict=True),
                                      strict=True)),
                     seals=dict(zip(ids, made["seal"], strict=True)),
                     checks={i: sha for i, sha, c in zip(ids, made["sha256"], checks,
                                                         strict=True) if c})


def shard_cut_sizes(images: pd.DataFrame, published: pd.DataFrame) -> pd.Series:
    """What each image's shard cut is planned by (``plan_split``): its stored size when it is
    upright (its published bytes are the stored ones, or fewer: metadata stripped), else
    its published size (turned and encoded again)."""
    meta = images.set_index("image_id").loc[published.index]
    upright = meta["orientation"].astype(int).to_numpy() == 1
    stored = meta["bytes"].astype("int64").to_numpy()
    made = published["size"].astype("int64").to_numpy()
    return pd.Series(np.where(upright, np.maximum(stored, made), made), index=published.index)


def checks_spread(plans: Sequence[SplitPlan], cut_sizes: pd.Series, *, width: int) -> bool:
    """Whether the shard pass can check the objects planned as stored (``SplitPlan.checks``)
    on ``width`` processes about as evenly as the image pass would: no shard holds more than
    ``1.25 / width`` of the bytes. A shard is one job, so a release whose bytes sit mostly in
    one shard would check them on one core while the others wait; its images are better
    read by the image pass first (two reads, but spread)."""
    if width <= 1:
        return True
    totals: dict[str, int] = {}
    for p in plans:
        for m in p.plan:
            totals[m.shard] = totals.get(m.shard, 0) + int(cut_sizes.loc[m.key])
    everything = sum(totals.values())
    return not totals or max(totals.values()) <= 1.25 * everything / width


@dataclass(frozen=True)
class ShardsWritten:
    """What ``write_split_shards`` did: shard name -> sha256 of every shard written, the
    seals of the objects the shard pass checked (image_id -> seal), and the shards refused
    because an image planned as stored was not (shard name -> why)."""

    digests: dict[str, str]
    seals: dict[str, Seal]
    refused: dict[str, str]


def write_split_shards(staging: Path, plans: Sequence[SplitPlan], *,
                       pool: JobPool | None, only: Collection[str] | None = None
                       ) -> ShardsWritten:
    """Write every split's shards into ``staging`` (only those named in ``only``, when
    given).

    Each member's bytes come from its source, checked when it was made or checked as it is
    copied (``SplitPlan.checks``). A source inside ``staging`` is a spool file: it is
    removed as soon as every shard that reads it is written. Sources outside it (the
    stored objects) are only read. Every job runs to its end, refused or not, before this
    returns.
    """
    jobs = []
    for p in plans:
        for name, members in group_by_shard(p.plan).items():
            if only is not None and name not in only:
                continue
            keys = [m.key for m in members]
            jobs.append(ShardJob(path=staged_path(staging, name), members=members,
                                 sources=[p.sources[k] for k in keys],
                                 json_members=[p.json_members[k] for k in keys],
                                 seals=[p.seals.get(k) for k in keys],
                                 check=[p.checks.get(k) for k in keys] if p.checks else None))
    last_reader = {path: i for i, job in enumerate(jobs) for path, _ in job.sources
                   if Path(path).is_relative_to(staging)}
    read_last_by: dict[int, list[str]] = {}
    for path, i in last_reader.items():
        read_last_by.setdefault(i, []).append(path)
    written, kept = ShardsWritten({}, {}, {}), set[str]()  # kept: spool files refused shards read
    for i, (job, done) in enumerate(zip(jobs, run_jobs(pool, run_shard_job, jobs),
                                        strict=True)):
        name = job.path.relative_to(staging).as_posix()
        if done.refused is not None:
            written.refused[name] = done.refused
            kept.update(path for path, _ in job.sources)
        else:
            written.digests[name] = done.sha256
            written.seals.update(done.seals)
        for path in read_last_by.get(i, []):  # results come in job order: all before are done
            if path not in kept:
                Path(path).unlink(missing_ok=True)
    return written


def release_classes(settings: PublishSettings) -> list[str]:
    """Every box label in class-index order (``schemas.release.class_names``)."""
    return list(class_names(load_taxonomy(settings.taxonomy), order=settings.class_order))


def export_files(manifests: Mapping[str, pa.Table], *,
                 settings: PublishSettings) -> dict[str, bytes]:
    """HaGRID JSON per split and gesture, COCO per split, and YOLO labels when asked for.

    COCO categories and YOLO classes follow ``release_classes``.
    """
    categories = release_classes(settings)
    two_handed = load_taxonomy(settings.taxonomy).two_handed
    files: dict[str, bytes] = {}
    for split, table in sorted(manifests.items()):
        frame = table.to_pandas()
        for gesture, entries in sorted(hagrid_annotations(frame,
                                                          two_handed=two_handed).items()):
            files[f"{HAGRID}/{split}/{gesture}.json"] = json_bytes(entries)
        files[f"{COCO}/{split}.json"] = json_bytes(coco_instances(frame, categories=categories))
        if settings.yolo:
            for key, text in sorted(yolo_labels(frame, categories=categories).items()):
                files[f"{YOLO}/{split}/{key}.txt"] = text.encode()
    if settings.yolo:
        files[f"{YOLO}/classes.txt"] = "".join(f"{c}\n" for c in categories).encode()
    return files


def contract_frames(catalog: Catalog, manifest: pd.DataFrame, members: pd.DataFrame,
                    links: Sequence[tuple[str, str]]) -> dict[str, pd.DataFrame]:
    """The frames the data contracts check: catalog tables, manifest, shard members, links."""
    frames = {name: catalog.read_table(name).to_pandas()
              for name in ("submissions", "images", "verdicts", "boxes")}
    frames["images"] = frames["images"].drop(columns=["thumb"])
    frames.update({"manifest": manifest, "shard_members": members,
                   "links": pd.DataFrame(list(links), columns=["image_a", "image_b"])})
    return frames


def release_info(*, version: str, settings: PublishSettings, counts: pd.DataFrame,
                 split: Mapping[str, Any], contracts: Mapping[str, int],
                 figures: Mapping[str, Any], batches: Sequence[str]) -> dict[str, Any]:
    """The content of ``release.json``: settings, class names in class-index order, counts,
    splits, provenance (no clock time)."""
    return {
        "version": version, "settings": settings.as_dict(), "classes": release_classes(settings),
        "counts": {g: {s: int(n) for s, n in row.items()} for g, row in counts.iterrows()},
        "figures": dict(figures), "splits": dict(split), "contracts_checked": dict(contracts),
        "catalog": {"batches": len(batches), "last_batch": batches[-1] if batches else None},
        "software": {"hagrid-curation": _version("hagrid-curation"),
                     "pyarrow": pa.__version__, "pillow": PIL.__version__},
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
