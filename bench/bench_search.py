"""Near-duplicate search over 1,000,000 skewed 64-bit hashes: all pairs and batch queries.

    .venv/bin/python bench/bench_search.py --n 1000000 --radius 12 --repeat 3

Codes are phash-like: biased and correlated bits (thresholded projections of a Gaussian
latent) plus 5% near-copies with a few flipped bits. Compared in the same run with numpy
brute force (measured on a slice, extrapolated) and a pure-Python BK-tree (built over
``--bk-n`` codes, per-query time measured on 20 queries).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tasks.hash_index import HammingIndex, all_pairs  # noqa: E402


def skewed_codes(n: int, seed: int) -> np.ndarray:
    """phash-like codes: biased, correlated bits and 5% near-copies (1-4 flipped bits)."""
    rng = np.random.default_rng(seed)
    mix = (0.4 * rng.normal(size=(8, 64))).astype(np.float32)
    thresholds = rng.uniform(-0.8, 0.8, 64).astype(np.float32)
    out = np.empty(n, np.uint64)
    weights = np.uint64(1) << np.arange(64, dtype=np.uint64)
    for lo in range(0, n, 100_000):
        m = min(100_000, n - lo)
        latent = rng.normal(size=(m, 8)).astype(np.float32) @ mix
        bits = latent + rng.normal(size=(m, 64)).astype(np.float32) > thresholds
        out[lo:lo + m] = (bits.astype(np.uint64) * weights).sum(axis=1)
    k = n // 20
    src = rng.integers(0, n - k, k)
    for _ in range(int(rng.integers(1, 5))):
        out[n - k:] = out[src] ^ (np.uint64(1) << rng.integers(0, 64, k).astype(np.uint64))
    return out


class BKTree:
    """A plain BK-tree over integer codes (the usual comparison)."""

    def __init__(self, codes: np.ndarray) -> None:
        it = iter(codes.tolist())
        self.root: tuple[int, dict] = (next(it), {})
        for c in it:
            node = self.root
            while True:
                d = (node[0] ^ c).bit_count()
                if d == 0:
                    break
                child = node[1].get(d)
                if child is None:
                    node[1][d] = (c, {})
                    break
                node = child

    def query(self, q: int, radius: int) -> list[int]:
        """Codes within ``radius`` of ``q``."""
        out, stack = [], [self.root]
        while stack:
            code, children = stack.pop()
            d = (code ^ q).bit_count()
            if d <= radius:
                out.append(code)
            stack.extend(v for k, v in children.items() if d - radius <= k <= d + radius)
        return out


def _median_time(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> None:
    """Measure and print (and save) the Markdown section."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--radius", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bk-n", type=int, default=200_000)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results_search.md")
    args = ap.parse_args(argv)
    codes, new = skewed_codes(args.n, 1), skewed_codes(10_000, 2)
    t = time.perf_counter()
    all_pairs(codes[:20_000], radius=args.radius)
    HammingIndex(codes[:20_000], radius=args.radius).query(new[:100], radius=args.radius)
    compile_s = time.perf_counter() - t
    ap_s, pairs = _median_time(lambda: all_pairs(codes, radius=args.radius), args.repeat)
    t = time.perf_counter()
    index = HammingIndex(codes, radius=args.radius)
    build_s = time.perf_counter() - t
    q_s, hits = _median_time(lambda: index.query(new, radius=args.radius), max(5, args.repeat))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    t = time.perf_counter()
    for q in codes[:500]:
        np.bitwise_count(codes ^ q)
    brute_all = (time.perf_counter() - t) / 500 * args.n / 2
    brute_batch = (time.perf_counter() - t) / 500 * 10_000
    bk = BKTree(codes[: args.bk_n])
    t = time.perf_counter()
    for q in new[:20].tolist():
        bk.query(q, args.radius)
    bk_q = (time.perf_counter() - t) / 20
    lines = [
        "## Near-duplicate search", "",
        f"`.venv/bin/python bench/bench_search.py --n {args.n} --radius {args.radius} "
        f"--repeat {args.repeat}` (skewed phash-like codes; 2 cores; medians)", "",
        "| what | seconds | note |", "|---|---:|---|",
        f"| all pairs within r={args.radius} over {args.n:,} | {ap_s:.2f} | {len(pairs):,} pairs "
        f"(target <= 20 s) |",
        f"| 10,000 new vs {args.n:,} (index built) | {q_s:.3f} | {len(hits):,} hits "
        f"(target <= 1 s) |",
        f"| index build over {args.n:,} | {build_s:.2f} | once per run |",
        f"| numba compile (first call) | {compile_s:.1f} | cached on disk afterwards |",
        f"| numpy brute force, all pairs (extrapolated) | {brute_all:.0f} | "
        f"{brute_all / ap_s:.0f}x slower |",
        f"| numpy brute force, 10,000 queries (extrapolated) | {brute_batch:.1f} | "
        f"{brute_batch / q_s:.0f}x slower |",
        f"| BK-tree over {args.bk_n:,}, per query | {bk_q:.3f} | x10,000 = {bk_q * 1e4:.0f} s "
        f"(at only {args.bk_n:,} codes) |",
        f"| peak RSS of the process | {peak_gb:.2f} GB | codes, index, results |", "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
