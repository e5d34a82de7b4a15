"""What goes into a release, read from the catalog: images, their boxes, links, earlier splits.

A release holds the images that passed validation, were not excluded by filtration and have
an aggregated annotation (the latest ``boxes`` batch of each image whose latest annotation
verdict is ``annotated``). Everything is sorted by image_id so the same catalog always gives
the same rows in the same order.

Imported images may carry extras (the ``image_extras`` catalog table, read by
``latest_image_extras``: the split their source put them in, and the source's v2 fields as
JSON).
"""

from __future__ import annotations

import io
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.annotation import FREE_HAND_LABEL
from schemas.crowd import Stage, Verdict
from schemas.reasons import Outcome
from schemas.release import (
    MANIFEST,
    MANIFESTS,
    RELEASES,
    SAMPLE_COLUMNS,
    SHARD_COLUMNS,
    SPLITS,
)
from tasks.annotate.hagrid_import import latest_image_extras
from tasks.catalog import Catalog
from tasks.crowd.stage import images_passing, latest_verdicts
from tasks.publish.exports import hagrid_entry
from tasks.publish.published_image import published_format
from tasks.publish.shards import ShardMember
from tasks.publish.splits import (
    achieved_fractions,
    assign_splits,
    source_conflicts,
    source_user_splits,
    split_report,
    split_warnings,
    sticky_conflicts,
)
from tasks.storage import Storage

EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp"}
IMAGE_COLUMNS = ["image_id", "sha256", "object_key", "format", "width", "height", "orientation",
                 "bytes", "user_id", "gesture"]
EXTRAS_COLUMNS = ["source_split", "extras_json"]  # of image_extras, carried into manifests
REVIEW_METHOD = "review"  # the boxes method of an expert review answer (tasks.crowd.queue)
MAX_LISTED = 100  # users listed by name in release.json, per kind of split conflict


def latest_boxes(catalog: Catalog) -> pd.DataFrame:
    """The boxes of each annotated image's latest batch, sorted by image_id and box_index."""
    verdicts = latest_verdicts(catalog, Stage.ANNOTATION)
    annotated = verdicts.index[verdicts["verdict"] == Verdict.ANNOTATED.value]
    boxes = catalog.read_table("boxes").to_pandas()
    boxes = boxes[boxes["image_id"].isin(annotated)]
    last = (boxes.sort_values(["decided_at", "batch_id"], kind="stable")
            .drop_duplicates("image_id", keep="last")[["image_id", "batch_id"]])
    boxes = boxes.merge(last, on=["image_id", "batch_id"])
    return boxes.sort_values(["image_id", "box_index"], kind="stable").reset_index(drop=True)


