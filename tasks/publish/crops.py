"""The crops view of a release: every hand box cut once, as a square crop, in its own shards.

Training a hand classifier from full frames spends its time decoding FullHD JPEGs (about
10 ms each); the crops view pays that once, at publish time. For every box of every image
(one ``CROPS_MANIFEST`` row each):

- the window (``crop_windows``): a square of side ``crop_scale`` x the box's longer side in
  pixels, centred on the box, in whole pixels of the published (upright) image;
- the crop (``cut_crop``): that window, black where it leaves the image, resized to
  ``crop_size`` px and encoded as a JPEG at quality 95 (4:2:0);
- ``crop_box``: the window relative to the full image (it may reach past [0, 1]);
  ``box_in_crop``: the hand box relative to the crop. Both are exact, since the window is
  whole pixels.

Crops are cut from the published bytes as the release's shards hold them, so a crop shows
what the full-frame sample shows. The crop shards are written like the image shards
(``tasks.publish.shards``): ``<crop_id>.jpg`` then ``<crop_id>.json`` (the row's fields but
where it sits), fixed headers, rows sorted by image_id and box_index. Pillow gives the same
JPEG bytes for the same pixels and settings, so the same release gives the same crops.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from schemas.release import CROPS, CROPS_MANIFEST, SHARDS, PublishSettings
from tasks.publish.assembly import SplitPlan, write_split_shards
from tasks.publish.remote import RemoteSources, RemoteStaging
from tasks.publish.shards import ShardError, plan_shards
from tasks.publish.writer import JobPool, WrittenShard, check_visible, run_jobs

CROP_QUALITY = 95
CROP_SUBSAMPLING = 2  # Pillow's code for 4:2:0
IMAGES_PER_JOB = 128  # images one process decodes per job (about 1.3 s of FullHD decoding)
LOCATION_COLUMNS = ("shard", "offset", "size", "sha256")  # known once the crops are made
WINDOW_COLUMNS = ("left", "top", "side")  # the crop window in whole pixels of the image


def crop_windows(boxes_px: np.ndarray, *, scale: float) -> np.ndarray:
    """Square windows ``(left, top, side)`` in whole pixels, one per box ``[x, y, w, h]`` in
    pixels (an ``(n, 4)`` array): side ``scale`` x the longer box side (at least 1),
    centred on the box as near as whole pixels allow."""
    boxes_px = np.asarray(boxes_px, dtype=np.float64).reshape(-1, 4)
    side = np.maximum(1.0, np.rint(scale * np.maximum(boxes_px[:, 2], boxes_px[:, 3])))
    left = np.rint(boxes_px[:, 0] + boxes_px[:, 2] / 2 - side / 2)
    top = np.rint(boxes_px[:, 1] + boxes_px[:, 3] / 2 - side / 2)
    return np.stack([left, top, side], axis=1).astype(np.int64)


def crop_rows(manifest: pa.Table, *, scale: float, size: int) -> pd.DataFrame:
    """One row per box of ``manifest`` (``MANIFEST`` rows, in their order, then by box):
    the ``CROPS_MANIFEST`` columns but ``LOCATION_COLUMNS``, the window (``WINDOW_COLUMNS``)
    and the full image (``image_shard``, ``image_offset``, ``image_size``, ``image_width``,
    ``image_height``)."""
    counts = pc.list_value_length(manifest.column("boxes")).to_numpy(zero_copy_only=False)
    image = np.repeat(np.arange(manifest.num_rows), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    flat = pc.list_flatten(pc.list_flatten(manifest.column("boxes")))
    boxes = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float64).reshape(-1, 4)
    width = manifest.column("width").to_numpy().astype(np.float64)[image]
    height = manifest.column("height").to_numpy().astype(np.float64)[image]
    px = boxes * np.stack([width, height, width, height], axis=1)
    windows = crop_windows(px, scale=scale)
    left, top, side = (windows[:, i].astype(np.float64) for i in range(3))
    per_image = manifest.select(["image_id", "split", "user_id", "gesture", "leading_hand",
                                 "shard", "offset", "size"]).to_pandas().iloc[image]
    rows = pd.DataFrame({
        "image_id": per_image["image_id"].to_numpy(),
        "box_index": (np.arange(len(image)) - starts).astype(np.int16),
    })
    rows.insert(0, "crop_id", rows["image_id"] + "_" + rows["box_index"].astype(str))
    for column in ("split", "user_id", "gesture", "leading_hand"):
        rows[column] = per_image[column].to_numpy()
    rows["label"] = pc.list_flatten(manifest.column("labels")).to_numpy(zero_copy_only=False)
    rows["crop_box"] = list(np.stack([left / width, top / height, side / width,
                                      side / height], axis=1))
    rows["box_in_crop"] = list(np.stack([(px[:, 0] - left) / side, (px[:, 1] - top) / side,
                                         px[:, 2] / side, px[:, 3] / side], axis=1))
    rows["width"] = rows["height"] = np.int32(size)
    for i, column in enumerate(WINDOW_COLUMNS):
        rows[column] = windows[:, i]
    for column in ("shard", "offset", "size"):
        rows[f"image_{column}"] = per_image[column].to_numpy()
    rows["image_width"], rows["image_height"] = width.astype(int), height.astype(int)
    return rows


def cut_crop(image: Image.Image, window: Sequence[int], *, size: int) -> Image.Image:
    """The square ``window`` ``(left, top, side)`` of an RGB image (black outside it),
    resized to ``size`` x ``size``."""
    left, top, side = (int(v) for v in window)
    square = image.crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.BILINEAR)


def encode_crop(crop: Image.Image) -> bytes:
    """A crop's JPEG bytes (quality 95, 4:2:0, no metadata)."""
    out = io.BytesIO()
    crop.save(out, "JPEG", quality=CROP_QUALITY, subsampling=CROP_SUBSAMPLING)
    return out.getvalue()


