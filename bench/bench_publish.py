"""Publishing speed: a synthetic catalog of N small JPEGs through the real ``publish`` flow.

    .venv/bin/python bench/bench_publish.py [--n 100000] [--runs 3] [--workers 2] [--size 96x64]

Builds (once, cached in ``bench/_work/publish-<n>/root``) a catalog in which every image
passed validation and filtration and has one or two boxes, with distinct 96x64 JPEGs of about
10 KB from a few hundred users. Each run publishes a fresh release through the flow and
deletes it afterwards, so every run does the same work. Reported per run: the flow's own
timings for the images (reading each object, sha256 check, making its published bytes:
metadata stripped, or turned upright and re-encoded; spooled only when they differ from the
stored bytes), the manifests (sample table, shard plan, Parquet) and the shards (tar writing
from the stored objects or the spool, the shard's sha256, fsync), the whole flow, and right
after it this disk's sequential write speed: the same number of bytes written in 1 MiB
blocks to one file in the same folder, fsynced. The ratio is shard bytes per second (images
and shards together) over that. Medians of ``--runs``; ``image_kb`` is the catalog's mean
stored image size (``--size 320x240``: about 69 KB, ``960x720``: about 620 KB). ``--exif``: the
catalog's JPEGs carry no EXIF (``none``), or an EXIF block with GPS and Artist (``tagged``:
stripped, not re-encoded, as most phone photos), or that plus orientation 6 (``turned``:
every image decoded, turned and re-encoded, the worst case).
``--checked``: ``drop`` removes the root's record of checked objects
(``tasks.publish.checked_objects``) before every run, so every stored object is read and
checked against its sha256 (a first publish); ``keep`` (the default) publishes once
unmeasured when there is no record, so every measured run finds the objects sealed (any later
publish of the same images).
The objects are read from the page cache (the catalog was just built or read), as they are
after ingest on a machine with enough memory; a cold read is a property of the disk, not of
the shard writer; ``--cold`` drops the objects from the page cache before every run, as for
a root larger than memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import numpy as np
import pyarrow as pa
from PIL import Image

from schemas.annotation import BOXES
from schemas.tables import IMAGES, VERDICTS
from schemas.taxonomy import load_taxonomy
from tasks.catalog import Catalog, image_id_for, object_key
from tasks.storage import LocalStorage


def bench_exif(kind: str) -> bytes:
    """The EXIF block of every bench image: none, GPS + Artist, or those plus orientation 6."""
    if kind == "none":
        return b""
    exif = Image.Exif()
    exif[0x013B] = "raw-worker-id"
    exif.get_ifd(0x8825).update({1: "N", 2: (55.0, 45.0, 21.0)})
    if kind == "turned":
        exif[0x0112] = 6
    return exif.tobytes()


def build_catalog(root: Path, *, n: int, size: tuple[int, int], exif: str = "none",
                  seed: int = 0) -> None:
    """N passing, annotated images with real small JPEG objects (skipped when present)."""
    if (root / "catalog" / "_commits").is_dir():
        return
    store, rng = LocalStorage(root), np.random.default_rng(seed)
    gestures = load_taxonomy().gestures
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    width, height = size
    turned = exif == "turned"
    base = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    images, verdicts, boxes = [], [], []
    for i in range(n):
        pixels = base.copy()
        pixels[i % height, :, :] = rng.integers(0, 255, size=(width, 3), dtype=np.uint8)
        pixels[:8, :8, 0] = i % 251
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=90, exif=bench_exif(exif))
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        iid, gesture = image_id_for(sha), gestures[i % len(gestures)]
        store.write_bytes(object_key(sha, "JPEG"), data, durable=False)
        images.append({"image_id": iid, "sha256": sha, "object_key": object_key(sha, "JPEG"),
                       "format": "JPEG", "width": height if turned else width,
                       "height": width if turned else height, "orientation": 6 if turned else 1,
                       "bytes": len(data), "user_id": f"user{int(rng.integers(n // 15)):06d}",
                       "gesture": gesture, "submitted_at": None, "submission_id": f"s{i}",
                       "phash": i, "phash_mirror": i, "thumb": bytes(16), "batch_id": "b",
                       "ingested_at": now})
        for stage, verdict in (("validation", "accepted"), ("filtration", "clear"),
                               ("annotation", "annotated")):
            verdicts.append({"stage": stage, "image_id": iid, "verdict": verdict,
                             "reason": None, "confidence": 1.0, "n_answers": 3,
                             "method": "ds", "batch_id": "b", "decided_at": now})
        for k in range(1 + i % 2):
            boxes.append({"image_id": iid, "box_index": k, "x": 0.1 + 0.5 * k, "y": 0.2,
                          "w": 0.3, "h": 0.4, "label": gesture if k == 0 else "no_gesture",
                          "label_conf": 1.0, "agreement": 0.9, "n_votes": 3,
                          "n_annotators": 3, "leading_hand": "right", "leading_conf": 1.0,
                          "method": "median_edges", "batch_id": "b", "decided_at": now})
    store.sync()
    Catalog(store).write_batch("00000-bench", {
        "images": pa.Table.from_pylist(images, schema=IMAGES),
        "verdicts": pa.Table.from_pylist(verdicts, schema=VERDICTS),
        "boxes": pa.Table.from_pylist(boxes, schema=BOXES)}, info={})


def sequential_write(folder: Path, nbytes: int) -> float:
    """Seconds to write ``nbytes`` in 1 MiB blocks to one new file, fsynced."""
    block = os.urandom(1 << 20)
    path = folder / "seqwrite.bin"
    start = time.perf_counter()
    with path.open("wb", buffering=0) as fh:
        for _ in range(-(-nbytes // len(block))):
            fh.write(block)
        os.fsync(fh.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return elapsed


def evict_objects(root: Path) -> None:
    """Drop the stored objects from the page cache (``POSIX_FADV_DONTNEED`` on each file: no
    privileges needed, unlike ``/proc/sys/vm/drop_caches``), so the publish reads them from
    the disk."""
    for path in (root / "objects").glob("*/*/*"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def one_run(root: Path, *, run: int, workers: int, checked: str,
            cold: bool = False) -> dict[str, float]:
    """Publish once, measure, delete the release, then time the disk."""
    from flows.publish import publish
    from tasks.publish.checked_objects import CHECKED_OBJECTS

    record = root / CHECKED_OBJECTS
    if checked == "drop":
        record.unlink(missing_ok=True)
    elif not record.exists():
        publish(root=str(root), version="bench-prime", workers=workers)
        shutil.rmtree(root / "releases" / "bench-prime")
    version = f"bench-{run}"
    if cold:
        evict_objects(root)
    start = time.perf_counter()
    summary = publish(root=str(root), version=version, workers=workers)
    total = time.perf_counter() - start
    release = root / "releases" / version
    shard_bytes = sum(p.stat().st_size for p in (release / "shards").glob("*.tar"))
    shutil.rmtree(release)
    seq = sequential_write(root, shard_bytes)
    timings = summary["timings"]
    writing = timings["images_s"] + timings["shards_s"]
    return {"images": summary["images"], "shards": summary["shards"],
            "shard_mb": shard_bytes / 1e6, "images_s": timings["images_s"],
            "manifests_s": timings["manifests_s"], "shards_s": timings["shards_s"],
            "flow_s": total, "shard_mb_s": shard_bytes / 1e6 / writing,
            "disk_mb_s": shard_bytes / 1e6 / seq}


def main() -> None:
    """Build the catalog, publish ``--runs`` times, print and save the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", default="96x64", help="image WxH (noise: ~8 KB at 96x64)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--exif", choices=("none", "tagged", "turned"), default="none")
    parser.add_argument("--work", type=Path, default=BENCH / "_work",
                        help="where the catalog is built (e.g. /dev/shm: no disk bound)")
    parser.add_argument("--checked", choices=("keep", "drop"), default="keep")
    parser.add_argument("--cold", action="store_true",
                        help="drop the objects from the page cache before every run")
    parser.add_argument("--out", type=Path, default=BENCH / "results_publish.md")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    suffix = "" if args.exif == "none" else f"-{args.exif}"
    root = args.work / f"publish-{args.n}-{args.size}{suffix}" / "root"
    start = time.perf_counter()
    build_catalog(root, n=args.n, size=(width, height), exif=args.exif)
    stored = Catalog(LocalStorage(root)).read_table("images").column("bytes").to_numpy()
    print(f"catalog ready in {time.perf_counter() - start:.1f}s", flush=True)
    runs = []
    for run in range(args.runs):
        runs.append({"image_kb": float(stored.mean()) / 1e3,
                     **one_run(root, run=run, workers=args.workers,
                                 checked=args.checked, cold=args.cold)})
        runs[-1]["ratio"] = runs[-1]["shard_mb_s"] / runs[-1]["disk_mb_s"]
        print(json.dumps(runs[-1]), flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    lines = [(f"# Publish benchmark: {args.n} images of {args.size}, {args.runs} runs, "
             f"workers {args.workers}, EXIF {args.exif}, checked objects {args.checked}"
             f"{', objects cold' if args.cold else ''}"),
             "", "| figure | median | runs |", "|---|---|---|"]
    for key in ("images", "image_kb", "shards", "shard_mb", "images_s", "manifests_s", "shards_s", "flow_s",
                "shard_mb_s", "disk_mb_s", "ratio"):
        lines.append(f"| {key} | {med[key]:.3f} | "
                     + ", ".join(f"{r[key]:.3f}" for r in runs) + " |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