def release_images(catalog: Catalog) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(images, boxes) of every image that belongs in a release, both sorted by image_id.

    ``images`` also holds ``EXTRAS_COLUMNS`` of each image's latest ``image_extras`` row
    (None when it has none).
    """
    images = catalog.read_table("images", columns=IMAGE_COLUMNS).to_pandas()
    passing = set(images_passing(catalog)["image_id"])
    boxes = latest_boxes(catalog)
    keep = passing & set(boxes["image_id"])
    images = images[images["image_id"].isin(keep)].sort_values("image_id", kind="stable")
    extras = latest_image_extras(catalog).set_index("image_id").reindex(images["image_id"])
    images = images.assign(**{c: _nullable(extras[c]) for c in EXTRAS_COLUMNS})
    boxes = boxes[boxes["image_id"].isin(keep)].reset_index(drop=True)
    return images.reset_index(drop=True), boxes


def _nullable(values: pd.Series) -> list[object]:
    return [None if pd.isna(v) else v for v in values]


def reviewed_gestures(images: pd.DataFrame, boxes: pd.DataFrame) -> pd.Series:
    """The published gesture of each image (indexed like ``images``): its assigned
    ``gesture``, except where an expert review (boxes with method ``review``, as after a label
    audit) labelled its hands with exactly one gesture and not the assigned one: then the
    reviewer's gesture, as a reviewer's decision on a label is final."""
    reviewed = boxes[(boxes["method"] == REVIEW_METHOD) & (boxes["label"] != FREE_HAND_LABEL)]
    shown = reviewed.groupby("image_id")["label"].agg(lambda labels: sorted(set(labels)))
    gesture = images["gesture"].copy()
    assigned = images.set_index("image_id")["gesture"]
    for image_id, labels in shown.items():
        if len(labels) == 1 and labels[0] != assigned.get(image_id):
            gesture[images["image_id"] == image_id] = labels[0]
    return gesture


def sample_table(images: pd.DataFrame, boxes: pd.DataFrame, split: pd.Series,
                 published: pd.DataFrame) -> pa.Table:
    """The manifest columns known before sharding (``SAMPLE_COLUMNS``), one row per image.

    ``images`` and ``boxes`` as from ``release_images``; ``split`` maps image_id -> split;
    ``published``: image_id -> ``sha256`` of the published bytes (``publish_images``).
    """
    counts = boxes.groupby("image_id", sort=True).size().reindex(images["image_id"])
    offsets = np.concatenate([[0], np.cumsum(counts.to_numpy())]).astype(np.int32)
    coords = boxes[["x", "y", "w", "h"]].to_numpy(dtype=np.float64).reshape(-1)
    per_image = boxes.drop_duplicates("image_id").set_index("image_id").reindex(images["image_id"])

    def listed(values: pa.Array) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(offsets), values)

    columns = {
        "image_id": images["image_id"], "split": split.reindex(images["image_id"]).to_numpy(),
        "sha256": published["sha256"].reindex(images["image_id"]).to_numpy(),
        "source_sha256": images["sha256"], "width": images["width"], "height": images["height"],
        "format": images["format"].map(published_format),
        "gesture": reviewed_gestures(images, boxes),
        "user_id": images["user_id"],
        "boxes": listed(pa.FixedSizeListArray.from_arrays(pa.array(coords), 4)),
        "labels": listed(pa.array(boxes["label"].to_numpy(dtype=object), pa.string())),
        "box_agreement": listed(pa.array(boxes["agreement"].to_numpy(np.float64))),
        "leading_hand": _nullable(per_image["leading_hand"]),  # null: unknown
        "leading_conf": _nullable(per_image["leading_conf"]),
        "n_annotators": per_image["n_annotators"].to_numpy(np.int16),
        "annotation_method": per_image["method"].to_numpy(),
        **{c: _nullable(images[c]) if c in images else [None] * len(images)
           for c in EXTRAS_COLUMNS},
    }
    schema = pa.schema([MANIFEST.field(name) for name in SAMPLE_COLUMNS])
    arrays = [_array(c, schema.field(n).type) for n, c in columns.items()]
    return pa.Table.from_arrays(arrays, schema=schema)


def _array(values: Any, type_: pa.DataType) -> pa.Array:
    if isinstance(values, pa.Array):
        return values
    if isinstance(values, list):  # holds None for nulls
        return pa.array(values, type_)
    return pa.array(np.asarray(values), type_)


def sample_json(samples: pa.Table, *, two_handed: Collection[str]) -> list[bytes]:
    """The ``<key>.json`` member of every sample: its HaGRID entry (``hagrid_entry``) plus
    ``image_id``, ``gesture``, ``width``, ``height`` and ``sha256``."""
    rows = samples.select(["image_id", "gesture", "boxes", "labels", "leading_hand",
                           "leading_conf", "user_id", "annotation_method", "extras_json",
                           "width", "height", "sha256"]).to_pylist()
    out = []
    for row in rows:
        member = hagrid_entry(row, two_handed=two_handed)
        member.update({k: row[k] for k in ("image_id", "gesture", "width", "height", "sha256")})
        out.append(json.dumps(member, sort_keys=True, separators=(",", ":"),
                              allow_nan=False).encode() + b"\n")
    return out


def manifest_table(samples: pa.Table, plan: Sequence[ShardMember]) -> pa.Table:
    """Samples plus where each sits in the shards (``plan`` in the same row order)."""
    if [m.key for m in plan] != samples.column("image_id").to_pylist():
        raise ValueError("the shard plan is not in the samples' order")
    extra = {name: [getattr(m, name) for m in plan] for name in SHARD_COLUMNS}
    arrays = samples.columns + [pa.array(extra[n], MANIFEST.field(n).type) for n in extra]
    return pa.Table.from_arrays(arrays, schema=MANIFEST)


def image_extension(fmt: str) -> str:
    """File extension of a stored image format."""
    return EXTENSIONS.get(fmt, fmt.lower())


def dedup_links(catalog: Catalog, released: pd.DataFrame) -> list[tuple[str, str]]:
    """Near-duplicate links the dedup stage saw, as pairs of released images.

    A duplicate submission was not kept, but its uploader and the kept image's uploader are
    linked (possibly one person with two accounts): the pair is expressed through the first
    released image of each user, so ``tasks.publish.splits`` keeps both users in one split.
    """
    subs = catalog.read_table("submissions", columns=["user_key", "duplicate_of"]).to_pandas()
    subs = subs.dropna(subset=["user_key", "duplicate_of"])
    owners = catalog.read_table("images", columns=["image_id", "user_id"]).to_pandas()
    kept_user = owners.set_index("image_id")["user_id"]
    subs = subs.assign(kept_user=subs["duplicate_of"].map(kept_user)).dropna()
    first_image = released.sort_values("image_id").drop_duplicates("user_id")
    first_image = first_image.set_index("user_id")["image_id"]
    a = subs["user_key"].map(first_image)
    b = subs["kept_user"].map(first_image)
    pairs = pd.DataFrame({"a": a, "b": b}).dropna()
    pairs = pairs[pairs["a"] != pairs["b"]].drop_duplicates().sort_values(["a", "b"])
    return list(zip(pairs["a"], pairs["b"], strict=True))


def published_versions(root: Storage) -> list[str]:
    """Versions of the complete releases under ``root`` (staging folders are skipped)."""
    versions = {k.split("/")[1] for k in root.list(RELEASES) if k.count("/") >= 2}
    return sorted(v for v in versions if not v.startswith(".")
                  and root.exists(f"{RELEASES}/{v}/SHA256SUMS"))


def previous_splits(root: Storage) -> dict[str, str]:
    """user_id -> split in earlier releases (a later release wins, though they never differ)."""
    found: dict[str, str] = {}
    for version in published_versions(root):
        prefix = f"{RELEASES}/{version}/{MANIFESTS}/"
        for key in root.list(prefix):
            if key.endswith(".parquet"):
                table = pq.read_table(io.BytesIO(root.read_bytes(key)), columns=["user_id",
                                                                                  "split"])
                users = table.to_pandas().drop_duplicates("user_id")
                found.update(zip(users["user_id"], users["split"], strict=True))
    return found


def rejection_summary(catalog: Catalog) -> pd.DataFrame:
    """What each stage rejected and why: columns stage, reason, count (sorted).

    Ingest counts rejected submissions; validation and filtration count images by their
    current verdict (filtration per flag) and ``pending`` for images still undecided;
    annotation counts images that passed both but have no final boxes yet.
    """
    subs = catalog.read_table("submissions", columns=["outcome", "reason"]).to_pandas()
    rows = _count("ingest", subs.loc[subs["outcome"] != Outcome.ACCEPTED.value, "reason"])
    images = catalog.read_table("images", columns=["image_id"]).to_pandas()["image_id"]
    valid = latest_verdicts(catalog, Stage.VALIDATION)
    rows += _count("validation", valid.loc[valid["verdict"] == Verdict.REJECTED.value, "reason"]
                   .fillna("other"))
    rows += _count("validation", pd.Series(["pending"] * int((~images.isin(valid.index)).sum())))
    clear = latest_verdicts(catalog, Stage.FILTRATION)
    flags = clear.loc[clear["verdict"] == Verdict.EXCLUDED.value, "reason"].fillna("flagged")
    rows += _count("filtration", flags.str.split(",").explode())
    accepted = valid.index[valid["verdict"] == Verdict.ACCEPTED.value]
    rows += _count("filtration", pd.Series(["pending"] * len(set(accepted) - set(clear.index))))
    passing = set(images_passing(catalog)["image_id"])
    annotated = set(latest_boxes(catalog)["image_id"])
    rows += _count("annotation", pd.Series(["not_annotated"] * len(passing - annotated)))
    return pd.DataFrame(rows, columns=["stage", "reason", "count"])


def _count(stage: str, reasons: pd.Series) -> list[dict[str, object]]:
    counts = reasons.astype(str).value_counts().sort_index()
    return [{"stage": stage, "reason": r, "count": int(n)} for r, n in counts.items()]


def split_counts(manifest: pd.DataFrame, gestures: Sequence[str],
                 splits: Sequence[str]) -> pd.DataFrame:
    """Images per gesture (rows, taxonomy order) and split (columns), with zeros."""
    table = pd.crosstab(manifest["gesture"], manifest["split"])
    return table.reindex(index=list(gestures), columns=list(splits), fill_value=0)


@dataclass
class SplitResult:
    """The split assignment of a release and what the data card says about it."""

    assignment: pd.Series  # image_id -> split
    links: list[tuple[str, str]]  # near-duplicate links kept inside one split
    info: dict[str, Any]


def split_release(catalog: Catalog, images: pd.DataFrame, *, fractions: Mapping[str, float],
                  seed: int) -> SplitResult:
    """User-disjoint, link-aware, sticky split of the release images.

    A link that joins users already published in two splits straddles (a published user
    never moves); it is listed in ``info["links_across_published_splits"]``.
    Images whose ``source_split`` (a column of ``images``, optional) is a split name pin
    their user there (``splits.source_user_splits``), unless an earlier release published
    the user: the user stays, and ``info`` counts the images that left their source split.
    A source split missing from ``fractions`` is added with fraction 0 (no new users).
    ``info["fractions"]``: the share of the images each split got (``target_fractions``:
    what was asked); ``info["warnings"]``: splits far from their target, classes missing
    from a split (``splits.split_warnings``).
    """
    frame = images[["image_id", "user_id", "gesture"]]
    links = dedup_links(catalog, images)
    users = set(frame["user_id"])
    previous = {u: s for u, s in previous_splits(catalog.root).items() if u in users}
    source = _source_splits(images)
    pinned = {**source_user_splits(frame, source), **previous}  # published users never move
    fractions = {**dict.fromkeys(set(pinned.values()) - set(fractions), 0.0), **fractions}
    assignment = assign_splits(frame, fractions=fractions, links=links, previous=pinned,
                               seed=seed)
    report = split_report(frame, assignment, fractions)
    conflicts = sticky_conflicts(frame, links=links, previous=pinned)
    kept = [(a, b) for a, b in links if assignment[a] == assignment[b]]
    info = {"fractions": achieved_fractions(report),
            "target_fractions": dict(sorted(fractions.items())),
            "warnings": split_warnings(report, fractions),
            "max_abs_deviation": float(report["max_abs_deviation"].max()),
            "sticky_users": len(previous), "links": len(kept),
            "sticky_conflicts": len(conflicts), "links_across_published_splits":
            [[a, b] for a, b in links if assignment[a] != assignment[b]],
            **_source_info(images, frame, assignment, source)}
    return SplitResult(assignment=assignment, links=kept, info=info)


def _source_splits(images: pd.DataFrame) -> dict[str, str]:
    """image_id -> source split, for the images whose source split is a split name."""
    if "source_split" not in images:
        return {}
    known = images[images["source_split"].isin(SPLITS)]
    return dict(zip(known["image_id"], known["source_split"], strict=True))


def _source_info(images: pd.DataFrame, frame: pd.DataFrame, assignment: pd.Series,
                 source: Mapping[str, str]) -> dict[str, Any]:
    """What release.json says about source splits: how many images had one, how many did
    not keep it (and their users, up to ``MAX_LISTED``), how many named no split we know."""
    named = images["source_split"].notna().sum() if "source_split" in images else 0
    moved = source_conflicts(frame, assignment, source)
    users = sorted(moved["user_id"].unique())
    return {"source_split_images": len(source), "source_split_unknown": int(named) - len(source),
            "source_split_moved": len(moved), "source_split_conflict_users": len(users),
            "source_split_conflict_users_listed": users[:MAX_LISTED]}
