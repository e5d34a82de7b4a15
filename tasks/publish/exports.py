"""Release exports: the HaGRID annotation files, COCO instances and YOLO labels of a split,
and two folder layouts written out of a release's shards: HaGRID's and Ultralytics' YOLO.

The three format builders are pure functions of one split's manifest (``MANIFEST`` rows as a
DataFrame, e.g. ``pq.read_table(...).to_pandas()``); ``export_layout`` and ``export_yolo``
are the only I/O here.

Decisions:

- JSON is canonical (``json_bytes``): sorted keys, compact separators, UTF-8 without
  escaping, one trailing newline, floats as Python's shortest round-tripping repr; NaN and
  infinities are refused. Same data, same bytes, whatever the order it was built in.
- ``hagrid_annotations`` returns a file only for gestures that have images in the split,
  as the published dataset does; the HaGRID loaders skip a gesture whose file is absent.
  Entries are keyed by image_id, images in image_id order (``hagrid_entry``). Every entry
  has the v1 fields (``bboxes``, ``labels``, ``leading_hand``, ``leading_conf``, ``user_id``;
  ``leading_hand`` and ``leading_conf`` are null when the leading hand is unknown, as for
  an imported v2 image) and v2's ``united_bbox`` / ``united_label``, which HaGRID's current
  detector and converters read from every entry. As in the published v2 files and as
  HaGRID's converters (gestures mode) read them: null for a one-handed gesture (the hand
  boxes are the targets), and for a two-handed gesture (``Taxonomy.two_handed``) one box
  around every box labelled with the gesture, ``[[x, y, w, h]]``, with ``[gesture]``.
  (HaGRID's master ``DetectionDataset`` indexes ``united_bbox`` per box and fails on
  HaGRID's own null; forks patch it to fall back to ``bboxes`` on null, as the converters
  do.) An image imported with v2 fields (``extras_json``) keeps the source's
  ``united_bbox`` / ``united_label`` while its boxes are the imported ones (method
  ``import...``), and its ``hand_landmarks`` / ``landmarks`` / ``meta`` always; non-finite
  numbers in them become null (JSON has none).
- COCO: images numbered 1.. in image_id order, annotations 1.. in image then box order,
  categories 1.. in the given order (category id = class index + 1, COCO's convention; HaGRID's
  own converter numbers from 0), supercategory ``hand``. ``file_name`` is the image's path in
  the exported HaGRID layout (``<gesture>/<image_id>.jpg``). Boxes in pixels of the oriented
  image; ``segmentation`` is the box as a polygon (as HaGRID's own COCO converter writes it),
  so tools that expect one find it. Images also carry the release fields
  ``release_image_id``, ``gesture``, ``user_id``, ``leading_hand``, ``leading_conf``; COCO
  readers ignore unknown fields. A box label missing from ``categories`` raises.
- YOLO: class = 0-based position in ``categories``; centre x/y and size, relative, 6
  decimals; an image without boxes gets an empty text (a background image).
- ``export_layout`` refuses an output folder inside a release or a dataset root's
  ``releases/`` (``check_export_target``), and checks every name of a manifest before writing
  anything (image_id against ``KEY_PATTERN``, gesture and split plain names, a known format);
  names come only from those columns. Every refusal, and an unreadable manifest or shard,
  raises ``ExportError``. Images are read one at a time by byte range, in shard order, checked
  against the manifest's sha256 and written atomically; an image file already there with
  the manifest's size is skipped (only the size is compared). Annotation files are copied
  as published and left alone when identical.
- Exported images are JPEGs named ``<image_id>.jpg`` whatever the published format, since
  HaGRID's loaders add ``.jpg`` to the key: PNG and WebP bytes are decoded and encoded again
  (``layout_jpeg``: quality 95, 4:4:4, the ICC profile kept and no other metadata; RGB, the
  ``convert("RGB")`` a loader would make). Such a file is rewritten only when its bytes
  differ. The shards keep the published bytes.
- ``export_yolo`` writes ``images/<split>/<image_id>.jpg`` beside ``labels/<split>/<image_id>.txt``
  and ``data.yaml`` (``path``, ``train``, ``val``, ``test``, ``nc``, ``names``), which
  Ultralytics-style trainers read as is. Classes are the release's (``release_classes``).
  Ultralytics needs a ``val`` split: a release without one validates on ``test``.
  Labels are per hand (HaGRID's ``hands`` mode, with gesture labels).
"""

