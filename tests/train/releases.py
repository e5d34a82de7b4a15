"""Tiny release-shaped folders for the trainer's tests, written with the publish code's own
shard writer, manifest schemas and checksums.

The images are separable by construction: each gesture hand is a square of its class's
colour, each free hand a grey one, with a black bar on the side of the hand it is (the
gesture hand's bar on the leading-hand side, the free hand's on the other), over dark noise.
``add_crops_view`` writes the crops view beside the frames as the publish stage lays it out
(``CROPS_MANIFEST``): per box a square of side 2 x the box's longer side, black outside the
image, resized to ``crop_size`` px.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from schemas.release import CROPS_MANIFEST, HAGRID_CLASS_ORDER, MANIFEST
from tasks.publish.exports import json_bytes
from tasks.publish.shards import ShardMember, group_by_shard, plan_shards, write_shard
from tasks.publish.writer import checksums, parquet_bytes
from tasks.train.dataset import crop_window

CLASSES = HAGRID_CLASS_ORDER["hagrid_v1"]
COLOURS = {"call": (230, 40, 40), "dislike": (40, 210, 40), "fist": (40, 60, 230),
           "four": (230, 220, 40)}
GESTURES = tuple(COLOURS)
FREE_HAND = (150, 150, 150)


def _draw_hand(pixels: np.ndarray, box: Sequence[int], colour: tuple[int, int, int],
               side: str) -> None:
    x, y, w, h = box
    pixels[y:y + h, x:x + w] = colour
    bar = max(2, w // 4)
    if side == "left":
        pixels[y:y + h, x:x + bar] = 0
    else:
        pixels[y:y + h, x + w - bar:x + w] = 0


def separable_image(rng: np.random.Generator, *, gesture: str, leading: str, free: bool,
                    width: int, height: int) -> tuple[bytes, list[list[float]], list[str]]:
    """A JPEG with a gesture hand (and a free hand), its relative boxes and labels."""
    pixels = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    side = int(rng.integers(height // 3, height // 2))
    half = width // 2
    gx = int(rng.integers(0, half - side)) + (half if free and rng.random() < 0.5 else 0)
    boxes = [(gx, int(rng.integers(0, height - side)), side, side)]
    _draw_hand(pixels, boxes[0], COLOURS[gesture], leading)
    labels = [gesture]
    if free:
        fx = int(rng.integers(0, half - side)) + (0 if gx >= half else half)
        boxes.append((fx, int(rng.integers(0, height - side)), side, side))
        _draw_hand(pixels, boxes[1], FREE_HAND, "right" if leading == "left" else "left")
        labels.append("no_gesture")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
    rel = [[x / width, y / height, w / width, h / height] for x, y, w, h in boxes]
    return buf.getvalue(), rel, labels


def _samples(split: str, n: int, rng: np.random.Generator, *, width: int,
             height: int) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    rows: list[dict[str, Any]] = []
    images: dict[str, bytes] = {}
    for i in range(n):
        gesture, leading = GESTURES[i % len(GESTURES)], ("right", "left")[(i // 4) % 2]
        data, boxes, labels = separable_image(rng, gesture=gesture, leading=leading,
                                              free=i % 3 != 0, width=width, height=height)
        image_id = str(uuid.UUID(int=int(rng.integers(0, 2**62)) << 64 | i, version=4))
        sha = hashlib.sha256(data).hexdigest()
        images[image_id] = data
        rows.append({
            "image_id": image_id, "split": split, "sha256": sha, "source_sha256": sha,
            "width": width, "height": height, "format": "JPEG", "gesture": gesture,
            "user_id": f"{split}-user{i % 5}", "boxes": boxes, "labels": labels,
            "box_agreement": [1.0] * len(boxes), "leading_hand": leading,
            "leading_conf": 1.0, "n_annotators": 3, "annotation_method": "median_edges",
            "source_split": None, "extras_json": None})
    rows.sort(key=lambda r: str(r["image_id"]))
    return rows, images


def _write_shards(release: Path, split: str, keys: list[str], blobs: dict[str, bytes],
                  metas: dict[str, bytes], *, max_count: int, folder: str = "") -> dict[str, Any]:
    """Plan and write a split's shards; ``{key: ShardMember}``."""
    frame = pd.DataFrame({"key": keys, "ext": "jpg", "size": [len(blobs[k]) for k in keys],
                          "json_size": [len(metas[k]) for k in keys]})
    plan = plan_shards(frame, split=split, max_bytes=1 << 30, max_count=max_count)
    plan = [dataclasses.replace(m, shard=f"{folder}{m.shard}") for m in plan]
    for shard, members in group_by_shard(plan).items():
        write_shard(release / shard, members, image_bytes=lambda m: blobs[m.key],
                    json_bytes=lambda m: metas[m.key])
    return {m.key: m for m in plan}


