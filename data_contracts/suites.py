"""What the data contracts check: the frames each table is checked on, and their expectations.

Catalog tables (``submissions``, ``images``, ``verdicts``, ``boxes``) are checked as they are,
with derived columns added where an expectation needs them. A release is checked through
frames derived from its manifest and the members found in its shards:

- ``manifest``: one row per image, plus the lengths of its per-box lists;
- ``manifest_boxes``: one row per box of the manifest (the lists exploded);
- ``manifest_users``: one row per user_id with the number of splits it appears in;
- ``links``: near-duplicate links, with the split of each end looked up in the manifest;
- ``shard_members``: the tar members as found, with each image member's pixel size and the
  metadata its bytes still carry (``writer.shard_members``);
- ``shard_check``: manifest members (image and json) outer-joined with the shard members,
  the manifest's width and height beside the image member's;
- ``shard_keys``: one row per key of either side, with its member counts.

Everything here is pure pandas / numpy: no I/O, no data context.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from itertools import chain

os.environ["GX_ANALYTICS_ENABLED"] = "false"  # no network: set before GX is imported

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.expectations.row_conditions import Column

from schemas.annotation import LEADING_HANDS
from schemas.crowd import Stage, Verdict
from schemas.reasons import Outcome, Reason
from schemas.release import KEY_PATTERN, SPLITS
from schemas.taxonomy import Taxonomy

Expectations = list[gxe.Expectation]

BOX_TOLERANCE = 1e-6  # x + w and y + h may pass 1 by this much (float rounding)
SHA256_PATTERN = r"^[0-9a-f]{64}\Z"
MEMBER_EXTENSIONS: tuple[str, ...] = ("jpg", "png", "webp", "json")
MATCHED = "matched"  # shard_check.side: in the manifest and in the shards, same place
MANIFEST_ONLY = "manifest_only"
SHARDS_ONLY = "shards_only"
_SIDES = {"both": MATCHED, "left_only": MANIFEST_ONLY, "right_only": SHARDS_ONLY}  # merge's

# The column that names a row of each table in the samples of a failure (Data Docs too).
ID_COLUMNS: dict[str, str] = {
    "submissions": "submission_id", "images": "image_id", "verdicts": "image_id",
    "boxes": "image_id", "manifest": "image_id", "manifest_boxes": "image_id",
    "manifest_users": "user_id", "links": "image_a", "shard_members": "key",
    "shard_check": "key", "shard_keys": "key",
}


# ---- expectations ------------------------------------------------------------------------

def _unit(column: str) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0.0, max_value=1.0)


def _positive(column: str) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, strict_min=True)


def _non_negative(column: str) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0)


def _one_of(column: str, values: Iterable[str]) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=sorted(str(v) for v in values))


def _identity(column: str) -> Expectations:
    return [gxe.ExpectColumnValuesToNotBeNull(column=column),
            gxe.ExpectColumnValuesToBeUnique(column=column)]


def images_suite(taxonomy: Taxonomy) -> Expectations:
    """Catalog images: unique ids and hashes, a positive size, a gesture of the taxonomy."""
    return [
        *_identity("image_id"),
        gxe.ExpectColumnValuesToBeUnique(column="sha256"),
        gxe.ExpectColumnValuesToMatchRegex(column="sha256", regex=SHA256_PATTERN),
        _positive("width"), _positive("height"),
        _one_of("gesture", taxonomy.gestures),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
    ]


def submissions_suite() -> Expectations:
    """Catalog submissions: unique ids, a known outcome, a known reason for every rejection."""
    rejected = Column("outcome") != Outcome.ACCEPTED.value
    return [
        *_identity("submission_id"),
        _one_of("outcome", Outcome),
        _one_of("reason", Reason),
        gxe.ExpectColumnValuesToNotBeNull(column="reason", row_condition=rejected),
    ]


def verdicts_suite() -> Expectations:
    """Catalog verdicts: a known stage and verdict, a confidence in [0, 1]."""
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="image_id"),
        _one_of("stage", Stage), _one_of("verdict", Verdict), _unit("confidence"),
    ]


def box_suite(taxonomy: Taxonomy) -> Expectations:
    """Boxes (``x, y, w, h`` relative, plus derived ``x2 = x + w``, ``y2 = y + h``): inside
    the image, not degenerate, labelled with a box label of the taxonomy."""
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="image_id"),
        *(_unit(c) for c in ("x", "y", "w", "h")),
        _positive("w"), _positive("h"),
        *(gxe.ExpectColumnValuesToBeBetween(column=c, max_value=1.0 + BOX_TOLERANCE)
          for c in ("x2", "y2")),
        gxe.ExpectColumnValuesToNotBeNull(column="label"),
        _one_of("label", taxonomy.box_labels),
        _unit("agreement"),
    ]


def boxes_suite(taxonomy: Taxonomy) -> Expectations:
    """Catalog boxes: the box checks, plus the leading hand and the confidences."""
    return [
        *box_suite(taxonomy),
        _one_of("leading_hand", LEADING_HANDS),
        _unit("leading_conf"), _unit("label_conf"),
    ]


def manifest_suite(taxonomy: Taxonomy) -> Expectations:
    """Release manifest: one row per image key, a known split and gesture, one label and one
    agreement per box and at least one box, a place in the shards."""
    return [
        *_identity("image_id"),
        gxe.ExpectColumnValuesToMatchRegex(column="image_id", regex=KEY_PATTERN.pattern),
        _one_of("split", SPLITS),
        _one_of("gesture", taxonomy.gestures),
        gxe.ExpectColumnValuesToMatchRegex(column="sha256", regex=SHA256_PATTERN),
        gxe.ExpectColumnValuesToMatchRegex(column="source_sha256", regex=SHA256_PATTERN),
        _positive("width"), _positive("height"),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        _one_of("leading_hand", LEADING_HANDS),
        _unit("leading_conf"),
        gxe.ExpectColumnValuesToBeBetween(column="n_boxes", min_value=1),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="n_boxes", column_B="n_labels"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="n_boxes", column_B="n_agreements"),
        *(_non_negative(c) for c in ("offset", "size", "json_offset", "json_size")),
    ]


def manifest_users_suite() -> Expectations:
    """Split disjointness: every user_id lies in exactly one split."""
    return [gxe.ExpectColumnValuesToBeBetween(column="n_splits", min_value=1, max_value=1)]


def links_suite() -> Expectations:
    """Near-duplicate links never straddle splits (links to unreleased images are ignored)."""
    return [gxe.ExpectColumnPairValuesToBeEqual(
        column_A="split_a", column_B="split_b", ignore_row_if="either_value_is_missing")]


def shard_members_suite() -> Expectations:
    """Tar members: keys are image keys, known extensions, each (shard, key, ext) once; every
    image member readable, and carrying no metadata (no EXIF: no GPS, Artist, Copyright,
    XPAuthor, ImageDescription, UserComment, MakerNote; no XMP, IPTC, comment, trailer)."""
    image = Column("ext") != "json"
    return [
        gxe.ExpectColumnValuesToMatchRegex(column="key", regex=KEY_PATTERN.pattern),
        _one_of("ext", MEMBER_EXTENSIONS),
        _non_negative("offset"), _non_negative("size"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["shard", "key", "ext"]),
        gxe.ExpectColumnValuesToNotBeNull(column="width", row_condition=image),
        gxe.ExpectColumnValuesToBeNull(column="metadata"),
    ]


def shard_check_suite() -> Expectations:
    """Every member the manifest names is in the shards at that offset and size, and back;
    an image member's pixels are as wide and high as the manifest says (upright)."""
    return [
        _one_of("side", [MATCHED]),
        *(gxe.ExpectColumnPairValuesToBeEqual(column_A=side, column_B=f"member_{side}",
                                              ignore_row_if="either_value_is_missing")
          for side in ("width", "height")),
    ]