from __future__ import annotations

import functools
import gc
import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

from schemas.release import (
    CHECKSUMS,
    HAGRID,
    KEY_PATTERN,
    LICENCE,
    MANIFEST,
    MANIFESTS,
    RELEASE_INFO,
    RELEASES,
)
from schemas.taxonomy import DEFAULT_TAXONOMY, load_taxonomy
from tasks.publish.published_image import JPEG_QUALITY
from tasks.storage import LocalStorage, Storage, safe_key

FORMAT_EXTENSIONS: Mapping[str, str] = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
SUPERCATEGORY = "hand"
ANNOTATIONS_DIR = "annotations"  # under an exported layout: annotations/<split>/<gesture>.json
CATALOG_DIR = "catalog"  # a dataset root's catalog folder: ROOT/catalog, ROOT/releases
DEFAULT_INFO: Mapping[str, object] = {"description": "HaGRID-style hand gesture dataset"}
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # fullmatch; no '/', '.', '..'
LAYOUT_EXTENSION = "jpg"  # every exported image: HaGRID's loaders add .jpg to the key
IMPORT_METHOD_PREFIX = "import"  # annotation_method of boxes taken from an imported source
EXTRA_FIELDS = ("hand_landmarks", "landmarks", "meta")  # copied from extras when present
YOLO_DATA = "data.yaml"

_BOXES_TYPE = MANIFEST.field("boxes").type
_LABELS_TYPE = MANIFEST.field("labels").type
_PLACE_COLUMNS = ["image_id", "split", "gesture", "format", "sha256", "shard", "offset", "size"]
_YOLO_COLUMNS = [*_PLACE_COLUMNS, "width", "height", "user_id", "boxes", "labels",
                 "leading_hand", "leading_conf", "annotation_method"]  # every release has them


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _gc_paused(build: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``build`` with the cyclic GC paused: it makes ~10^6 acyclic containers for a
    100k-image split, and the collections they trigger would take 3/4 of the time."""

    @functools.wraps(build)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return build(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return run


class ExportError(ValueError):
    """A release that cannot be exported as is: a hostile name, a checksum mismatch."""


@_gc_paused
def json_bytes(obj: object) -> bytes:
    """Canonical JSON: sorted keys, compact, UTF-8, trailing newline; NaN raises ValueError."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return (text + "\n").encode("utf-8")


# ---- one split's manifest as plain Python rows ------------------------------------------

class _Row(NamedTuple):  # field names are the MANIFEST column names
    image_id: str
    gesture: str
    width: int
    height: int
    format: str
    user_id: str
    boxes: list[list[float]]
    labels: list[str]
    leading_hand: str | None
    leading_conf: float | None
    annotation_method: str
    extras_json: str | None


def _plain_column(column: pd.Series, type_: pa.DataType) -> list[Any]:
    """A list column (numpy arrays of arrays after ``to_pandas``, or lists) as Python lists."""
    try:
        return pa.array(column, type=type_).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):  # e.g. 2-D numpy arrays
        return pa.array([_plain(v) for v in column], type=type_).to_pylist()


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _optional(column: pd.Series | None, size: int, cast: Callable[[Any], Any]) -> list[Any]:
    """A nullable column as Python values, None for null or NaN (a missing column: all None)."""
    if column is None:
        return [None] * size
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else cast(v)
            for v in column]


