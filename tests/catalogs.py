"""Small catalogs made directly (no ingest run): ``images`` rows plus tiny real JPEG objects."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from schemas.annotation import BOXES
from schemas.tables import IMAGES, SUBMISSIONS, VERDICTS
from schemas.taxonomy import load_taxonomy
from tasks.catalog import Catalog, image_id_for, object_key
from tasks.simulation.truth import plant_truth_file
from tasks.storage import LocalStorage, S3Storage, Storage, open_storage


def tiny_jpeg(seed: int) -> bytes:
    """A distinct 96x64 JPEG."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(64, 96, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def make_catalog(root: Path | Storage, *, n: int, seed: int = 0) -> list[str]:
    """A catalog of ``n`` accepted images under ``root``; returns their image ids.

    Their submissions come from a source beside the root (``<root>-planted-<seed>``) whose
    ``truth.jsonl`` plants the crowd's right answers and hands (``plant_truth_file``), so the
    simulated crowd can answer them.
    """
    store = root if not isinstance(root, Path) else LocalStorage(root)
    gestures = load_taxonomy().gestures
    now = dt.datetime.now(dt.UTC)
    rows: list[dict[str, Any]] = []
    subs: list[dict[str, Any]] = []
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
        subs.append(_submission(f"sub-{seed}-{i}", f"seed-{seed}", f"user{i % 7}", sha,
                                "accepted", None, image_id_for(sha), None, now))
    endpoint = store.client.meta.endpoint_url if isinstance(store, S3Storage) else None
    source = open_storage(f"{store.uri}-planted-{seed}", endpoint_url=endpoint)
    plant_truth_file(source, [(s["file"], r["gesture"]) for s, r in zip(subs, rows, strict=True)],
                     seed=seed)
    for sub in subs:
        sub["source"] = source.uri
    Catalog(store).write_batch(f"00000-seed-{seed}", {
        "images": pa.Table.from_pylist(rows, schema=IMAGES),
        "submissions": pa.Table.from_pylist(subs, schema=SUBMISSIONS)}, info={})
    return [r["image_id"] for r in rows]


def make_release_catalog(root: Path | Storage, *, n: int, seed: int = 0, users: int = 40,
                         links: int = 5, batch: str | None = None,
                         user_prefix: str | None = None) -> dict[str, list[str]]:
    """A catalog that has been through every stage, made directly (no crowd run).

    Every 10th image is rejected by validation, every 13th excluded by filtration, every
    17th passing one is left unannotated; the rest get one or two boxes. ``links`` near
    duplicate submissions of other users are recorded against kept images. Returns the
    image ids per outcome: ``released``, ``rejected``, ``excluded``, ``unannotated``.
    Users are ``<user_prefix><n>`` (default prefix ``u<seed>-``): share a prefix across
    batches to give earlier users new images.
    """
    prefix = f"u{seed}-" if user_prefix is None else user_prefix
    store = root if not isinstance(root, Path) else LocalStorage(root)
    gestures = load_taxonomy().gestures
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seed)
    batch = batch or f"{seed:05d}-release"
    rng = np.random.default_rng(seed)
    images: list[dict[str, Any]] = []
    subs: list[dict[str, object]] = []
    verdicts: list[dict[str, object]] = []
    boxes: list[dict[str, object]] = []
    out: dict[str, list[str]] = {"released": [], "rejected": [], "excluded": [],
                                 "unannotated": []}
    for i in range(n):
        data = tiny_jpeg(seed * 100_000 + i)
        sha = hashlib.sha256(data).hexdigest()
        iid, user, gesture = image_id_for(sha), f"{prefix}{rng.integers(users):03d}", \
            gestures[int(rng.integers(len(gestures)))]
        store.write_bytes(object_key(sha, "JPEG"), data, durable=False)
        images.append({
            "image_id": iid, "sha256": sha, "object_key": object_key(sha, "JPEG"),
            "format": "JPEG", "width": 96, "height": 64, "orientation": 1, "bytes": len(data),
            "user_id": user, "gesture": gesture, "submitted_at": None,
            "submission_id": f"sub-{seed}-{i}", "phash": i, "phash_mirror": i,
            "thumb": bytes(1024), "batch_id": batch, "ingested_at": now})
        subs.append(_submission(f"sub-{seed}-{i}", batch, user, sha, "accepted", None, iid,
                                None, now))
        outcome = _stage_outcomes(i, iid, batch, now, verdicts)
        out[outcome].append(iid)
        if outcome == "released":
            boxes += _boxes(iid, gesture, two=i % 3 == 0, batch=batch, now=now)
    for j in range(links):  # a near duplicate by another user, kept image = image j
        kept: dict[str, Any] = images[j * 3]
        subs.append(_submission(f"dup-{seed}-{j}", batch, f"{prefix}{(j * 7 + 1) % users:03d}",
                                None, "rejected", "near_duplicate", None, kept["image_id"], now))
    store.sync()
    Catalog(store).write_batch(batch, {
        "images": pa.Table.from_pylist(images, schema=IMAGES),
        "submissions": pa.Table.from_pylist(subs, schema=SUBMISSIONS),
        "verdicts": pa.Table.from_pylist(verdicts, schema=VERDICTS),
        "boxes": pa.Table.from_pylist(boxes, schema=BOXES)}, info={})
    return out


def _submission(sid: str, batch: str, user: str, sha: str | None, outcome: str,
                reason: str | None, image_id: str | None, duplicate_of: str | None,
                now: dt.datetime) -> dict[str, object]:
    return {"submission_id": sid, "batch_id": batch, "source": "test", "file": f"{sid}.jpg",
            "row_index": 0, "user_id": f"raw-{user}", "user_key": user, "gesture": "like",
            "submitted_at": None, "sha256": sha, "bytes": 1, "outcome": outcome,
            "reason": reason, "detail": None, "image_id": image_id,
            "duplicate_of": duplicate_of, "duplicate_distance": None,
            "duplicate_similarity": None, "ingested_at": now}


def _stage_outcomes(i: int, iid: str, batch: str, now: dt.datetime,
                    verdicts: list[dict[str, object]]) -> str:
    def verdict(stage: str, value: str, reason: str | None = None) -> None:
        verdicts.append({"stage": stage, "image_id": iid, "verdict": value, "reason": reason,
                         "confidence": 0.99, "n_answers": 3, "method": "ds",
                         "batch_id": batch, "decided_at": now})

    if i % 10 == 9:
        verdict("validation", "rejected", "no:wrong_gesture")
        return "rejected"
    verdict("validation", "accepted")
    if i % 13 == 12:
        verdict("filtration", "excluded", "child,text")
        return "excluded"
    verdict("filtration", "clear")
    if i % 17 == 16:
        return "unannotated"
    verdict("annotation", "annotated")
    return "released"


def _boxes(iid: str, gesture: str, *, two: bool, batch: str,
           now: dt.datetime) -> list[dict[str, object]]:
    shapes = [(0.1, 0.2, 0.3, 0.4, gesture)] + ([(0.6, 0.5, 0.2, 0.25, "no_gesture")]
                                                if two else [])
    return [{"image_id": iid, "box_index": k, "x": x, "y": y, "w": w, "h": h, "label": label,
             "label_conf": 1.0, "agreement": 0.9 - 0.1 * k, "n_votes": 3, "n_annotators": 3,
             "leading_hand": "right" if int(iid[0], 16) % 2 else "left",
             "leading_conf": 0.8, "method": "median_edges", "batch_id": batch,
             "decided_at": now} for k, (x, y, w, h, label) in enumerate(shapes)]