@dataclass(frozen=True)
class CropJob:
    """One process's share of the crops: decode each image once, cut its windows, spool the
    crops back to back into ``spool`` (picklable)."""

    spool: Path
    images: list[tuple[str, int, int, int, int]]  # shard file, offset, size, width, height
    windows: list[list[tuple[int, int, int]]]  # each image's windows, in box order
    size: int
    # staged under the root (a cluster, an S3 root): the shards and ``spool`` are keys there
    remote: RemoteStaging | None = None


def run_crop_job(job: CropJob) -> list[tuple[int, str]]:
    """Spool every crop of the job's images; return (size, sha256) of each, in order.

    With ``job.remote`` the images come by ranged GETs of the staged shards, and the spool
    file is written in this machine's temporary folder, then uploaded to ``job.spool``."""
    if job.remote is None:
        check_visible(job.spool.parent)
        with ExitStack() as stack:
            files: dict[str, BinaryIO] = {}

            def read(index: int) -> bytes | memoryview:
                path, offset, size = job.images[index][:3]
                if path not in files:
                    files[path] = stack.enter_context(open(path, "rb"))
                files[path].seek(offset)
                return files[path].read(size)

            return _cut_crops(job, job.spool, read)
    store = job.remote.storage()
    with (tempfile.TemporaryDirectory(prefix="hagrid-crops-") as tmp,
          RemoteSources(store, [(path, offset) for path, offset, *_ in job.images],
                        sizes=[size for _, _, size, _, _ in job.images]) as sources):
        local = Path(tmp) / job.spool.name
        made = _cut_crops(job, local, sources.read)
        store.put_file(job.spool.as_posix(), local)
    return made


def _cut_crops(job: CropJob, spool: Path, read: Callable[[int], bytes | memoryview]
               ) -> list[tuple[int, str]]:
    """``run_crop_job``'s loop: the crops of ``job``'s images, spooled into ``spool``."""
    made = []
    with spool.open("wb") as out:
        for index, ((path, offset, _, width, height), windows) in enumerate(
                zip(job.images, job.windows, strict=True)):
            with Image.open(io.BytesIO(read(index))) as opened:
                image = opened.convert("RGB")
            if image.size != (width, height):
                raise ShardError(f"{path}@{offset}: decoded {image.size}, manifest says "
                                 f"{(width, height)}")
            for window in windows:
                data = encode_crop(cut_crop(image, window, size=job.size))
                out.write(data)
                made.append((len(data), hashlib.sha256(data).hexdigest()))
    return made


def crop_jobs(rows: pd.DataFrame, staging: Path, spool: Path, *, size: int,
              remote: RemoteStaging | None = None) -> list[CropJob]:
    """Jobs of up to ``IMAGES_PER_JOB`` consecutive images (``rows`` holds each image's
    crops together), their crops in ``rows`` order. With ``remote`` the shards and the
    spool files are keys under the root's staging prefix (``spool``: the folder's name)."""
    if remote is not None:
        staging, spool = Path(remote.prefix), Path(remote.key(spool.as_posix()))
    else:
        spool.mkdir(parents=True, exist_ok=True)
    ids = rows["image_id"].to_numpy()
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, int)
    bounds = np.r_[first, len(ids)].tolist()
    windows = [tuple(w) for w in rows[list(WINDOW_COLUMNS)].to_numpy().tolist()]
    per_image = [windows[a:b] for a, b in pairwise(bounds)]
    heads = rows.iloc[first]
    sources = [(str(staging / shard), int(offset), int(length), int(w), int(h))
               for shard, offset, length, w, h in zip(
                   heads["image_shard"], heads["image_offset"], heads["image_size"],
                   heads["image_width"], heads["image_height"], strict=True)]
    return [CropJob(spool=spool / f"crops-{n:06d}.bin", images=sources[i:i + IMAGES_PER_JOB],
                    windows=per_image[i:i + IMAGES_PER_JOB], size=size, remote=remote)
            for n, i in enumerate(range(0, len(sources), IMAGES_PER_JOB))]