def _rows(manifest: pd.DataFrame) -> list[_Row]:
    """The manifest's images in image_id order; ValueError on two splits or a repeated id."""
    if "split" in manifest.columns and manifest["split"].nunique() > 1:
        raise ValueError(f"one split at a time: {sorted(manifest['split'].unique())}")
    ordered = manifest.sort_values("image_id", kind="stable")
    if ordered["image_id"].duplicated().any():
        dup = ordered.loc[ordered["image_id"].duplicated(), "image_id"].iloc[0]
        raise ValueError(f"image_id {dup!r} appears twice in the manifest")
    columns = (
        ordered["image_id"].astype(str).tolist(), ordered["gesture"].astype(str).tolist(),
        ordered["width"].astype(int).tolist(), ordered["height"].astype(int).tolist(),
        ordered["format"].astype(str).tolist(), ordered["user_id"].astype(str).tolist(),
        _plain_column(ordered["boxes"], _BOXES_TYPE),
        _plain_column(ordered["labels"], _LABELS_TYPE),
        _optional(ordered["leading_hand"], len(ordered), str),
        _optional(ordered["leading_conf"], len(ordered), float),
        ordered["annotation_method"].astype(str).tolist(),
        _optional(ordered.get("extras_json"), len(ordered), str),
    )
    rows = [_Row._make(values) for values in zip(*columns, strict=True)]
    for row in rows:
        if row.boxes is None or row.labels is None:
            raise ValueError(f"{row.image_id}: boxes or labels missing")
        if len(row.boxes) != len(row.labels):
            raise ValueError(f"{row.image_id}: {len(row.boxes)} boxes, {len(row.labels)} labels")
    return rows


def _extension(fmt: str) -> str:
    try:
        return FORMAT_EXTENSIONS[fmt]
    except KeyError:
        known = sorted(FORMAT_EXTENSIONS)
        raise ExportError(f"unknown image format {fmt!r}; known: {known}") from None


def _category_ids(categories: Sequence[str]) -> dict[str, int]:
    """Category name -> 0-based position; a repeated name raises ValueError."""
    index = {name: i for i, name in enumerate(categories)}
    if len(index) != len(categories):
        raise ValueError(f"categories repeat a name: {list(categories)}")
    return index


def _category(index: Mapping[str, int], label: str, image_id: str) -> int:
    if label not in index:
        raise ValueError(f"{image_id}: box label {label!r} is not among the categories")
    return index[label]


# ---- the three formats ------------------------------------------------------------------

def united_box(boxes: Sequence[Sequence[float]], labels: Sequence[str], *, gesture: str,
               two_handed: Collection[str]) -> tuple[list[list[float]] | None, list[str] | None]:
    """HaGRID v2's ``(united_bbox, united_label)`` of an image of ``gesture``.

    A two-handed gesture: ``[[x, y, w, h]]``, the smallest box around every box labelled
    ``gesture``, and ``[gesture]``. A one-handed gesture, or none of the boxes labelled with
    it: ``(None, None)``, as HaGRID publishes them.
    """
    hands = [box for box, label in zip(boxes, labels, strict=True) if label == gesture]
    if gesture not in two_handed or not hands:
        return None, None
    left, top = min(b[0] for b in hands), min(b[1] for b in hands)
    right, bottom = max(b[0] + b[2] for b in hands), max(b[1] + b[3] for b in hands)
    return [[left, top, right - left, bottom - top]], [gesture]


def parse_extras(text: str | None, *, image_id: str) -> dict[str, Any]:
    """An ``extras_json`` value as a dict (``{}`` for null); NaN and infinities become None.

    Raises ValueError when it is not a JSON object.
    """
    if text is None:
        return {}
    try:
        extras = json.loads(text, parse_constant=lambda _: None)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{image_id}: extras_json is not JSON: {exc}") from None
    if isinstance(extras, dict):
        return extras
    raise ValueError(f"{image_id}: extras_json is not a JSON object")


def hagrid_entry(row: Mapping[str, Any], *, two_handed: Collection[str]) -> dict[str, object]:
    """The HaGRID annotation entry of one manifest row (a mapping of MANIFEST columns with
    plain Python values): the v1 fields, ``united_bbox`` / ``united_label``, and the imported
    ``hand_landmarks`` / ``landmarks`` / ``meta`` that the row's ``extras_json`` holds."""
    entry: dict[str, object] = {
        "bboxes": row["boxes"], "labels": row["labels"], "leading_hand": row["leading_hand"],
        "leading_conf": row["leading_conf"], "user_id": row["user_id"]}
    extras = parse_extras(row.get("extras_json"), image_id=str(row.get("image_id")))
    imported = str(row["annotation_method"]).startswith(IMPORT_METHOD_PREFIX)
    if imported and "united_bbox" in extras:
        entry["united_bbox"] = extras["united_bbox"]
        entry["united_label"] = extras.get("united_label")
    else:
        entry["united_bbox"], entry["united_label"] = united_box(
            row["boxes"], row["labels"], gesture=row["gesture"], two_handed=two_handed)
    entry.update({key: extras[key] for key in EXTRA_FIELDS if key in extras})
    return entry


