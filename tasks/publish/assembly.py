"""The parts of a release computed from the samples: shard plans, exports, contract inputs.

Plain functions over tables; the publish flow decides the order and where files go.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import PIL
import pyarrow as pa
import pyarrow.compute as pc

from schemas.release import COCO, HAGRID, SPLITS, YOLO, PublishSettings, class_names
from schemas.taxonomy import load_taxonomy
from tasks.catalog import Catalog
from tasks.publish.checked_objects import Seal, load_checked, save_checked, stat_seal
from tasks.publish.exports import coco_instances, hagrid_annotations, json_bytes, yolo_labels
from tasks.publish.remote import RemoteStaging
from tasks.publish.selection import image_extension, manifest_table, sample_json
from tasks.publish.shards import ShardMember, group_by_shard, plan_shards
from tasks.publish.writer import (
    OBJECT_KEY,
    ImageJob,
    JobPool,
    MadeImage,
    ShardJob,
    WrittenShard,
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
                   remote: RemoteStaging | None = None) -> pd.DataFrame:
    """Make every image's published bytes once (``published_image``: upright, no metadata),
    in ``order``; memory holds one image per process.

    Returns one row per image_id (index, in ``order``): ``sha256`` and ``size`` of the
    published bytes, and where they are: ``source`` (a file) and ``source_offset``. That
    file is the stored object when the published bytes are the stored bytes (a local root),
    else a spool file under ``spool``; ``seal`` is the stored object's seal (else None).
    Each stored image is checked against the catalog's sha256 on the way, unless the
    root's record (``checked_objects``) shows a previous publish checked it and its seal is
    unchanged; the seals of the objects checked here are added to that record.

    With ``remote`` (an S3 root on a cluster) the spool files are staged under the root
    (``spool`` is then the folder's name in the release, e.g. ``.published``), and a
    ``source`` is a key under the root: a spool file's, or the stored object's when its
    published bytes are its stored bytes.
    """
    meta = images.set_index("image_id").loc[list(order)]
    keys, shas = meta["object_key"].tolist(), meta["sha256"].tolist()
    orientations, sizes = meta["orientation"].astype(int).tolist(), meta["bytes"].tolist()
    checked_keys = list(zip(keys, orientations, strict=True))
    recorded = load_checked(root)
    rows: list[MadeImage | None] = [None] * len(keys)
    if recorded and isinstance(root, LocalStorage):  # one stat, no read, per sealed object
        base = f"{root.path}/"
        for i, checked in enumerate(checked_keys):
            seal = recorded.get(checked)
            if (seal is not None and OBJECT_KEY.fullmatch(checked[0])
                    and stat_seal(base + checked[0]) == seal):
                rows[i] = (seal.size, shas[i], base + checked[0], 0, seal)
    pending = [i for i, row in enumerate(rows) if row is None]
    if remote is not None:
        spool = Path(remote.key(spool.as_posix()))
    else:
        spool.mkdir(parents=True, exist_ok=True)
    runs = spool_chunks([sizes[i] for i in pending], max_bytes=SPOOL_FILE_BYTES,
                        max_count=SPOOL_FILE_COUNT)
    jobs = [ImageJob(spool=spool / f"{number:06d}.bin",
                     object_keys=[keys[i] for i in pending[run.start:run.stop]],
                     sha256=[shas[i] for i in pending[run.start:run.stop]],
                     orientation=[orientations[i] for i in pending[run.start:run.stop]],
                     root_uri=root.uri, endpoint_url=endpoint_url, remote=remote)
            for number, run in enumerate(runs)]
    for run, made in zip(runs, run_jobs(pool, run_image_job, jobs), strict=True):
        for i, row in zip(pending[run.start:run.stop], made, strict=True):
            rows[i] = row
    made = [row for row in rows if row is not None]
    if len(made) != len(rows):
        raise RuntimeError("an image job returned fewer images than it was given")
    new = {checked_keys[i]: seal for i in pending if (seal := made[i][4]) is not None}
    if new:
        save_checked(root, recorded | new)
    return pd.DataFrame(made, columns=["size", "sha256", "source", "source_offset", "seal"],
                        index=pd.Index(list(order), name="image_id")
                        )[["sha256", "size", "source", "source_offset", "seal"]]


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


def plan_split(samples: pa.Table, published: pd.DataFrame, *, split: str,
               settings: PublishSettings) -> SplitPlan:
    """Plan one split's shards from the samples (all splits) and the published images."""
    rows = samples.filter(pc.equal(samples.column("split"), split))
    ids = rows.column("image_id").to_pylist()
    made = published.loc[ids]
    members = sample_json(rows, two_handed=load_taxonomy(settings.taxonomy).two_handed)
    table = pd.DataFrame({"key": ids,
                          "ext": [image_extension(f) for f in rows.column("format").to_pylist()],
                          "size": made["size"].to_numpy(),
                          "json_size": [len(m) for m in members]})
    plan = plan_shards(table, split=split, max_bytes=settings.shard_max_bytes,
                       max_count=settings.shard_max_count)
    return SplitPlan(split=split, manifest=manifest_table(rows, plan), plan=plan,
                     json_members=dict(zip(ids, members, strict=True)),
                     sources=dict(zip(ids, zip(made["source"],
                                               made["source_offset"].tolist(), strict=True),
                                      strict=True)),
                     seals=dict(zip(ids, made["seal"], strict=True)))


def write_split_shards(staging: Path, plans: Sequence[SplitPlan], *,
                       pool: JobPool | None, remote: RemoteStaging | None = None
                       ) -> dict[str, WrittenShard]:
    """Write every split's shards into ``staging`` (with ``remote``: under the root's
    staging prefix); return shard name -> what was written (``WrittenShard``).

    Each member's bytes come from its source, checked when it was made. A source inside
    the staging area is a spool file: it is removed as soon as every shard that reads it is
    written. Sources outside it (the stored objects) are only read.
    """
    area = Path(remote.prefix) if remote is not None else staging
    jobs = []
    for p in plans:
        for name, members in group_by_shard(p.plan).items():
            keys = [m.key for m in members]
            path = Path(remote.key(name)) if remote is not None else staged_path(staging, name)
            jobs.append(ShardJob(path=path, members=members,
                                 sources=[p.sources[k] for k in keys],
                                 json_members=[p.json_members[k] for k in keys],
                                 seals=[p.seals.get(k) for k in keys], remote=remote))
    last_reader = {source: i for i, job in enumerate(jobs) for source, _ in job.sources
                   if Path(source).is_relative_to(area)}
    read_last_by: dict[int, list[str]] = {}
    for source, i in last_reader.items():
        read_last_by.setdefault(i, []).append(source)
    store = remote.storage() if remote is not None else None
    written = {}
    for i, (job, shard) in enumerate(zip(jobs, run_jobs(pool, run_shard_job, jobs),
                                         strict=True)):
        written[job.path.relative_to(area).as_posix()] = shard
        for source in read_last_by.get(i, []):  # results come in job order: all before are done
            if store is not None:
                store.delete(source)
            else:
                Path(source).unlink(missing_ok=True)
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