def shard_keys_suite() -> Expectations:
    """The member keys are the manifest's image ids; each key has one image and one json."""
    return [
        _one_of("side", [MATCHED]),
        gxe.ExpectColumnValuesToBeBetween(column="n_images", min_value=1, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="n_json", min_value=1, max_value=1),
    ]


def build_suites(taxonomy: Taxonomy) -> dict[str, Expectations]:
    """Every table's expectations, keyed by table name (the keys of ``ID_COLUMNS``)."""
    return {
        "submissions": submissions_suite(), "images": images_suite(taxonomy),
        "verdicts": verdicts_suite(), "boxes": boxes_suite(taxonomy),
        "manifest": manifest_suite(taxonomy), "manifest_boxes": box_suite(taxonomy),
        "manifest_users": manifest_users_suite(), "links": links_suite(),
        "shard_members": shard_members_suite(), "shard_check": shard_check_suite(),
        "shard_keys": shard_keys_suite(),
    }


# ---- frames ------------------------------------------------------------------------------

def with_box_ends(boxes: pd.DataFrame) -> pd.DataFrame:
    """``boxes`` plus ``x2 = x + w`` and ``y2 = y + h``."""
    return boxes.assign(x2=boxes["x"] + boxes["w"], y2=boxes["y"] + boxes["h"])


def _lengths(lists: pd.Series) -> np.ndarray:
    return lists.map(len).to_numpy(dtype=np.int64)


