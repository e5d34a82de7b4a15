"""Release exports: the HaGRID annotation files, COCO instances and YOLO labels of a split,
and the published HaGRID folder layout written out of a release's shards.

The three format builders are pure functions of one split's manifest (``MANIFEST`` rows as a
DataFrame, e.g. ``pq.read_table(...).to_pandas()``); ``export_layout`` is the only I/O here.

Decisions:

- JSON is canonical (``json_bytes``): sorted keys, compact separators, UTF-8 without
  escaping, one trailing newline, floats as Python's shortest round-tripping repr; NaN and
  infinities are refused. Same data, same bytes, whatever the order it was built in.
- ``hagrid_annotations`` returns a file only for gestures that have images in the split,
  as the published dataset does; the HaGRID loaders skip a gesture whose file is absent.
  Entries carry the v1 fields only (``bboxes``, ``labels``, ``leading_hand``,
  ``leading_conf``, ``user_id``), keyed by image_id, images in image_id order.
- COCO: images numbered 1.. in image_id order, annotations 1.. in image then box order,
  categories 1.. in the given order, supercategory ``hand``. Boxes in pixels of the oriented
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
"""

from __future__ import annotations

import functools
import gc
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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
from tasks.storage import LocalStorage, Storage, safe_key

FORMAT_EXTENSIONS: Mapping[str, str] = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
SUPERCATEGORY = "hand"
ANNOTATIONS_DIR = "annotations"  # under an exported layout: annotations/<split>/<gesture>.json
CATALOG_DIR = "catalog"  # a dataset root's catalog folder: ROOT/catalog, ROOT/releases
DEFAULT_INFO: Mapping[str, object] = {"description": "HaGRID-style hand gesture dataset"}
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # fullmatch; no '/', '.', '..'

_BOXES_TYPE = MANIFEST.field("boxes").type
_LABELS_TYPE = MANIFEST.field("labels").type
_PLACE_COLUMNS = ["image_id", "split", "gesture", "format", "sha256", "shard", "offset", "size"]


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

class _Row(NamedTuple):
    image_id: str
    gesture: str
    width: int
    height: int
    format: str
    user_id: str
    boxes: list[list[float]]
    labels: list[str]
    leading_hand: str
    leading_conf: float


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
        ordered["leading_hand"].astype(str).tolist(),
        ordered["leading_conf"].astype(float).tolist(),
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

@_gc_paused
def hagrid_annotations(manifest: pd.DataFrame) -> dict[str, dict[str, dict[str, object]]]:
    """One split's manifest as HaGRID annotation files: gesture -> {image_id: v1 entry}.

    Only gestures with images in the split get a file. Gestures and image ids come sorted;
    every value is a plain Python value, ready for ``json_bytes``.
    """
    files: dict[str, dict[str, dict[str, object]]] = {}
    for row in _rows(manifest):
        files.setdefault(row.gesture, {})[row.image_id] = {
            "bboxes": row.boxes, "labels": row.labels, "leading_hand": row.leading_hand,
            "leading_conf": row.leading_conf, "user_id": row.user_id,
        }
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
            "id": number, "file_name": f"{row.gesture}/{row.image_id}.{_extension(row.format)}",
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


# ---- the HaGRID folder layout -----------------------------------------------------------

class _Place(NamedTuple):
    key: str  # <gesture>/<image_id>.<ext> under the export root
    shard: str
    offset: int
    size: int
    sha256: str


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


def _image_places(table: pa.Table, *, split: str) -> list[_Place]:
    """Where every image of a manifest goes, every name checked; sorted in shard order."""
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
        key = f"{_check_plain('gesture', str(gesture))}/{image_id}.{_extension(str(fmt))}"
        places.append(_Place(key, str(shard), int(offset), int(size), str(sha)))
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


def _export_image(release: Storage, out: LocalStorage, place: _Place,
                  checked: set[str]) -> bool:
    """Write one image (True), or leave one already there with the right size (False)."""
    _check_inside(out, place.key.split("/", 1)[0], checked)
    target = out.path / place.key
    if target.is_file() and target.stat().st_size == place.size:
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
    out.write_bytes(place.key, data, durable=False)
    return True


def _annotation_files(release: Storage, split: str) -> Iterator[tuple[str, str]]:
    """(release key, export key) of every published annotation file of a split."""
    prefix = f"{HAGRID}/{split}/"
    for key in release.list(prefix):
        name = key.removeprefix(prefix)
        if not name.endswith(".json"):
            raise ExportError(f"unexpected file in the release: {key}")
        gesture = _check_plain("gesture", name.removesuffix(".json"))
        yield key, f"{ANNOTATIONS_DIR}/{split}/{gesture}.json"


def _copy_file(release: Storage, out: LocalStorage, key: str, export_key: str) -> bool:
    """Copy one file as published (True), or leave an identical copy alone (False)."""
    data = release.read_bytes(key)
    existing = out.path / export_key
    if existing.is_file() and existing.read_bytes() == data:
        return False
    out.write_bytes(export_key, data, durable=False)
    return True


def _read_places(release: Storage, split: str) -> pa.Table:
    key = f"{MANIFESTS}/{split}.parquet"
    try:
        table = pq.read_table(io.BytesIO(release.read_bytes(key)), columns=_PLACE_COLUMNS)
        return table.cast(pa.schema([MANIFEST.field(name) for name in _PLACE_COLUMNS]))
    except (OSError, pa.ArrowException) as exc:  # missing, not Parquet, columns missing
        raise ExportError(f"{key} is not a readable manifest: {exc}") from None


def _release_splits(release: Storage) -> list[str]:
    prefix = f"{MANIFESTS}/"
    return sorted(k.removeprefix(prefix).removesuffix(".parquet")
                  for k in release.list(prefix) if k.endswith(".parquet"))


def export_layout(release: Storage, out: Path, *,
                  splits: Sequence[str] | None = None) -> dict[str, int]:
    """Write the published HaGRID layout of a release under ``out``.

    ``out/<gesture>/<image_id>.<ext>`` (the image bytes out of the shards, sha256-checked)
    and ``out/annotations/<split>/<gesture>.json`` (the release's ``hagrid/`` files).
    ``splits``: default every manifest of the release. Every name of every split is checked
    before anything is written. Idempotent. Returns the counts ``images``,
    ``images_written``, ``annotation_files``, ``annotation_files_written``.
    Raises ``ExportError`` on a hostile name, an unreadable manifest or shard, a checksum
    mismatch, or an ``out`` inside a release (``check_export_target``).
    """
    check_export_target(release, out)
    names = [_check_plain("split", s)
             for s in (_release_splits(release) if splits is None else splits)]
    places = {split: _image_places(_read_places(release, split), split=split)
              for split in names}
    annotation_files = {split: list(_annotation_files(release, split)) for split in names}
    out.mkdir(parents=True, exist_ok=True)
    target = LocalStorage(out)
    counts = dict.fromkeys(
        ("images", "images_written", "annotation_files", "annotation_files_written"), 0)
    checked: set[str] = set()
    for split in names:
        for place in places[split]:
            counts["images"] += 1
            counts["images_written"] += _export_image(release, target, place, checked)
        _check_inside(target, f"{ANNOTATIONS_DIR}/{split}", checked)
        for key, export_key in annotation_files[split]:
            counts["annotation_files"] += 1
            counts["annotation_files_written"] += _copy_file(release, target, key, export_key)
    target.sync()
    return counts