@_gc_paused
def hagrid_annotations(manifest: pd.DataFrame, *, two_handed: Collection[str]
                       ) -> dict[str, dict[str, dict[str, object]]]:
    """One split's manifest as HaGRID annotation files: gesture -> {image_id: entry}.

    ``two_handed``: the taxonomy's two-handed gestures (``hagrid_entry``). Only gestures with
    images in the split get a file. Gestures and image ids come sorted; every value is a plain
    Python value, ready for ``json_bytes``.
    """
    files: dict[str, dict[str, dict[str, object]]] = {}
    for row in _rows(manifest):
        files.setdefault(row.gesture, {})[row.image_id] = hagrid_entry(
            row._asdict(), two_handed=two_handed)
    for gesture in files:
        _check_plain("gesture", gesture)
    return {gesture: files[gesture] for gesture in sorted(files)}


@_gc_paused
def coco_instances(manifest: pd.DataFrame, *, categories: Sequence[str],
                   info: Mapping[str, object] | None = None,
                   licence: str = LICENCE) -> dict[str, object]:
    """One split's manifest as COCO instances, boxes in pixels of the oriented image.

    ``categories``: every box label, in category-id order (ids from 1). Deterministic:
    images by image_id, annotations by image then box order. An unknown label raises.
    """
    index = _category_ids(categories)
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for number, row in enumerate(_rows(manifest), start=1):
        images.append({
            "id": number, "file_name": f"{row.gesture}/{row.image_id}.{LAYOUT_EXTENSION}",
            "width": row.width, "height": row.height, "license": 1,
            "release_image_id": row.image_id, "gesture": row.gesture, "user_id": row.user_id,
            "leading_hand": row.leading_hand, "leading_conf": row.leading_conf,
        })
        for box, label in zip(row.boxes, row.labels, strict=True):
            category = _category(index, label, row.image_id) + 1
            annotations.append(_coco_annotation(len(annotations) + 1, number, category, box,
                                                width=row.width, height=row.height))
    return {
        "info": dict(DEFAULT_INFO if info is None else info),
        "licenses": [{"id": 1, "name": licence}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": SUPERCATEGORY}
                       for name, i in index.items()],
    }


def _coco_annotation(number: int, image: int, category: int, box: Sequence[float], *,
                     width: int, height: int) -> dict[str, object]:
    x, y, w, h = box
    left, top, box_w, box_h = x * width, y * height, w * width, h * height
    right, bottom = left + box_w, top + box_h
    return {
        "id": number, "image_id": image, "category_id": category,
        "bbox": [left, top, box_w, box_h], "area": box_w * box_h, "iscrowd": 0,
        "segmentation": [[left, top, right, top, right, bottom, left, bottom]],
    }


@_gc_paused
def yolo_labels(manifest: pd.DataFrame, *, categories: Sequence[str]) -> dict[str, str]:
    """image_id -> YOLO label text: ``class cx cy w h`` per box, relative, 6 decimals.

    ``class`` is the label's 0-based position in ``categories``; an unknown label raises.
    An image without boxes gets an empty text.
    """
    index = _category_ids(categories)
    texts: dict[str, str] = {}
    for row in _rows(manifest):
        lines = []
        for (x, y, w, h), label in zip(row.boxes, row.labels, strict=True):
            cls = _category(index, label, row.image_id)
            lines.append(f"{cls} {x + w / 2:.6f} {y + h / 2:.6f} {w:.6f} {h:.6f}\n")
        texts[row.image_id] = "".join(lines)
    return texts


# ---- the exported folder layouts --------------------------------------------------------

class _Place(NamedTuple):
    key: str  # <folder>/<image_id>.jpg under the export root
    shard: str
    offset: int
    size: int
    sha256: str
    convert: bool  # published in another format than JPEG: encoded again as one


def _check_plain(kind: str, name: str) -> str:
    if not PLAIN_NAME.fullmatch(name) or name == ANNOTATIONS_DIR:
        raise ExportError(f"{kind} {name!r} is not a plain name ({PLAIN_NAME.pattern}) "
                          f"or is the reserved {ANNOTATIONS_DIR!r}")
    return name


