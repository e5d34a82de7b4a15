"""Every split of a release as one table of hands, with what the audit needs per row.

``open_release`` checks the release (checksums, manifest schema, the shards of the splits it
trains and evaluates on); the other splits' shards are checked here the same way. The rows
are ``Hands`` (boxes sorted by image_id, then box order) of the chosen view, beside the
image_id and box index of each row and the user and annotation method of each image, taken
from the full-frame manifests (the crops view has no annotation method).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.release import CHECKSUMS, CROPS, CROPS_MANIFEST, MANIFEST, MANIFESTS
from tasks.storage import open_storage
from tasks.train.hands import Hands, LabelError, hands_from_crops, hands_from_frames
from tasks.train.release import (
    ReleaseError,
    check_documents,
    check_shards,
    open_release,
    parse_checksums,
    read_manifest,
)


@dataclass(frozen=True)
class ReleaseHands:
    """The hands of every split of a checked release."""

    uri: str
    version: str
    classes: tuple[str, ...]
    view: str  # full | crops
    splits: tuple[str, ...]
    hands: Hands
    box_index: np.ndarray  # int64 per row: the box's index in its image's ``boxes``
    image_ids: np.ndarray  # str per image (``hands.image`` indexes it)
    user_ids: np.ndarray  # str per image
    methods: np.ndarray  # str per image: the manifest's annotation_method

    def row_image_ids(self) -> np.ndarray:
        """The image_id of every row."""
        return self.image_ids[self.hands.image]


def subset_hands(hands: Hands, images: np.ndarray) -> Hands:
    """The rows of ``images`` (image indices), their images renumbered 0..n-1 in order."""
    chosen = np.unique(np.asarray(images, dtype=np.int64))
    rows = np.isin(hands.image, chosen)
    return Hands(image=np.searchsorted(chosen, hands.image[rows]).astype(np.int64),
                 shard=hands.shard[rows], shards=hands.shards, offset=hands.offset[rows],
                 size=hands.size[rows], box=hands.box[rows], label=hands.label[rows],
                 hand=hands.hand[rows], gesture_hand=hands.gesture_hand[rows])


def _frame_rows(manifest: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(image_id, box index) of each box of a full-frame manifest, in ``hands_from_frames``'s
    row order."""
    manifest = manifest.sort_by("image_id")
    boxes = manifest["boxes"].combine_chunks()
    parent = pc.list_parent_indices(boxes).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = boxes.offsets.to_numpy().astype(np.int64)
    starts = offsets[:-1] - offsets[0]
    ids = np.asarray(manifest["image_id"].to_pylist(), dtype=object)
    return ids[parent], np.arange(len(parent), dtype=np.int64) - starts[parent]


def _crop_rows(crops: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(image_id, box index) of each crop, in ``hands_from_crops``'s row order."""
    crops = crops.sort_by([("image_id", "ascending"), ("box_index", "ascending")])
    return (np.asarray(crops["image_id"].to_pylist(), dtype=object),
            crops["box_index"].to_numpy().astype(np.int64))


def read_release_hands(uri: str, *, view: str = "auto", hash_shards: bool = True,
                       endpoint_url: str | None = None) -> ReleaseHands:
    """Check the release at ``uri`` and read the hands of all its splits from ``view``
    (auto, full or crops). Raises ReleaseError."""
    checked = open_release(uri, view=view, hash_shards=hash_shards, endpoint_url=endpoint_url)
    storage = open_storage(uri, endpoint_url=endpoint_url)
    listed = parse_checksums(storage.read_bytes(CHECKSUMS))
    documents = check_documents(storage, listed)
    frames = {PurePosixPath(k).stem: read_manifest(v, key=k, expected=MANIFEST)
              for k, v in documents.items() if str(PurePosixPath(k).parent) == MANIFESTS}
    splits = tuple(sorted(frames))
    folder = f"{CROPS}/{MANIFESTS}" if checked.view == "crops" else MANIFESTS
    keys = {s: f"{folder}/{s}.parquet" for s in splits}
    if checked.view == "crops":
        missing = [k for k in keys.values() if k not in documents]
        if missing:
            raise ReleaseError(f"the crops view lacks {', '.join(missing)}")
        tables = {s: read_manifest(documents[k], key=k, expected=CROPS_MANIFEST)
                  for s, k in keys.items()}
    else:
        tables = frames
    others = [t for s, t in tables.items() if s not in (checked.train_split, checked.eval_split)]
    check_shards(storage, others, listed, hash_shards=hash_shards)
    return _gather(checked.uri, checked.version, checked.classes, checked.view, splits,
                   pa.concat_tables(tables.values()), pa.concat_tables(frames.values()))


def _gather(uri: str, version: str, classes: tuple[str, ...], view: str,
            splits: tuple[str, ...], table: pa.Table, frames: pa.Table) -> ReleaseHands:
    """The hands of ``table`` (the chosen view's rows) and the images' users and methods."""
    where = f"{uri} ({view} view)"
    try:
        if view == "crops":
            hands = hands_from_crops(table, classes=classes, where=where)
            row_ids, box_index = _crop_rows(table)
        else:
            hands = hands_from_frames(table, classes=classes, where=where)
            row_ids, box_index = _frame_rows(table)
    except LabelError as exc:
        raise ReleaseError(str(exc)) from None
    if not len(hands):
        raise ReleaseError(f"no hand boxes in {uri}")
    image_ids = row_ids[hands.image_rows()[:-1]]
    per_image = dict(zip(frames["image_id"].to_pylist(),
                         zip(frames["user_id"].to_pylist(),
                             frames["annotation_method"].to_pylist(), strict=True),
                         strict=True))
    if any(i not in per_image for i in image_ids):
        raise ReleaseError(f"{where}: crops of images that no manifest lists")
    user_ids = np.asarray([per_image[i][0] for i in image_ids], dtype=object)
    methods = np.asarray([per_image[i][1] for i in image_ids], dtype=object)
    return ReleaseHands(uri=uri, version=version, classes=classes, view=view, splits=splits,
                        hands=hands, box_index=box_index, image_ids=image_ids,
                        user_ids=user_ids, methods=methods)
