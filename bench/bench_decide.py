"""Duplicate decisions against a large catalog: CPU per window of new inputs (issue 15).

    PYTHONPATH=. .venv/bin/python bench/bench_decide.py --n 500000,1000000 --repeat 3

Uses ``bench/bench_memory.py``'s synthetic catalogs (clustered hashes, real layout; built
once under ``bench/_data/memory-<seed>``) and its window of new inputs. For each catalog
size: load the known images as ingest does (crop path on), then decide the window on one
thread, as the flow does (``threadpool_limits(1)``), ``--repeat`` times on fresh copies of
the loaded state. Prints the candidate pairs and the median CPU seconds per window.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from bench.bench_memory import WORK, catalog_root, ensure_pool, load_for, read_window
from tasks.catalog import Catalog
from tasks.ingest.dedup import _candidates, decide_duplicates
from tasks.storage import LocalStorage

BATCH = 50_000


def measure(n: int, *, pool: Path, window: Path, repeat: int) -> dict[str, Any]:
    """Candidate pairs and CPU seconds (each repeat) of one window against ``n`` images."""
    items, new_ids, kind = read_window(window)
    root = catalog_root(pool, n, batch=BATCH, dest=WORK / f"decide-{n}")
    loaded = load_for("on", Catalog(LocalStorage(root)))
    pairs = len(_candidates(items, loaded))
    seconds = []
    for _ in range(repeat):
        known = copy.copy(loaded)  # add() appends to these: fresh lists and dict per repeat
        known.ids, known.thumbs = list(loaded.ids), list(loaded.thumbs)
        known.by_sha, known.recent_phash, known.recent_centre = dict(loaded.by_sha), [], []
        with threadpool_limits(1):
            started = time.process_time()
            decisions = decide_duplicates(items, known, new_ids=new_ids)
            seconds.append(time.process_time() - started)
    caught = sum(1 for d, k in zip(decisions, kind, strict=True) if d is not None and k != 0)
    return {"pairs": pairs, "median": statistics.median(seconds), "runs": seconds,
            "caught": caught, "planted": int((kind != 0).sum()), "window": len(items)}


def main(argv: list[str] | None = None) -> None:
    """Print a Markdown table of decision CPU per window for each catalog size."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="500000,1000000", help="comma-separated catalog sizes")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.n.split(",")]
    pool = ensure_pool(max(sizes), batch=BATCH, seed=args.seed, window=args.window)
    print("| catalog images | candidate pairs | CPU s per window (median) | runs | per input "
          "| planted copies caught |")
    print("|---:|---:|---:|---|---:|---:|")
    for n in sizes:
        r = measure(n, pool=pool, window=pool / f"window-{args.window}.npz", repeat=args.repeat)
        runs = ", ".join(f"{s:.2f}" for s in r["runs"])
        print(f"| {n:,} | {r['pairs']:,} | {r['median']:.2f} | {runs} "
              f"| {1000 * r['median'] / r['window']:.1f} ms | {r['caught']}/{r['planted']} |",
              flush=True)


if __name__ == "__main__":
    main()