def _check_shard(shard: object) -> None:
    try:
        if not isinstance(shard, str) or safe_key(shard) != shard:
            raise ValueError("not a normalised relative key")
    except ValueError as exc:
        raise ExportError(f"shard {shard!r} is not a key of the release: {exc}") from None


def _image_places(table: pa.Table, *, split: str, folder: str | None = None) -> list[_Place]:
    """Where every image of a manifest goes, every name checked; sorted in shard order.

    ``folder``: the folder of every image (default: its gesture's).
    """
    cols = {name: table.column(name).to_pylist() for name in _PLACE_COLUMNS}
    for shard in set(cols["shard"]):
        _check_shard(shard)
    places = []
    for image_id, row_split, gesture, fmt, sha, shard, offset, size in zip(
            *(cols[name] for name in _PLACE_COLUMNS), strict=True):
        if not isinstance(image_id, str) or not KEY_PATTERN.fullmatch(image_id):
            raise ExportError(f"image_id {image_id!r} does not match {KEY_PATTERN.pattern}")
        if row_split != split:
            raise ExportError(f"{image_id}: split {row_split!r} in manifest of {split!r}")
        where = _check_plain("gesture", str(gesture)) if folder is None else folder
        convert = _extension(str(fmt)) != LAYOUT_EXTENSION
        places.append(_Place(f"{where}/{image_id}.{LAYOUT_EXTENSION}", str(shard), int(offset),
                             int(size), str(sha), convert))
    return sorted(places, key=lambda p: (p.shard, p.offset, p.key))


def _check_inside(out: LocalStorage, folder: str, checked: set[str]) -> None:
    """Refuse a folder of the export root that resolves elsewhere (a symlink out)."""
    if folder in checked:
        return
    resolved = (out.path / folder).resolve()
    if not resolved.is_relative_to(out.path):
        raise ExportError(f"{out.path / folder} resolves outside the export root: {resolved}")
    checked.add(folder)


def check_export_target(release: Storage, out: Path) -> None:
    """Refuse an export folder inside a release, or inside a dataset root's ``releases/``.

    A release is immutable: files added to one would go unnoticed, since its ``SHA256SUMS``
    still passes. A release is a folder holding ``SHA256SUMS`` and ``release.json``; a
    dataset root is a folder holding ``catalog/``. Symlinks in ``out`` are resolved first.
    """
    target = out.expanduser().resolve()
    if isinstance(release, LocalStorage) and target.is_relative_to(release.path):
        raise ExportError(f"{out} is inside the release being exported ({release.path})")
    for folder in (target, *target.parents):
        if (folder / CHECKSUMS).is_file() and (folder / RELEASE_INFO).is_file():
            raise ExportError(f"{out} is inside the release {folder}; releases are immutable")
        if folder.name == RELEASES and (folder.parent / CATALOG_DIR).is_dir():
            raise ExportError(f"{out} is inside {folder}, the releases of a dataset root")


def layout_jpeg(data: bytes) -> bytes:
    """The JPEG an export holds for published PNG or WebP bytes: the pixels as a loader's
    ``convert("RGB")`` sees them (greyscale stays greyscale), quality 95, 4:4:4 chroma, the
    ICC profile kept and no other metadata. Same bytes and Pillow, same result."""
    with Image.open(io.BytesIO(data)) as image:
        icc = image.info.get("icc_profile")
        pixels = image.convert("L" if image.mode in ("1", "L") else "RGB")
    pixels.info = {}  # the encoder would copy some entries (a comment) on its own
    options: dict[str, Any] = {"quality": JPEG_QUALITY, "subsampling": 0}
    if icc:
        options["icc_profile"] = icc
    out = io.BytesIO()
    pixels.save(out, "JPEG", **options)
    return out.getvalue()


def _write_if_changed(out: LocalStorage, key: str, data: bytes) -> bool:
    """Write ``data`` at ``key`` (True), or leave a file with these bytes alone (False)."""
    existing = out.path / key
    if existing.is_file() and existing.read_bytes() == data:
        return False
    out.write_bytes(key, data, durable=False)
    return True


