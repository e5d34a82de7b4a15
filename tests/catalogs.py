"""Small catalogs made directly (no ingest run): ``images`` rows plus tiny real JPEG objects."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from schemas.tables import IMAGES
from schemas.taxonomy import load_taxonomy
from tasks.catalog import Catalog, image_id_for, object_key
from tasks.storage import LocalStorage, Storage


def tiny_jpeg(seed: int) -> bytes:
    """A distinct 96x64 JPEG."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(64, 96, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def make_catalog(root: Path | Storage, *, n: int, seed: int = 0) -> list[str]:
    """A catalog of ``n`` accepted images under ``root``; returns their image ids."""
    store = root if not isinstance(root, Path) else LocalStorage(root)
    gestures = load_taxonomy().gestures
    now = dt.datetime.now(dt.UTC)
    rows = []
    for i in range(n):
        data = tiny_jpeg(seed * 100_000 + i)
        sha = hashlib.sha256(data).hexdigest()
        store.write_bytes(object_key(sha, "JPEG"), data)
        rows.append({
            "image_id": image_id_for(sha), "sha256": sha, "object_key": object_key(sha, "JPEG"),
            "format": "JPEG", "width": 96, "height": 64, "orientation": 1, "bytes": len(data),
            "user_id": f"user{i % 7}", "gesture": gestures[i % len(gestures)],
            "submitted_at": None, "submission_id": f"sub-{seed}-{i}", "phash": i,
            "phash_mirror": i, "thumb": bytes(1024), "batch_id": f"seed-{seed}",
            "ingested_at": now})
    Catalog(store).write_batch(f"00000-seed-{seed}",
                               {"images": pa.Table.from_pylist(rows, schema=IMAGES)}, info={})
    return [r["image_id"] for r in rows]
