"""Shapes of a published release: the manifest schema, the folder layout, the settings.

A release is an immutable folder ``ROOT/releases/<version>/``::

    manifests/<split>.parquet       one row per image (MANIFEST), sorted by image_id
    shards/<split>-<n:06d>.tar      WebDataset tar shards: <key>.<ext> (the image) + <key>.json
    hagrid/<split>/<gesture>.json   the published HaGRID annotation format
    coco/<split>.json               COCO instances, boxes in pixels
    yolo/<split>/<key>.txt          YOLO labels (only with ``PublishSettings.yolo``)
    yolo/classes.txt                their class names, one a line, in class-index order
    crops/manifests/<split>.parquet the crops view (only with ``PublishSettings.crops``): one row
                                    per hand box (CROPS_MANIFEST), sorted by image_id, box_index
    crops/shards/<split>-<n:06d>.tar  its shards: <crop_id>.jpg (the square hand crop) +
                                    <crop_id>.json (the row's fields)
    data_docs/                      Great Expectations Data Docs of the contracts run (their
                                    scripts and styles come from CDNs: online only)
    report/index.html               the quality report with plots
    report/contracts.html           every expectation of the contracts run, pass or fail, with
                                    the observed values: one self-contained page (offline)
    report/contracts.json           the same results, machine-readable
    release.json                    settings, counts and provenance of the release
    README.md                       the data card
    SHA256SUMS                      sha256 of every other file, ``sha256sum -c`` format

Boxes everywhere follow HaGRID: ``[x, y, w, h]`` relative to the width and height of the
ORIENTED image (EXIF orientation applied). The published images are that upright image, with
no metadata (``tasks.publish.published_image``): a plain ``Image.open(...).convert("RGB")``
sees what the boxes describe. ``sha256`` and ``size`` are those of the published bytes,
``source_sha256`` the catalog object's they were made from.
The key of a sample is its image_id (a UUID), never anything taken from raw input.

Class indices (YOLO class, COCO ``category_id - 1``) follow ``class_names``: by default the
order of HaGRID's own configs and converters (``HAGRID_CLASS_ORDER``), so a model trained on
a release speaks HaGRID's indices; ``release.json`` records the names in that order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from schemas.taxonomy import Taxonomy

SPLITS: tuple[str, ...] = ("train", "val", "test")  # every split name a release may hold
# Whole-string patterns: use fullmatch (``$`` would also match before a trailing newline).
KEY_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")

RELEASES = "releases"  # under the dataset root
MANIFESTS = "manifests"
SHARDS = "shards"
HAGRID = "hagrid"
COCO = "coco"
YOLO = "yolo"
DATA_DOCS = "data_docs"
REPORT = "report"
CONTRACTS_PAGE = "contracts.html"  # under REPORT
CONTRACTS_RESULTS = "contracts.json"  # under REPORT
CROPS = "crops"  # the crops view: CROPS/manifests/, CROPS/shards/
RELEASE_INFO = "release.json"
DATA_CARD = "README.md"
CHECKSUMS = "SHA256SUMS"

MANIFEST = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),  # also the sample key in shards
        pa.field("split", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),  # of the image bytes in the shard
        pa.field("source_sha256", pa.string(), nullable=False),  # of the catalog's object
        pa.field("width", pa.int32(), nullable=False),  # oriented
        pa.field("height", pa.int32(), nullable=False),
        pa.field("format", pa.string(), nullable=False),  # JPEG / PNG / WEBP, as published
        pa.field("gesture", pa.string(), nullable=False),  # the assigned, validated class
        pa.field("user_id", pa.string(), nullable=False),  # pseudonymous subject id
        pa.field("boxes", pa.list_(pa.list_(pa.float64(), 4)), nullable=False),  # [x, y, w, h]
        pa.field("labels", pa.list_(pa.string()), nullable=False),  # one per box
        pa.field("box_agreement", pa.list_(pa.float64()), nullable=False),  # one per box
        pa.field("leading_hand", pa.string()),  # left | right; null: unknown (a v2 import)
        pa.field("leading_conf", pa.float64()),  # null when leading_hand is
        pa.field("n_annotators", pa.int16(), nullable=False),
        pa.field("annotation_method", pa.string(), nullable=False),  # median_edges, import...
        pa.field("source_split", pa.string()),  # the split an imported source put it in
        pa.field("extras_json", pa.string()),  # imported v2 fields (united_bbox, meta...), JSON
        pa.field("shard", pa.string(), nullable=False),  # e.g. shards/train-000000.tar
        pa.field("offset", pa.int64(), nullable=False),  # byte offset of the image member data
        pa.field("size", pa.int64(), nullable=False),  # its size in bytes (the published image)
        pa.field("json_offset", pa.int64(), nullable=False),  # the <key>.json member's data
        pa.field("json_size", pa.int64(), nullable=False),
    ]
)

# Manifest columns known before the shards are written (the rest say where the sample sits).
SHARD_COLUMNS: tuple[str, ...] = ("shard", "offset", "size", "json_offset", "json_size")
SAMPLE_COLUMNS: tuple[str, ...] = tuple(n for n in MANIFEST.names if n not in SHARD_COLUMNS)

# The crops view: one row per hand box of the release, a square crop around it
# (``tasks.publish.crops``). ``crop_box`` is the crop window ``[x, y, w, h]`` relative to the
# full (upright) image and may reach past [0, 1] (the padding is black); ``box_in_crop`` is the
# hand box relative to the crop. ``leading_hand`` is the image's, never flipped for a free hand.
CROPS_MANIFEST = pa.schema(
    [
        pa.field("crop_id", pa.string(), nullable=False),  # <image_id>_<box_index>: the key
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("gesture", pa.string(), nullable=False),  # the image's class
        pa.field("box_index", pa.int16(), nullable=False),
        pa.field("label", pa.string(), nullable=False),  # the box's: a gesture or no_gesture
        pa.field("leading_hand", pa.string()),  # the image's; null: unknown
        pa.field("crop_box", pa.list_(pa.float64(), 4), nullable=False),  # [x, y, w, h]
        pa.field("box_in_crop", pa.list_(pa.float64(), 4), nullable=False),  # [x, y, w, h]
        pa.field("width", pa.int32(), nullable=False),  # crop pixels
        pa.field("height", pa.int32(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),  # e.g. crops/shards/train-000000.tar
        pa.field("offset", pa.int64(), nullable=False),  # byte offset of the <crop_id>.jpg data
        pa.field("size", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),  # of that member's bytes
    ]
)

LICENCE = "CC BY-SA 4.0"  # HaGRID's own licence; a campaign sets its own

# Default split fractions per taxonomy: HaGRID v1's 92/8 train/test, v2's 76/9/15
# train/val/test (both by user_id). Other taxonomies get v1's.
DEFAULT_FRACTIONS: Mapping[str, Mapping[str, float]] = {
    "hagrid_v1": {"train": 0.92, "test": 0.08},
    "hagrid_v2": {"train": 0.76, "val": 0.09, "test": 0.15},
}

# Class order of HaGRID's own code: ``targets`` in converters/converter_config.yaml and the
# v1 detector and classifier configs (v1), and in the v2 configs (configs/*.yaml on master).
# A label's index there is its YOLO class and its category id in HaGRID's converters.
HAGRID_CLASS_ORDER: Mapping[str, tuple[str, ...]] = {
    "hagrid_v1": (
        "call", "dislike", "fist", "four", "like", "mute", "ok", "one", "palm", "peace",
        "rock", "stop", "stop_inverted", "three", "two_up", "two_up_inverted", "three2",
        "peace_inverted", "no_gesture"),
    "hagrid_v2": (
        "grabbing", "grip", "holy", "point", "call", "three3", "timeout", "xsign",
        "hand_heart", "hand_heart2", "little_finger", "middle_finger", "take_picture",
        "dislike", "fist", "four", "like", "mute", "ok", "one", "palm", "peace",
        "peace_inverted", "rock", "stop", "stop_inverted", "three", "three2", "two_up",
        "two_up_inverted", "three_gun", "thumb_index", "thumb_index2", "no_gesture"),
}
CLASS_ORDERS: tuple[str, ...] = ("hagrid", "taxonomy")


def class_names(taxonomy: Taxonomy, *, order: str) -> tuple[str, ...]:
    """Every box label of ``taxonomy`` in class-index order.

    ``order="hagrid"``: HaGRID's own order (``HAGRID_CLASS_ORDER``) for ``hagrid_v1`` and
    ``hagrid_v2``; a taxonomy HaGRID has no order for keeps its own. ``order="taxonomy"``:
    ``taxonomy.box_labels``. Raises ValueError for an unknown order, or a taxonomy named like
    a HaGRID one whose labels differ from HaGRID's.
    """
    if order not in CLASS_ORDERS:
        raise ValueError(f"unknown class order {order!r}; use one of {CLASS_ORDERS}")
    hagrid = HAGRID_CLASS_ORDER.get(taxonomy.name)
    if order == "taxonomy" or hagrid is None:
        return taxonomy.box_labels
    if sorted(hagrid) != sorted(taxonomy.box_labels):
        raise ValueError(f"taxonomy {taxonomy.name!r} does not hold HaGRID's labels")
    return hagrid


@dataclass(frozen=True)
class PublishSettings:
    """What a release contains and how it is cut. Same settings + same catalog = same bytes.

    - ``fractions``: target share of images per split; empty (the default) means the
      taxonomy's (``DEFAULT_FRACTIONS``: 92/8 for ``hagrid_v1``, 76/9/15 for ``hagrid_v2``).
      A split with fraction 0 gets no new users and is absent when it ends up empty.
    - ``shard_max_bytes`` / ``shard_max_count``: a shard closes before it would pass either.
    - ``yolo``: also write YOLO labels. ``seed``: tie-breaking of the split assignment.
    - ``taxonomy``: the label vocabulary the contracts check against.
    - ``class_order``: ``hagrid`` (HaGRID's class indices) or ``taxonomy`` (``class_names``).
    - ``crops``: also write the crops view (``CROPS_MANIFEST``): per hand box a square window
      of side ``crop_scale`` x the box's longer side, centred on the box, resized to
      ``crop_size`` px.
    - ``licence``, ``title``: printed in the data card.
    """

    fractions: Mapping[str, float] = field(default_factory=dict)
    shard_max_bytes: int = 1 << 30
    shard_max_count: int = 10_000
    yolo: bool = False
    seed: int = 0
    taxonomy: str = "hagrid_v1"
    class_order: str = "hagrid"
    crops: bool = False
    crop_size: int = 256
    crop_scale: float = 2.0
    licence: str = LICENCE
    title: str = "HaGRID-style hand gesture dataset"

    def __post_init__(self) -> None:
        if not self.fractions:
            default = DEFAULT_FRACTIONS.get(self.taxonomy, DEFAULT_FRACTIONS["hagrid_v1"])
            object.__setattr__(self, "fractions", dict(default))
        if self.class_order not in CLASS_ORDERS:
            raise ValueError(f"unknown class order {self.class_order!r}; use {CLASS_ORDERS}")
        unknown = set(self.fractions) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split names {sorted(unknown)}; use {SPLITS}")
        if any(f < 0 for f in self.fractions.values()):
            raise ValueError("split fractions must be >= 0")
        if abs(sum(self.fractions.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {dict(self.fractions)}")
        if self.shard_max_bytes < 10_240 or self.shard_max_count < 1:
            raise ValueError("shard_max_bytes must be >= 10240 and shard_max_count >= 1")
        if not 8 <= self.crop_size <= 4096 or not 0 < self.crop_scale <= 16:
            raise ValueError("crop_size must be 8-4096 px and crop_scale in (0, 16]")

    def as_dict(self) -> dict[str, object]:
        """The settings as plain JSON values (recorded in release.json)."""
        return {
            "fractions": {k: self.fractions[k] for k in sorted(self.fractions)},
            "shard_max_bytes": self.shard_max_bytes, "shard_max_count": self.shard_max_count,
            "yolo": self.yolo, "seed": self.seed, "taxonomy": self.taxonomy,
            "class_order": self.class_order, "crops": self.crops, "crop_size": self.crop_size,
            "crop_scale": self.crop_scale, "licence": self.licence, "title": self.title,
        }


def check_version(version: str) -> str:
    """Return ``version`` when it is a safe folder name; raise ValueError otherwise."""
    if not VERSION_PATTERN.fullmatch(version) or version in (".", ".."):
        raise ValueError(f"release version must match {VERSION_PATTERN.pattern}: {version!r}")
    return version


def parse_fractions(text: str) -> dict[str, float]:
    """``"train=0.76,val=0.09,test=0.15"`` or ``"76/9/15"`` (train/val/test, or train/test).

    The fractions add up to 1, or to 100 (percentages); anything else is refused
    (ValueError) rather than rescaled: ``50/60`` is a typo, not 45/55."""
    text = text.strip()
    if "=" in text:
        pairs = (part.split("=", 1) for part in text.split(",") if part.strip())
        values = {k.strip(): float(v) for k, v in pairs}
    else:
        nums = [float(p) for p in text.split("/")]
        names = {2: ("train", "test"), 3: ("train", "val", "test")}.get(len(nums))
        if names is None:
            raise ValueError(f"give 2 or 3 fractions (train/test or train/val/test): {text!r}")
        values = dict(zip(names, nums, strict=True))
    if any(v < 0 for v in values.values()):
        raise ValueError(f"fractions cannot be negative: {text!r}")
    total = sum(values.values())
    if abs(total - 100.0) <= 1e-6 * 100:  # percentages
        return {k: v / 100.0 for k, v in values.items()}
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"fractions must add up to 100 (or to 1): {text!r} adds up to "
                         f"{total:g}")
    return values