def _export_image(release: Storage, out: LocalStorage, place: _Place,
                  checked: set[str]) -> bool:
    """Write one image (True), or leave one already there (False): a JPEG as published
    when a file of its size is there, a converted image when the same bytes are."""
    _check_inside(out, place.key.rsplit("/", 1)[0], checked)
    target = out.path / place.key
    if not place.convert and target.is_file() and target.stat().st_size == place.size:
        return False
    try:
        data = release.read_range(place.shard, place.offset, place.size)
    except (OSError, EOFError) as exc:  # a missing or truncated shard
        raise ExportError(f"{place.key}: cannot read {place.shard}@{place.offset}: "
                          f"{exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != place.sha256:
        raise ExportError(f"{place.key}: sha256 {digest} of {place.shard}@{place.offset} "
                          f"is not the manifest's {place.sha256}")
    if not place.convert:
        out.write_bytes(place.key, data, durable=False)
        return True
    try:
        return _write_if_changed(out, place.key, layout_jpeg(data))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ExportError(f"{place.key}: cannot encode the published image as JPEG: "
                          f"{exc}") from None


def _export_images(release: Storage, out: LocalStorage, places: Sequence[_Place],
                   checked: set[str], counts: dict[str, int]) -> None:
    for place in places:
        counts["images"] += 1
        counts["images_converted"] += place.convert
        counts["images_written"] += _export_image(release, out, place, checked)


def _annotation_files(release: Storage, split: str) -> Iterator[tuple[str, str]]:
    """(release key, export key) of every published annotation file of a split."""
    prefix = f"{HAGRID}/{split}/"
    for key in release.list(prefix):
        name = key.removeprefix(prefix)
        if not name.endswith(".json"):
            raise ExportError(f"unexpected file in the release: {key}")
        gesture = _check_plain("gesture", name.removesuffix(".json"))
        yield key, f"{ANNOTATIONS_DIR}/{split}/{gesture}.json"


def _read_manifest(release: Storage, split: str, columns: Sequence[str]) -> pa.Table:
    key = f"{MANIFESTS}/{split}.parquet"
    try:
        table = pq.read_table(io.BytesIO(release.read_bytes(key)), columns=list(columns))
        return table.cast(pa.schema([MANIFEST.field(name) for name in columns]))
    except (OSError, pa.ArrowException) as exc:  # missing, not Parquet, columns missing
        raise ExportError(f"{key} is not a readable manifest: {exc}") from None


def _release_splits(release: Storage) -> list[str]:
    prefix = f"{MANIFESTS}/"
    return sorted(k.removeprefix(prefix).removesuffix(".parquet")
                  for k in release.list(prefix) if k.endswith(".parquet"))


def _export_splits(release: Storage, out: Path, splits: Sequence[str] | None) -> list[str]:
    """The checked split names to export (default every manifest), after the target check."""
    check_export_target(release, out)
    return [_check_plain("split", s)
            for s in (_release_splits(release) if splits is None else splits)]


def export_layout(release: Storage, out: Path, *,
                  splits: Sequence[str] | None = None) -> dict[str, int]:
    """Write the published HaGRID layout of a release under ``out``.

    ``out/<gesture>/<image_id>.jpg`` (the image out of the shards, sha256-checked; JPEG
    bytes as published, other formats encoded as JPEG by ``layout_jpeg``) and
    ``out/annotations/<split>/<gesture>.json`` (the release's ``hagrid/`` files).
    ``splits``: default every manifest of the release. Every name of every split is checked
    before anything is written. Idempotent. Returns the counts ``images``,
    ``images_converted``, ``images_written``, ``annotation_files``,
    ``annotation_files_written``. Raises ``ExportError`` on a hostile name, an unreadable
    manifest or shard, a checksum mismatch, or an ``out`` inside a release
    (``check_export_target``).
    """
    names = _export_splits(release, out, splits)
    places = {split: _image_places(_read_manifest(release, split, _PLACE_COLUMNS), split=split)
              for split in names}
    annotation_files = {split: list(_annotation_files(release, split)) for split in names}
    out.mkdir(parents=True, exist_ok=True)
    target = LocalStorage(out)
    counts = dict.fromkeys(("images", "images_converted", "images_written", "annotation_files",
                            "annotation_files_written"), 0)
    checked: set[str] = set()
    for split in names:
        _export_images(release, target, places[split], checked, counts)
        _check_inside(target, f"{ANNOTATIONS_DIR}/{split}", checked)
        for key, export_key in annotation_files[split]:
            counts["annotation_files"] += 1
            counts["annotation_files_written"] += _write_if_changed(
                target, export_key, release.read_bytes(key))
    target.sync()
    return counts


# ---- the YOLO layout (Ultralytics) ------------------------------------------------------

def release_classes(release: Storage) -> tuple[str, ...]:
    """The release's box labels in class-index order: ``classes`` of its ``release.json``.

    A release made before class orders were recorded used its taxonomy's order (the
    taxonomy in ``release.json``'s settings, else the default taxonomy).
    """
    info: Any = {}
    if release.exists(RELEASE_INFO):
        try:
            info = json.loads(release.read_bytes(RELEASE_INFO))
        except ValueError as exc:
            raise ExportError(f"{RELEASE_INFO} is not JSON: {exc}") from None
    if not isinstance(info, dict):
        raise ExportError(f"{RELEASE_INFO} is not a JSON object")
    names = info.get("classes")
    if names is None:
        settings = info.get("settings")
        taxonomy = settings.get("taxonomy") if isinstance(settings, dict) else None
        return load_taxonomy(str(taxonomy or DEFAULT_TAXONOMY)).box_labels
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names) \
            or len(set(names)) != len(names):
        raise ExportError(f"{RELEASE_INFO}: classes is not a list of distinct names")
    return tuple(names)