def make_release(release: Path, *, splits: dict[str, int], seed: int = 0, width: int = 64,
                 height: int = 48, max_count: int = 1000, crops: bool = False,
                 crop_size: int = 64) -> Path:
    """A release folder with ``splits`` (name: images), separable, one shard per split by
    default; with ``crops``, the crops view too. Returns ``release``."""
    rng = np.random.default_rng(seed)
    for split, n in splits.items():
        rows, images = _samples(split, n, rng, width=width, height=height)
        metas = {r["image_id"]: json_bytes({"bboxes": r["boxes"], "labels": r["labels"],
                                            "image_id": r["image_id"]}) for r in rows}
        placed = _write_shards(release, split, [r["image_id"] for r in rows], images, metas,
                               max_count=max_count)
        for r in rows:
            m: ShardMember = placed[r["image_id"]]
            r.update(shard=m.shard, offset=m.offset, size=m.size, json_offset=m.json_offset,
                     json_size=m.json_size)
        write_file(release, f"manifests/{split}.parquet",
                   parquet_bytes(pa.Table.from_pylist(rows, schema=MANIFEST)))
        if crops:
            _write_crops(release, split, rows, images, crop_size=crop_size, max_count=max_count)
    write_file(release, "release.json", json_bytes({"version": release.name,
                                                    "classes": list(CLASSES)}))
    seal(release)
    return release


def write_file(release: Path, key: str, data: bytes) -> None:
    """Write one release file (folders made)."""
    path = release / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def seal(release: Path) -> None:
    """(Re)write SHA256SUMS over every other file of the release."""
    (release / "SHA256SUMS").unlink(missing_ok=True)
    write_file(release, "SHA256SUMS", checksums(release))


def crop_of(image: bytes, box: Sequence[float], *, crop_size: int
            ) -> tuple[bytes, list[float], list[float]]:
    """The crops view's crop of a box: JPEG bytes, crop_box and box_in_crop (relative)."""
    picture = Image.open(io.BytesIO(image)).convert("RGB")
    w, h = picture.size
    x, y, bw, bh = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    left, top, right, _ = crop_window((x, y, bw, bh), scale=2.0)
    side = right - left
    window = picture.crop((round(left), round(top), round(left) + round(side),
                           round(top) + round(side)))
    buf = io.BytesIO()
    window.resize((crop_size, crop_size), Image.Resampling.BILINEAR).save(
        buf, format="JPEG", quality=92)
    crop_box = [left / w, top / h, side / w, side / h]
    in_crop = [(x - left) / side, (y - top) / side, bw / side, bh / side]
    return buf.getvalue(), crop_box, in_crop


def _write_crops(release: Path, split: str, rows: list[dict[str, Any]],
                 images: dict[str, bytes], *, crop_size: int, max_count: int) -> None:
    crops, blobs = [], {}
    for r in rows:
        for index, (box, label) in enumerate(zip(r["boxes"], r["labels"], strict=True)):
            data, crop_box, in_crop = crop_of(images[r["image_id"]], box, crop_size=crop_size)
            crop_id = f"{r['image_id']}_{index}"
            blobs[crop_id] = data
            crops.append({"crop_id": crop_id, "image_id": r["image_id"], "split": split,
                          "user_id": r["user_id"], "gesture": r["gesture"],
                          "box_index": index, "label": label,
                          "leading_hand": r["leading_hand"], "crop_box": crop_box,
                          "box_in_crop": in_crop, "width": crop_size, "height": crop_size,
                          "sha256": hashlib.sha256(data).hexdigest()})
    metas = {c["crop_id"]: json_bytes({k: c[k] for k in ("crop_id", "label")}) for c in crops}
    placed = _write_shards(release, split, [c["crop_id"] for c in crops], blobs, metas,
                           max_count=max_count, folder="crops/")
    for c in crops:
        m = placed[c["crop_id"]]
        c.update(shard=m.shard, offset=m.offset, size=m.size)
    write_file(release, f"crops/manifests/{split}.parquet",
               parquet_bytes(pa.Table.from_pylist(crops, schema=CROPS_MANIFEST)))


def read_manifest(release: Path, split: str, *, crops: bool = False) -> pd.DataFrame:
    """A manifest of the release as a DataFrame."""
    folder = "crops/manifests" if crops else "manifests"
    return pq.read_table(release / folder / f"{split}.parquet").to_pandas()