def manifest_frame(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest's scalar columns plus ``n_boxes``, ``n_labels``, ``n_agreements``."""
    scalars = manifest.drop(columns=["boxes", "labels", "box_agreement"])
    return scalars.assign(n_boxes=_lengths(manifest["boxes"]),
                          n_labels=_lengths(manifest["labels"]),
                          n_agreements=_lengths(manifest["box_agreement"]))


def _flat(lists: pd.Series) -> tuple[pd.MultiIndex, list[object]]:
    """(row, box_index) of every element of the per-row lists, and the elements."""
    lengths = _lengths(lists)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    index = pd.MultiIndex.from_arrays(
        [np.repeat(np.arange(len(lengths)), lengths), np.arange(lengths.sum()) - starts],
        names=["row", "box_index"])
    return index, list(chain.from_iterable(lists))


def manifest_boxes_frame(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per manifest box: image_id, box_index, x, y, w, h, x2, y2, label, agreement.

    Lists of unequal length align by position; the shorter side is null (the manifest
    suite reports the mismatch)."""
    index, boxes = _flat(manifest["boxes"])
    coords = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    parts = [pd.DataFrame(coords, index=index, columns=["x", "y", "w", "h"])]
    for name, column in (("label", "labels"), ("agreement", "box_agreement")):
        index, values = _flat(manifest[column])
        parts.append(pd.DataFrame({name: pd.Series(values, index=index, dtype=object)}))
    frame = pd.concat(parts, axis=1).reset_index()
    ids = manifest["image_id"].to_numpy(dtype=object)[frame.pop("row").to_numpy()]
    frame.insert(0, "image_id", ids)
    return with_box_ends(frame.astype({"agreement": np.float64}))


def manifest_users_frame(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per user_id: ``n_splits``, the number of splits its images are in."""
    counts = manifest.groupby("user_id", sort=True)["split"].nunique()
    return counts.rename("n_splits").reset_index()


def links_frame(links: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """``links`` (image_a, image_b) with ``split_a`` and ``split_b`` from the manifest."""
    split = manifest.drop_duplicates("image_id").set_index("image_id")["split"]
    frame = links[["image_a", "image_b"]].reset_index(drop=True)
    return frame.assign(split_a=frame["image_a"].map(split).astype(object),
                        split_b=frame["image_b"].map(split).astype(object))


def _expected_members(manifest: pd.DataFrame) -> pd.DataFrame:
    keys = ["shard", "image_id"]
    images = manifest[[*keys, "offset", "size", "width", "height"]].assign(kind="image")
    json = manifest[[*keys, "json_offset", "json_size"]].assign(kind="json").rename(
        columns={"json_offset": "offset", "json_size": "size"})
    return pd.concat([images, json]).rename(columns={"image_id": "key"})


def _found_members(members: pd.DataFrame) -> pd.DataFrame:
    kind = np.where(members["ext"] == "json", "json", "image")
    sizes = members.reindex(columns=["width", "height"]).astype("float64")
    return members[["shard", "key", "offset", "size"]].assign(
        kind=kind, member_width=sizes["width"], member_height=sizes["height"])


def shard_check_frame(manifest: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """Manifest members outer-joined with shard members on (shard, key, kind, offset, size).

    ``side`` is ``matched``, ``manifest_only`` (the manifest names a member that is not
    there) or ``shards_only`` (a member no manifest row names). Image rows carry the
    manifest's ``width`` and ``height`` and the member's ``member_width``,
    ``member_height``."""
    on = ["shard", "key", "kind", "offset", "size"]
    expected = _expected_members(manifest).astype({"offset": np.int64, "size": np.int64})
    found = _found_members(members).astype({"offset": np.int64, "size": np.int64})
    joined = expected.merge(found, on=on, how="outer", indicator="side", sort=True)
    return joined.assign(side=joined["side"].astype(str).map(_SIDES))


def shard_keys_frame(manifest: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """One row per key of the manifest or the shards: ``side`` as in ``shard_check_frame``,
    ``n_images`` and ``n_json``, the image and json members found under that key."""
    found = _found_members(members)
    counts = pd.concat(
        [found.loc[found["kind"] == kind, "key"].value_counts().rename(name)
         for kind, name in (("image", "n_images"), ("json", "n_json"))], axis=1)
    counts = counts.rename_axis("key").reset_index()
    ids = pd.DataFrame({"key": manifest["image_id"].drop_duplicates()})
    joined = ids.merge(counts, on="key", how="outer", indicator="side", sort=True)
    joined = joined.fillna({"n_images": 0, "n_json": 0}).astype(
        {"n_images": np.int64, "n_json": np.int64})
    return joined.assign(side=joined["side"].astype(str).map(_SIDES))


def prepare_tables(frames: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The frames each suite checks, derived from the frames given (absent ones skipped).

    Catalog tables and ``shard_members`` pass through (``boxes`` gains ``x2``, ``y2``);
    ``manifest`` gives the manifest frames; ``links``, ``shard_check`` and ``shard_keys``
    need ``manifest`` too."""
    tables = {name: frames[name] for name in ("submissions", "images", "verdicts")
              if name in frames}
    if "boxes" in frames:
        tables["boxes"] = with_box_ends(frames["boxes"])
    if "shard_members" in frames:
        tables["shard_members"] = frames["shard_members"]
    manifest = frames.get("manifest")
    if manifest is None:
        return tables
    tables["manifest"] = manifest_frame(manifest)
    tables["manifest_boxes"] = manifest_boxes_frame(manifest)
    tables["manifest_users"] = manifest_users_frame(manifest)
    if "links" in frames:
        tables["links"] = links_frame(frames["links"], manifest)
    if "shard_members" in frames:
        tables["shard_check"] = shard_check_frame(manifest, frames["shard_members"])
        tables["shard_keys"] = shard_keys_frame(manifest, frames["shard_members"])
    return tables
