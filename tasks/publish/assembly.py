"""The parts of a release computed from the samples: shard plans, exports, contract inputs.

Plain functions over tables; the publish flow decides the order and where files go.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from schemas.release import COCO, HAGRID, YOLO, PublishSettings
from schemas.taxonomy import load_taxonomy
from tasks.catalog import Catalog
from tasks.publish.exports import coco_instances, hagrid_annotations, json_bytes, yolo_labels
from tasks.publish.selection import image_extension, manifest_table, sample_json
from tasks.publish.shards import ShardMember, group_by_shard, plan_shards
from tasks.publish.writer import ShardJob, staged_path, write_shards
from tasks.storage import LocalStorage, Storage


@dataclass(frozen=True)
class SplitPlan:
    """One split's samples, where each goes in the shards, and the content of its members."""

    split: str
    manifest: pa.Table  # MANIFEST rows in shard order (sorted by image_id)
    plan: list[ShardMember]
    json_members: dict[str, bytes]  # image_id -> the <key>.json member
    object_keys: dict[str, str]  # image_id -> where its bytes are under the dataset root
    sha256: dict[str, str]


def plan_split(samples: pa.Table, images: pd.DataFrame, *, split: str,
               settings: PublishSettings) -> SplitPlan:
    """Plan one split's shards from the samples (all splits) and the catalog image rows."""
    rows = samples.filter(pc.equal(samples.column("split"), split))
    ids = rows.column("image_id").to_pylist()
    meta = images.set_index("image_id").loc[ids]
    members = sample_json(rows)
    table = pd.DataFrame({"key": ids, "ext": [image_extension(f) for f in meta["format"]],
                          "size": meta["bytes"].to_numpy(),
                          "json_size": [len(m) for m in members]})
    plan = plan_shards(table, split=split, max_bytes=settings.shard_max_bytes,
                       max_count=settings.shard_max_count)
    return SplitPlan(split=split, manifest=manifest_table(rows, plan), plan=plan,
                     json_members=dict(zip(ids, members, strict=True)),
                     object_keys=dict(zip(ids, meta["object_key"], strict=True)),
                     sha256=dict(zip(ids, meta["sha256"], strict=True)))


def write_split_shards(root: Storage, staging: Path, plans: Sequence[SplitPlan], *,
                       workers: int, endpoint_url: str | None = None) -> dict[str, str]:
    """Write every split's shards into ``staging``; return shard name -> sha256.

    Each image is read from the dataset root and checked against its sha256 on the way.
    """
    jobs = []
    for p in plans:
        for name, members in group_by_shard(p.plan).items():
            keys = [m.key for m in members]
            jobs.append(ShardJob(
                path=staged_path(staging, name), members=members,
                object_keys=[p.object_keys[k] for k in keys],
                json_members=[p.json_members[k] for k in keys],
                sha256=[p.sha256[k] for k in keys], root_uri=root.uri,
                endpoint_url=endpoint_url))
    # S3 roots write in this process: a forkserver started earlier would not see credentials
    # set in the environment since (and S3 reads are network-bound, not GIL-bound)
    digests = write_shards(jobs, workers=workers if isinstance(root, LocalStorage) else 1)
    return {job.path.relative_to(staging).as_posix(): d
            for job, d in zip(jobs, digests, strict=True)}


def export_files(manifests: Mapping[str, pa.Table], *,
                 settings: PublishSettings) -> dict[str, bytes]:
    """HaGRID JSON per split and gesture, COCO per split, and YOLO labels when asked for."""
    categories = list(load_taxonomy(settings.taxonomy).box_labels)
    files: dict[str, bytes] = {}
    for split, table in sorted(manifests.items()):
        frame = table.to_pandas()
        for gesture, entries in sorted(hagrid_annotations(frame).items()):
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
    """The content of ``release.json``: settings, counts, splits, provenance (no clock time)."""
    return {
        "version": version, "settings": settings.as_dict(),
        "counts": {g: {s: int(n) for s, n in row.items()} for g, row in counts.iterrows()},
        "figures": dict(figures), "splits": dict(split), "contracts_checked": dict(contracts),
        "catalog": {"batches": len(batches), "last_batch": batches[-1] if batches else None},
        "software": {"hagrid-curation": _version("hagrid-curation"),
                     "pyarrow": pa.__version__},
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