def crop_json(rows: pd.DataFrame) -> list[bytes]:
    """The ``<crop_id>.json`` member of every row: its fields but where it sits."""
    fields = [n for n in CROPS_MANIFEST.names if n not in LOCATION_COLUMNS]
    out = []
    for row in rows[fields].to_dict("records"):
        row["box_index"] = int(row["box_index"])
        row["width"], row["height"] = int(row["width"]), int(row["height"])
        row["crop_box"] = [float(v) for v in row["crop_box"]]
        row["box_in_crop"] = [float(v) for v in row["box_in_crop"]]
        row["leading_hand"] = None if pd.isna(row["leading_hand"]) else row["leading_hand"]
        out.append(json.dumps(row, sort_keys=True, separators=(",", ":"),
                              allow_nan=False).encode() + b"\n")
    return out


def plan_crops(rows: pd.DataFrame, *, split: str, settings: PublishSettings) -> SplitPlan:
    """Plan one split's crop shards from its rows (``crop_rows`` plus ``spool``,
    ``spool_offset``, ``size`` and ``sha256`` of each crop)."""
    members = crop_json(rows)
    keys = rows["crop_id"].tolist()
    plan = plan_shards(pd.DataFrame({"key": keys, "ext": "jpg", "size": rows["size"].to_numpy(),
                                     "json_size": [len(m) for m in members]}),
                       split=split, max_bytes=settings.shard_max_bytes,
                       max_count=settings.shard_max_count, folder=f"{CROPS}/{SHARDS}")
    located = rows.assign(shard=[m.shard for m in plan], offset=[m.offset for m in plan])
    return SplitPlan(split=split, manifest=crops_table(located), plan=plan,
                     json_members=dict(zip(keys, members, strict=True)),
                     sources=dict(zip(keys, zip(rows["spool"], rows["spool_offset"].tolist(),
                                               strict=True), strict=True)))


def crops_table(rows: pd.DataFrame) -> pa.Table:
    """``CROPS_MANIFEST`` rows from a frame that holds its columns."""
    arrays = []
    for field in CROPS_MANIFEST:
        if field.name in ("crop_box", "box_in_crop"):
            flat = np.concatenate([np.zeros(0), *rows[field.name].to_numpy()])
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float64()), 4))
        else:
            values = rows[field.name].astype(object).where(rows[field.name].notna(), None)
            arrays.append(pa.array(values.tolist(), field.type))
    return pa.Table.from_arrays(arrays, schema=CROPS_MANIFEST)


def write_crops(staging: Path, manifests: Mapping[str, pa.Table], *, spool: Path,
                settings: PublishSettings, pool: JobPool | None,
                remote: RemoteStaging | None = None
                ) -> tuple[dict[str, pa.Table], dict[str, WrittenShard]]:
    """Cut every box of the staged release's images (``manifests``: split -> ``MANIFEST``,
    the shards already written under ``staging``, or with ``remote`` under the root's
    staging prefix, ``spool`` then the spool folder's name) and write the crop shards;
    return the crops manifest of each split and crop shard name -> what was written."""
    rows = pd.concat([crop_rows(m, scale=settings.crop_scale, size=settings.crop_size)
                      for m in manifests.values()], ignore_index=True)
    jobs = crop_jobs(rows, staging, spool, size=settings.crop_size, remote=remote)
    spooled = []
    for job, made in zip(jobs, run_jobs(pool, run_crop_job, jobs), strict=True):
        offset = 0
        for length, digest in made:
            spooled.append((str(job.spool), offset, length, digest))
            offset += length
    rows[["spool", "spool_offset", "size", "sha256"]] = pd.DataFrame(spooled, index=rows.index)
    plans = [plan_crops(rows[rows["split"] == split].reset_index(drop=True), split=split,
                        settings=settings) for split in manifests]
    written = write_split_shards(staging, plans, pool=pool, remote=remote)
    return {p.split: p.manifest for p in plans}, written