def yolo_data_yaml(*, path: Path, splits: Sequence[str], names: Sequence[str]) -> bytes:
    """Ultralytics' dataset file for ``images/<split>`` folders under ``path``.

    ``train`` and ``test`` when exported; ``val`` is the val split, else test, else train
    (Ultralytics refuses a dataset without one). ``names``: index -> class name.
    """
    folders = {s: f"images/{s}" for s in splits}
    val = next((folders[s] for s in ("val", "test", "train") if s in folders), None)
    data: dict[str, object] = {"path": str(path)}
    data.update({k: v for k, v in (("train", folders.get("train")), ("val", val),
                                   ("test", folders.get("test"))) if v is not None})
    data.update({"nc": len(names), "names": dict(enumerate(names))})
    head = "# YOLO dataset (Ultralytics): images/<split>/<id>.jpg, labels/<split>/<id>.txt\n"
    if val is not None and "val" not in folders:
        head += f"# no val split in this export: val is {val}\n"
    return (head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)).encode("utf-8")


def export_yolo(release: Storage, out: Path, *,
                splits: Sequence[str] | None = None) -> dict[str, int]:
    """Write a release as an Ultralytics YOLO dataset under ``out``.

    ``out/images/<split>/<image_id>.jpg`` (as ``export_layout`` writes images),
    ``out/labels/<split>/<image_id>.txt`` (``yolo_labels`` with ``release_classes``) and
    ``out/data.yaml`` (``yolo_data_yaml``). Same checks, refusals and idempotence as
    ``export_layout``. Returns the counts ``images``, ``images_converted``,
    ``images_written``, ``labels``, ``labels_written``.
    """
    names = _export_splits(release, out, splits)
    classes = release_classes(release)
    places, labels = {}, {}
    for split in names:
        table = _read_manifest(release, split, _YOLO_COLUMNS)
        places[split] = _image_places(table, split=split, folder=f"images/{split}")
        try:
            labels[split] = yolo_labels(table.to_pandas(), categories=classes)
        except ValueError as exc:
            raise ExportError(f"{MANIFESTS}/{split}.parquet: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    target = LocalStorage(out)
    counts = dict.fromkeys(("images", "images_converted", "images_written", "labels",
                            "labels_written"), 0)
    checked: set[str] = set()
    for split in names:
        _export_images(release, target, places[split], checked, counts)
        _check_inside(target, f"labels/{split}", checked)
        for image_id, text in sorted(labels[split].items()):
            counts["labels"] += 1
            counts["labels_written"] += _write_if_changed(
                target, f"labels/{split}/{image_id}.txt", text.encode())
    _check_inside(target, YOLO_DATA, checked)
    _write_if_changed(target, YOLO_DATA, yolo_data_yaml(path=target.path, splits=names,
                                                        names=classes))
    target.sync()
    return counts
