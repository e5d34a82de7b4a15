"""Peak memory of ingest against a large catalog (issue 15): catalog load plus one window.

    nice -n 15 .venv/bin/python bench/bench_memory.py \\
        --n 50000,100000,250000,500000,1000000 --variants on,chunked,off --flow-n 100000

Builds (once, under ``bench/_data/memory-<seed>/``) a synthetic catalog of accepted images in
the real layout: batches of ``--batch`` rows written with ``Catalog.write_batch`` (``images``
and ``submissions`` tables, commit markers). Values are random but shaped like the real ones:
clustered 64-bit phashes (``bench_search.phash_like_codes``), smooth random 32x32 grey
thumbnails, random sha256 and the image ids ``image_id_for`` makes of them. A catalog of N
images is the first N/batch batches, hard-linked into ``bench/_work/memory/root-<N>``.

For each variant and N a fresh child process measures, from ``/proc/self/status`` (the
high-water mark is reset between stages through ``/proc/self/clear_refs``, so each stage's
peak is its own; Arrow, numpy and numba allocate outside Python, so RSS and not tracemalloc):

* after imports and a small warm-up (numba kernels compiled, not counted below);
* ``load_known_images(catalog, settings=IngestSettings())``: peak during it, RSS after it;
* ``decide_duplicates`` of one window of ``--window`` new inputs (random, plus ~5% near
  copies and ~1% exact copies of catalog images, so the confirming check runs).

Variants: ``on`` (the default settings, crop path on), ``off`` (crop path off) and
``chunked``: the crop path on, but loaded by ``lean_known_images`` below (the Arrow table
dropped before indexing, centre hashes computed in chunks): a bench-only sketch of a fix.
Runs predicted (from the smaller N) or seen to exceed ``--limit-gib`` are skipped or killed.

``--flow-n``: the ``ingest`` flow end to end (200 generated photos) into an empty root and into
a copy of the N-image root, each in a child process: the flow's own peak against the
load-plus-decide peak measured above. ``--breakdown-n``: the steps of ``load_known_images``
one by one at that N, with the retained bytes of each part of ``KnownImages``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import pyarrow as pa

from schemas.settings import DedupSettings, IngestSettings
from schemas.tables import IMAGES, SUBMISSIONS
from tasks.catalog import Catalog, image_id_for, object_key
from tasks.ingest.dedup import DedupItem, KnownImages, _candidates, decide_duplicates
from tasks.ingest.hash_index import HammingIndex
from tasks.ingest.inspection import THUMB_SIZE, centre_phash_bits, thumbs_array
from tasks.ingest.steps import load_known_images
from tasks.storage import LocalStorage

DATA = ROOT / "bench" / "_data"
WORK = ROOT / "bench" / "_work" / "memory"
GIB = 1 << 30
HAGRID_V1 = 552_992
WINDOW_CODES = 8192  # codes kept aside for new inputs, beyond the catalog's
CENTRE_CHUNK = 16_384  # thumbnails per centre-hash chunk in the chunked variant (~170 MB)
GESTURES = ("call", "dislike", "fist", "four", "like", "mute", "ok", "one", "palm", "peace",
            "peace_inverted", "rock", "stop", "stop_inverted", "three", "three2", "two_up",
            "two_up_inverted")


# ------------------------------------------------------------------------------ memory


def _status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def _reset_peak() -> None:
    """Reset VmHWM (and ru_maxrss) to the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def _rss_of(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# -------------------------------------------------------------------------------- data


def _upsampler(k: int, size: int = THUMB_SIZE) -> np.ndarray:
    """(size, k) linear interpolation matrix from k samples to size pixels."""
    u = np.clip((np.arange(size) + 0.5) * k / size - 0.5, 0, k - 1)
    lo = np.floor(u).astype(int)
    hi = np.minimum(lo + 1, k - 1)
    m = np.zeros((size, k))
    m[np.arange(size), lo] += 1 - (u - lo)
    m[np.arange(size), hi] += u - lo
    return m


_UP4, _UP8 = _upsampler(4), _upsampler(8)


def smooth_thumbs(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 32, 32) uint8: a brightness, coarse 4x4 and 8x8 structure, a little pixel noise."""
    out = np.empty((n, THUMB_SIZE, THUMB_SIZE), np.uint8)
    for s in range(0, n, 8192):
        m = min(8192, n - s)
        img = (128 + rng.normal(0, 20, (m, 1, 1)) + _UP4 @ rng.normal(0, 40, (m, 4, 4)) @ _UP4.T
               + _UP8 @ rng.normal(0, 15, (m, 8, 8)) @ _UP8.T
               + rng.normal(0, 3, (m, THUMB_SIZE, THUMB_SIZE)))
        out[s:s + m] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _hexes(rng: np.random.Generator, n: int, nbytes: int) -> list[str]:
    raw = rng.bytes(nbytes * n)
    return [raw[i * nbytes:(i + 1) * nbytes].hex() for i in range(n)]


def _batch_tables(k: int, codes: np.ndarray, *, seed: int) -> tuple[pa.Table, pa.Table]:
    """The ``images`` and ``submissions`` rows of synthetic batch ``k``."""
    n = codes.shape[0]
    rng = np.random.default_rng([seed, k])
    batch_id = f"synthetic-{k:05d}"
    shas = _hexes(rng, n, 32)
    ids = [image_id_for(s) for s in shas]
    subs = _hexes(rng, n, 16)
    users = [f"{u:032x}" for u in rng.integers(0, 1 << 62, n // 50 + 1).tolist()]
    user_of = [users[i] for i in np.asarray(rng.integers(0, len(users), n)).tolist()]
    gesture = [GESTURES[i] for i in np.asarray(rng.integers(0, len(GESTURES), n)).tolist()]
    nbytes = rng.integers(400_000, 2_500_000, n)
    submitted = [f"2021-0{1 + i % 9}-{1 + i % 28:02d}T12:00:00" for i in range(n)]
    now = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    images = pa.Table.from_pydict({
        "image_id": ids, "sha256": shas, "object_key": [object_key(s, "JPEG") for s in shas],
        "format": ["JPEG"] * n, "width": np.full(n, 1920, np.int32),
        "height": np.full(n, 1080, np.int32), "orientation": np.ones(n, np.int8),
        "bytes": nbytes, "user_id": user_of, "gesture": gesture, "submitted_at": submitted,
        "submission_id": subs, "phash": codes,
        "phash_mirror": rng.integers(0, 1 << 63, n, dtype=np.uint64) * np.uint64(2),
        "thumb": pa.array([t.tobytes() for t in smooth_thumbs(rng, n)], pa.binary()),
        "batch_id": [batch_id] * n, "ingested_at": [now] * n,
    }, schema=IMAGES)
    submissions = pa.Table.from_pydict({
        "submission_id": subs, "batch_id": [batch_id] * n, "source": ["/synthetic"] * n,
        "file": [f"photos/{k:05d}_{i:06d}.jpg" for i in range(n)],
        "row_index": np.arange(k * n, (k + 1) * n), "user_id": [f"worker-{u[:6]}" for u in user_of],
        "user_key": user_of, "gesture": gesture, "submitted_at": submitted, "sha256": shas,
        "bytes": nbytes, "outcome": ["accepted"] * n, "reason": [None] * n, "detail": [None] * n,
        "image_id": ids, "duplicate_of": [None] * n, "duplicate_distance": [None] * n,
        "duplicate_similarity": [None] * n, "ingested_at": [now] * n,
    }, schema=SUBMISSIONS)
    return images, submissions


def ensure_pool(n_max: int, *, batch: int, seed: int, window: int) -> Path:
    """The synthetic catalog's batches (at least ``n_max`` images) and the window file."""
    pool = DATA / f"memory-{seed}"
    meta_path = pool / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta.get("batch") != batch or meta.get("capacity", 0) < n_max:
        shutil.rmtree(pool, ignore_errors=True)
        pool.mkdir(parents=True)
        from bench.bench_search import phash_like_codes

        capacity = max(n_max, 1_000_000)
        capacity = -(-capacity // batch) * batch
        np.save(pool / "codes.npy", phash_like_codes(capacity + WINDOW_CODES, seed=seed))
        meta = {"batch": batch, "capacity": capacity}
        meta_path.write_text(json.dumps(meta))
    codes = np.load(pool / "codes.npy", mmap_mode="r")
    catalog = Catalog(LocalStorage(pool / "root"))
    for k in range(-(-n_max // batch)):
        if not (pool / "root" / "catalog" / "_commits" / f"synthetic-{k:05d}.json").exists():
            started = time.perf_counter()
            images, subs = _batch_tables(k, np.array(codes[k * batch:(k + 1) * batch]),
                                         seed=seed)
            catalog.write_batch(f"synthetic-{k:05d}", {"images": images, "submissions": subs},
                                info={"rows": batch, "accepted": batch})
            print(f"  wrote synthetic batch {k} ({time.perf_counter() - started:.1f} s)",
                  file=sys.stderr)
    window_path = pool / f"window-{window}.npz"
    if not window_path.exists():
        _write_window(window_path, catalog, np.array(codes[meta["capacity"]:]), size=window,
                      seed=seed)
    return pool


def _write_window(path: Path, catalog: Catalog, spare: np.ndarray, *, size: int,
                  seed: int) -> None:
    """``size`` new inputs: random ones, ~5% near copies and ~1% exact copies of batch 0."""
    rng = np.random.default_rng([seed, 1 << 20])
    first = catalog.read_table("images", columns=["sha256", "phash", "thumb"]).slice(0, 10_000)
    kind = rng.choice(3, size, p=[0.94, 0.05, 0.01])
    src = rng.integers(0, first.num_rows, size)
    shas = np.array(_hexes(rng, size, 32))
    phash = spare[:size].copy()
    thumbs = smooth_thumbs(rng, size).reshape(size, -1)
    known_thumbs = thumbs_array(first.column("thumb").to_pylist()).reshape(first.num_rows, -1)
    known_phash = first.column("phash").to_numpy()
    known_sha = np.array(first.column("sha256").to_pylist())
    for i in np.flatnonzero(kind > 0):
        j = src[i]
        phash[i] = known_phash[j]
        thumbs[i] = known_thumbs[j]
        if kind[i] == 1:  # a recompressed, slightly brighter copy: hash moves a few bits
            for bit in rng.choice(64, rng.integers(0, 5), replace=False):
                phash[i] ^= np.uint64(1) << np.uint64(bit)
            noisy = known_thumbs[j] * 1.03 + 4 + rng.normal(0, 2, THUMB_SIZE * THUMB_SIZE)
            thumbs[i] = np.clip(noisy, 0, 255).astype(np.uint8)
        else:
            shas[i] = known_sha[j]
    mirror = rng.integers(0, 1 << 63, size, dtype=np.uint64) * np.uint64(2)
    np.savez(path, sha=shas, phash=phash, mirror=mirror, thumbs=thumbs, kind=kind)


def catalog_root(pool: Path, n: int, *, batch: int, dest: Path) -> Path:
    """A root holding the first n/batch batches of the pool (hard links; copies if needed)."""
    shutil.rmtree(dest, ignore_errors=True)
    src = pool / "root"
    names = [f"synthetic-{k:05d}" for k in range(n // batch)]
    files = [f"catalog/{t}/{b}.parquet" for b in names for t in ("images", "submissions")]
    files += [f"catalog/_commits/{b}.json" for b in names] + ["catalog/_salt"]
    for rel in files:
        if not (src / rel).exists():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src / rel, dest / rel)
        except OSError:
            shutil.copy2(src / rel, dest / rel)
    (dest / "catalog" / "_commits").mkdir(parents=True, exist_ok=True)
    return dest


# ------------------------------------------------------------------------ the variants


def settings_for(variant: str) -> IngestSettings:
    """The ingest settings of a variant (``off``: crop path off; else the defaults)."""
    if variant == "off":
        return IngestSettings(dedup=DedupSettings(crop_path=False))
    return IngestSettings()


def lean_known_images(catalog: Catalog, *, settings: IngestSettings) -> KnownImages:
    """``load_known_images`` with its peak cut (a sketch, bench only): the Arrow table is
    converted column by column and dropped before indexing, and the centre hashes are
    computed in chunks, so no float64 copy of every thumbnail is ever alive."""
    t = catalog.read_table("images", columns=["image_id", "sha256", "phash", "thumb"])
    ids = t.column("image_id").to_pylist()
    by_sha = dict(zip(t.column("sha256").to_pylist(), ids))
    phash = t.column("phash").to_numpy().astype(np.uint64)
    thumbs = t.column("thumb").to_pylist()
    del t
    pa.default_memory_pool().release_unused()
    dedup = settings.dedup
    known = KnownImages(settings=dedup, ids=ids, thumbs=thumbs, by_sha=by_sha, phash=phash,
                        n_base=len(ids))
    known.base_index = HammingIndex(phash, radius=dedup.radius)
    if dedup.crop_path:
        parts = [centre_phash_bits(thumbs_array(thumbs[i:i + CENTRE_CHUNK]))
                 for i in range(0, len(thumbs), CENTRE_CHUNK)]
        known.centre = np.concatenate(parts) if parts else np.empty(0, np.uint64)
        known.base_centre_index = HammingIndex(known.centre, radius=dedup.radius)
    return known


def load_for(variant: str, catalog: Catalog) -> KnownImages:
    """The known images of a variant, loaded as that variant loads them."""
    if variant == "chunked":
        return lean_known_images(catalog, settings=settings_for(variant))
    return load_known_images(catalog, settings=settings_for(variant))


def read_window(path: Path) -> tuple[list[DedupItem], list[str], np.ndarray]:
    """The window's items, the ids they get when accepted, and their kinds."""
    w = np.load(path)
    items = [DedupItem(str(s), int(p), int(m), t.tobytes())
             for s, p, m, t in zip(w["sha"], w["phash"], w["mirror"], w["thumbs"])]
    return items, [image_id_for(i.sha256) for i in items], w["kind"]


def _warm_up(variant: str, items: list[DedupItem]) -> None:
    """Compile the numba kernels (cached on disk after the first run) on a small catalog."""
    rng = np.random.default_rng(0)
    thumbs = [t.tobytes() for t in smooth_thumbs(rng, 5000)]
    codes = rng.integers(0, 1 << 63, 5000, dtype=np.uint64)
    shas = _hexes(rng, 5000, 32)
    known = KnownImages.from_catalog(ids=shas, shas=shas, phash=codes, thumbs=thumbs,
                                     settings=settings_for(variant).dedup)
    decide_duplicates(items[:256], known, new_ids=[f"w{i}" for i in range(256)])


# ------------------------------------------------------------------------ child: stages


def child_stages(root: Path, window: Path, variant: str) -> dict[str, Any]:
    """Measure one variant on one catalog root, stage by stage (run in a fresh process)."""
    rec: dict[str, Any] = {"imports_hwm": _status()["VmHWM"]}
    items, new_ids, kind = read_window(window)
    _warm_up(variant, items)
    rec["base"] = _status()["VmRSS"]
    rec["warm_hwm"] = _status()["VmHWM"]
    catalog = Catalog(LocalStorage(root))
    _reset_peak()
    started, cpu = time.perf_counter(), time.process_time()
    known = load_for(variant, catalog)
    rec["load_s"], rec["load_cpu"] = time.perf_counter() - started, time.process_time() - cpu
    rec["load_peak"], rec["load_rss"] = _status()["VmHWM"], _status()["VmRSS"]
    rec["n"] = known.n_base
    rec["candidates"] = len(_candidates(items, known))  # pairs the confirming check may see
    _reset_peak()
    started, cpu = time.perf_counter(), time.process_time()
    decisions = decide_duplicates(items, known, new_ids=new_ids)
    rec["decide_s"], rec["decide_cpu"] = time.perf_counter() - started, time.process_time() - cpu
    rec["decide_peak"], rec["decide_rss"] = _status()["VmHWM"], _status()["VmRSS"]
    rec["found"] = {k: int(sum(1 for d, x in zip(decisions, kind) if d is not None and x == k))
                    for k in (0, 1, 2)}
    rec["planted"] = {k: int((kind == k).sum()) for k in (0, 1, 2)}
    return rec


def _index_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of every numpy array reachable from ``obj``'s attributes (an index's tables)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(_index_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_index_bytes(v, seen) for v in obj)
    if dataclasses.is_dataclass(obj) or hasattr(obj, "__dict__"):
        fields = vars(obj) if hasattr(obj, "__dict__") else {}
        return sum(_index_bytes(v, seen) for v in fields.values())
    return 0


def child_breakdown(root: Path) -> dict[str, Any]:
    """``load_known_images`` (crop path on) step by step: RSS after, and peak during, each."""
    catalog = Catalog(LocalStorage(root))
    settings = IngestSettings().dedup
    _warm_up("on", _tiny_items())
    steps: list[tuple[str, int, int]] = []

    def mark(name: str) -> None:
        s = _status()
        steps.append((name, s["VmRSS"], s["VmHWM"]))
        _reset_peak()

    mark("after imports and warm-up")
    t = catalog.read_table("images", columns=["image_id", "sha256", "phash", "thumb"])
    mark("read_table (Arrow: 4 columns)")
    ids, shas = t.column("image_id").to_pylist(), t.column("sha256").to_pylist()
    phash = t.column("phash").to_numpy().astype(np.uint64)
    mark("ids, sha256 to_pylist; phash to numpy")
    thumbs = t.column("thumb").to_pylist()
    mark("thumb to_pylist (bytes objects)")
    known = KnownImages(settings=settings, ids=list(ids), thumbs=list(thumbs),
                        by_sha=dict(zip(shas, ids)), phash=np.asarray(phash, np.uint64))
    known.n_base = len(known.ids)
    mark("KnownImages lists and by_sha dict")
    known.base_index = HammingIndex(known.phash, radius=settings.radius)
    mark("HammingIndex over phash")
    joined = thumbs_array(known.thumbs)
    mark("thumbs_array (one joined copy)")
    known.centre = centre_phash_bits(joined)
    del joined
    mark("centre_phash_bits (float64 of every thumbnail)")
    known.base_centre_index = HammingIndex(known.centre, radius=settings.radius)
    mark("HammingIndex over centre hashes")
    del t, ids, shas, phash, thumbs
    pa.default_memory_pool().release_unused()
    mark("Arrow table and its lists dropped (load_known_images returns)")
    n = known.n_base
    parts = {
        "thumbs (list of bytes objects)": sys.getsizeof(known.thumbs)
        + sum(sys.getsizeof(x) for x in known.thumbs),
        "ids (list of str)": sys.getsizeof(known.ids) + sum(sys.getsizeof(x) for x in known.ids),
        "by_sha (dict; its sha256 str keys)": sys.getsizeof(known.by_sha)
        + sum(sys.getsizeof(x) for x in known.by_sha),
        "phash + centre arrays": known.phash.nbytes + known.centre.nbytes,
        "HammingIndex over phash": _index_bytes(known.base_index),
        "HammingIndex over centre hashes": _index_bytes(known.base_centre_index),
    }
    return {"n": n, "steps": steps, "parts": parts}


def _tiny_items() -> list[DedupItem]:
    rng = np.random.default_rng(1)
    return [DedupItem(s, int(p), int(p), t.tobytes()) for s, p, t in
            zip(_hexes(rng, 256, 32), rng.integers(0, 1 << 63, 256, dtype=np.uint64),
                smooth_thumbs(rng, 256))]


def child_flow(root: Path, batch: Path) -> dict[str, Any]:
    """The ``ingest`` flow end to end into ``root``: this process's peak and its children's."""
    from flows.ingest import ingest

    rec: dict[str, Any] = {"imports_hwm": _status()["VmHWM"]}
    started = time.perf_counter()
    summary = ingest(source=str(batch), submissions=str(batch / "submissions.csv"),
                     root=str(root))
    rec["seconds"] = time.perf_counter() - started
    rec["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rec["children_peak"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    rec["accepted"], rec["rejected"] = summary["accepted"], summary["rejected"]
    return rec


# ---------------------------------------------------------------------- parent: runs


@dataclasses.dataclass
class Run:
    """One child's result, or why there is none."""

    variant: str
    n: int
    rec: dict[str, Any] | None
    note: str = ""

    @property
    def peak(self) -> int:
        assert self.rec is not None
        return max(self.rec["load_peak"], self.rec["decide_peak"])


def run_child(args: list[str], *, limit: int) -> tuple[dict[str, Any] | None, str]:
    """Run this script as a child; kill it when its RSS passes ``limit``."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, __file__, *args], stdout=out,
                                stderr=subprocess.STDOUT, text=True)
        high = 0
        while proc.poll() is None:
            high = max(high, _rss_of(proc.pid))
            if high > limit:
                proc.kill()
                proc.wait()
                return None, f"killed at {high / GIB:.2f} GiB (limit {limit / GIB:.1f})"
            time.sleep(0.05)
        out.seek(0)
        text = out.read()
    results = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
        raise RuntimeError(f"child {args} failed ({proc.returncode}):\n{text[-4000:]}")
    return json.loads(results[-1].removeprefix("RESULT ")), ""


def fit(points: list[tuple[int, int]]) -> tuple[float, float]:
    """Least squares ``peak = a + b * n``: (a, b)."""
    x = np.array([p[0] for p in points], float)
    y = np.array([p[1] for p in points], float)
    if len(points) == 1:
        return 0.0, float(y[0] / x[0])
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def _g(b: float) -> str:
    return f"{b / GIB:.2f}"


def measure(pool: Path, ns: list[int], variants: list[str], *, batch: int, window: Path,
            limit: int) -> list[Run]:
    """Every (variant, n) in a fresh child, smallest n first; skip predicted overruns."""
    runs: list[Run] = []
    for n in ns:
        root = catalog_root(pool, n, batch=batch, dest=WORK / f"root-{n}")
        for variant in variants:
            done = [(r.n, r.peak) for r in runs if r.variant == variant and r.rec]
            if done:
                a, b = fit(done) if len(done) > 1 else fit(done[-1:])
                predicted = a + b * n
                if predicted > limit:
                    runs.append(Run(variant, n, None,
                                    f"skipped: predicted {_g(predicted)} GiB"))
                    continue
            rec, note = run_child(["--child", str(root), "--window-file", str(window),
                                   "--variant", variant], limit=limit)
            runs.append(Run(variant, n, rec, note))
            print(f"  {variant} n={n}: "
                  + (f"peak {_g(runs[-1].peak)} GiB" if rec else note), file=sys.stderr)
        shutil.rmtree(root)
    return runs


def report_runs(runs: list[Run]) -> list[str]:
    """The stage table, the fits and the extrapolations, as Markdown lines."""
    lines = [("| variant | catalog images | after imports | load: peak | after load "
             "| decide: peak | after decide | load s (CPU) | decide s (CPU) | hash-radius pairs "
             "| near / exact caught |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        if r.rec is None:
            lines.append(f"| {r.variant} | {r.n:,} | {r.note} | | | | | | | | |")
            continue
        x = r.rec
        lines.append(
            f"| {r.variant} | {r.n:,} | {_g(x['base'])} | **{_g(x['load_peak'])}** "
            f"| {_g(x['load_rss'])} | {_g(x['decide_peak'])} | {_g(x['decide_rss'])} "
            f"| {x['load_s']:.1f} ({x['load_cpu']:.1f}) | {x['decide_s']:.1f} ({x['decide_cpu']:.1f}) "
            f"| {x['candidates']:,} "
            f"| {x['found']['1']}/{x['planted']['1']} / {x['found']['2']}/{x['planted']['2']} |")
    lines += ["", ("GiB (2^30 bytes) of RSS; \"peak\": the high-water mark during that stage "
              "alone; the run's peak is the larger of the two peaks. Hash-radius pairs: "
              "(input, known image) pairs within the radius, all probes, before the "
              "confirming check."), "",
              ("| variant | fit: peak = a + b*N | b per catalog image | retained after decide, per "
              f"image | HaGRID v1 ({HAGRID_V1:,}) | 1M | 5M |"), "|---|---|---:|---:|---:|---:|---:|"]
    for variant in dict.fromkeys(r.variant for r in runs):
        done = [r for r in runs if r.variant == variant and r.rec]
        if len(done) < 2:
            continue
        a, b = fit([(r.n, r.peak) for r in done])
        _, kept = fit([(r.n, r.rec["decide_rss"]) for r in done if r.rec])
        measured = {r.n: r.peak for r in done}
        cells = [(_g(measured[n]) + " (measured)") if n in measured else _g(a + b * n)
                 for n in (HAGRID_V1, 1_000_000, 5_000_000)]
        lines.append(f"| {variant} | {_g(a)} GiB + {b:,.0f} B * N | {b / 1024:.2f} KiB "
                     f"| {kept / 1024:.2f} KiB | " + " | ".join(f"{c} GiB" for c in cells) + " |")
    return lines


def report_breakdown(rec: dict[str, Any]) -> list[str]:
    """The step table of ``child_breakdown``."""
    n = rec["n"]
    lines = [f"Steps of `load_known_images` (crop path on) at N = {n:,}, one by one:", "",
             "| step | RSS after (GiB) | peak during (GiB) | RSS change per image |",
             "|---|---:|---:|---:|"]
    prev = None
    for name, rss, hwm in rec["steps"]:
        delta = "" if prev is None else f"{(rss - prev) / n:+,.0f} B"
        lines.append(f"| {name} | {_g(rss)} | {_g(hwm)} | {delta} |")
        prev = rss
    lines += ["", "Retained by `KnownImages` (sys.getsizeof; array bytes):", "",
              "| part | MiB | bytes per image |", "|---|---:|---:|"]
    for name, size in rec["parts"].items():
        lines.append(f"| {name} | {size / 2**20:,.0f} | {size / n:,.0f} |")
    return lines


def run_flows(pool: Path, n: int, *, batch: int, images: int, limit: int,
              runs: list[Run]) -> list[str]:
    """The ingest flow into an empty root and into an n-image root: peaks vs load+decide."""
    from bench.baselines import cached_batch

    photos = cached_batch("ingest", images, 7, dup_rate=0.0, problems=False)
    lines = [(f"`ingest` flow end to end ({images} generated FullHD photos, default settings, "
             "forkserver pool of 2), each in a fresh process:"), "",
             ("| catalog images | flow process peak | pool / server children peak | seconds "
             "| accepted | load+decide peak (on, same N) |"), "|---:|---:|---:|---:|---:|---:|"]
    for size in (0, n):
        root = catalog_root(pool, size, batch=batch, dest=WORK / f"flow-{size}")
        rec, note = run_child(["--flow-child", str(root), "--photos", str(photos)], limit=limit)
        shutil.rmtree(root)
        same = [r for r in runs if r.variant == "on" and r.n == size and r.rec]
        ref = _g(same[0].peak) if same else "-"
        if rec is None:
            lines.append(f"| {size:,} | {note} | | | | {ref} |")
            continue
        lines.append(f"| {size:,} | {_g(rec['peak'])} | {_g(rec['children_peak'])} "
                     f"| {rec['seconds']:.1f} | {rec['accepted']} | {ref} |")
        print(f"  flow n={size}: peak {_g(rec['peak'])} GiB", file=sys.stderr)
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (the child modes are internal)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="50000,100000,250000,500000",
                    help="comma-separated catalog sizes (multiples of --batch)")
    ap.add_argument("--variants", default="on,chunked", help="of on, off, chunked")
    ap.add_argument("--batch", type=int, default=50_000, help="rows per catalog batch")
    ap.add_argument("--window", type=int, default=2048, help="new inputs decided")
    ap.add_argument("--limit-gib", type=float, default=8.0, help="skip or kill runs above it")
    ap.add_argument("--breakdown-n", type=int, default=250_000, help="0: no step breakdown")
    ap.add_argument("--flow-n", type=int, default=100_000, help="0: no flow runs")
    ap.add_argument("--flow-images", type=int, default=200)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--breakdown-child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--flow-child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--window-file", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="on", help=argparse.SUPPRESS)
    ap.add_argument("--photos", type=Path, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _sizes(text: str, batch: int) -> Iterator[int]:
    for part in text.split(","):
        n = int(part)
        if n % batch:
            raise SystemExit(f"--n {n} is not a multiple of --batch {batch}")
        yield n


def main(argv: list[str] | None = None) -> None:
    """Build the catalogs, run the children and print the Markdown section."""
    args = parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child_stages(args.child, args.window_file, args.variant)))
        return
    if args.breakdown_child:
        print("RESULT " + json.dumps(child_breakdown(args.breakdown_child)))
        return
    if args.flow_child:
        print("RESULT " + json.dumps(child_flow(args.flow_child, args.photos)))
        return
    ns = sorted(_sizes(args.n, args.batch))
    variants = args.variants.split(",")
    limit = int(args.limit_gib * GIB)
    extra = [args.breakdown_n, args.flow_n]
    pool = ensure_pool(max([*ns, *extra]), batch=args.batch, seed=args.seed,
                       window=args.window)
    window = pool / f"window-{args.window}.npz"
    started = time.perf_counter()
    runs = measure(pool, ns, variants, batch=args.batch, window=window, limit=limit)
    lines = report_runs(runs)
    if args.breakdown_n:
        root = catalog_root(pool, args.breakdown_n, batch=args.batch,
                            dest=WORK / f"breakdown-{args.breakdown_n}")
        rec, note = run_child(["--breakdown-child", str(root)], limit=limit)
        shutil.rmtree(root)
        lines += [""] + (report_breakdown(rec) if rec else [f"Breakdown: {note}"])
    if args.flow_n:
        lines += [""] + run_flows(pool, args.flow_n, batch=args.batch, images=args.flow_images,
                                  limit=limit, runs=runs)
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
