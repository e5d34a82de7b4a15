"""The hands of a split: one row per hand box, where its picture lies and what it is.

Both views of a release become the same table. From the full frames (``MANIFEST``) a row is
a box of an image: the picture is the image's shard member and the box is relative to it.
From the crops view (``CROPS_MANIFEST``) a row is a published crop: the picture is the crop
and the box is ``box_in_crop``. The trainer then cuts the same square around the box from
either picture (``tasks.train.dataset``).

Targets follow HaGRID v1's classifier: the gesture head predicts the box's label (a gesture,
or ``no_gesture`` for a free hand); the leading-hand head predicts right (0) or left (1),
flipped for a free hand's crop (it is the other hand); -1 where the leading hand is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.train import LEADING_HANDS, NO_GESTURE


class LabelError(ValueError):
    """A manifest holds a label outside the release's classes, or an unknown leading hand."""


@dataclass(frozen=True)
class Hands:
    """Hand boxes of one split (numpy columns of equal length, sorted by image)."""

    image: np.ndarray  # int64: index of the row's image, 0..n_images-1, non-decreasing
    shard: np.ndarray  # int32: index into ``shards``
    shards: tuple[str, ...]  # release-relative shard names
    offset: np.ndarray  # int64: byte offset of the picture's data in its shard
    size: np.ndarray  # int64: its length
    box: np.ndarray  # float64 (n, 4): [x, y, w, h] relative to the picture
    label: np.ndarray  # int64: class index of the box's label
    hand: np.ndarray  # int64: leading-hand target of this crop (flipped for a free hand), -1
    gesture_hand: np.ndarray  # bool: the box shows the gesture (its label is not no_gesture)

    def __len__(self) -> int:
        return len(self.image)

    @property
    def n_images(self) -> int:
        """How many images have at least one hand."""
        return int(self.image[-1]) + 1 if len(self.image) else 0

    def image_rows(self) -> np.ndarray:
        """``starts`` such that the rows of image ``i`` are ``starts[i]:starts[i + 1]``."""
        return np.searchsorted(self.image, np.arange(self.n_images + 1), side="left")


def _class_indices(labels: pa.Array, classes: Sequence[str], *, where: str) -> np.ndarray:
    index = pc.index_in(labels, value_set=pa.array(list(classes), pa.string()))
    if index.null_count:
        unknown = sorted(set(pc.filter(labels, pc.is_null(index)).to_pylist()))
        raise LabelError(f"{where}: labels outside the release's classes: {unknown[:5]}")
    return index.to_numpy(zero_copy_only=False).astype(np.int64)


def _leading_targets(hands: pa.Array, *, where: str) -> np.ndarray:
    index = pc.index_in(hands, value_set=pa.array(list(LEADING_HANDS), pa.string()))
    unknown = pc.and_(pc.is_null(index), pc.is_valid(hands))
    if pc.any(unknown).as_py():
        raise LabelError(f"{where}: leading hands other than {LEADING_HANDS}: "
                         f"{sorted(set(pc.filter(hands, unknown).to_pylist()))[:5]}")
    return pc.fill_null(index, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _flip_free_hands(leading: np.ndarray, label: np.ndarray, classes: Sequence[str]
                     ) -> tuple[np.ndarray, np.ndarray]:
    free = label == (classes.index(NO_GESTURE) if NO_GESTURE in classes else -1)
    hand = np.where(free & (leading >= 0), 1 - leading, leading)
    return hand, ~free


def _shard_columns(shards: pa.ChunkedArray) -> tuple[np.ndarray, tuple[str, ...]]:
    encoded = shards.combine_chunks().dictionary_encode()
    return (encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32),
            tuple(encoded.dictionary.to_pylist()))


def hands_from_frames(manifest: pa.Table, *, classes: Sequence[str], where: str) -> Hands:
    """The hands of a full-frame manifest (``MANIFEST`` columns image_id, boxes, labels,
    leading_hand, shard, offset, size), one row per box, images in image_id order."""
    manifest = manifest.sort_by("image_id")
    boxes, labels = manifest["boxes"].combine_chunks(), manifest["labels"].combine_chunks()
    if not pc.all(pc.equal(pc.list_value_length(boxes), pc.list_value_length(labels))).as_py():
        raise LabelError(f"{where}: an image has a different number of boxes and labels")
    parent = pc.list_parent_indices(boxes).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(boxes)
    box = pc.list_flatten(flat).to_numpy(zero_copy_only=False).reshape(-1, 4).astype(np.float64)
    label = _class_indices(pc.list_flatten(labels), classes, where=where)
    leading = _leading_targets(manifest["leading_hand"].combine_chunks(), where=where)[parent]
    hand, gesture_hand = _flip_free_hands(leading, label, classes)
    shard, shards = _shard_columns(manifest["shard"])
    image = np.unique(parent, return_inverse=True)[1].astype(np.int64)  # images without boxes
    offset = manifest["offset"].to_numpy().astype(np.int64)
    size = manifest["size"].to_numpy().astype(np.int64)
    return Hands(image=image, shard=shard[parent], shards=shards, offset=offset[parent],
                 size=size[parent], box=box, label=label, hand=hand, gesture_hand=gesture_hand)


def hands_from_crops(crops: pa.Table, *, classes: Sequence[str], where: str) -> Hands:
    """The hands of a crops-view manifest (``CROPS_MANIFEST`` columns image_id, box_index,
    label, leading_hand, box_in_crop, shard, offset, size), one row per crop."""
    crops = crops.sort_by([("image_id", "ascending"), ("box_index", "ascending")])
    label = _class_indices(crops["label"].combine_chunks(), classes, where=where)
    leading = _leading_targets(crops["leading_hand"].combine_chunks(), where=where)
    hand, gesture_hand = _flip_free_hands(leading, label, classes)
    box = pc.list_flatten(crops["box_in_crop"].combine_chunks()).to_numpy(
        zero_copy_only=False).reshape(-1, 4).astype(np.float64)
    image_ids = crops["image_id"].combine_chunks().dictionary_encode()
    order = np.unique(image_ids.indices.to_numpy(zero_copy_only=False), return_inverse=True)[1]
    shard, shards = _shard_columns(crops["shard"])
    return Hands(image=order.astype(np.int64), shard=shard, shards=shards,
                 offset=crops["offset"].to_numpy().astype(np.int64),
                 size=crops["size"].to_numpy().astype(np.int64), box=box, label=label,
                 hand=hand, gesture_hand=gesture_hand)


def pick_hand(rows: np.ndarray, gesture_hand: np.ndarray, rng: np.random.Generator, *,
              gesture_p: float) -> int:
    """HaGRID's choice of the box to crop from an image's ``rows``: a gesture hand with
    probability ``gesture_p``, otherwise a free hand; whichever kind the image has when it
    lacks the other; uniformly among the boxes of the chosen kind."""
    gesture, free = rows[gesture_hand[rows]], rows[~gesture_hand[rows]]
    draw = rng.random()
    kind = gesture if len(free) == 0 or (len(gesture) and draw < gesture_p) else free
    return int(kind[rng.integers(len(kind))])
