"""Benchmark exact Hamming-radius search (tasks/ingest/hash_index.py) on phash-like codes.

Measures, in one run: ``all_pairs`` over n codes, a batch of new codes queried against an
index of n codes (and the index build), peak memory, numba compile time, and two baselines:
a pure-Python BK-tree and numpy brute force (timed on a slice, extrapolated).  Prints a
Markdown section and writes it to ``bench/results_search.md``.

    python bench/bench_search.py                # n=1,000,000, radius 8,10,12
    python bench/bench_search.py --quick        # n=100,000 smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import TypeVar

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.ingest.hash_index import HammingIndex, all_pairs

T = TypeVar("T")
RESULTS = ROOT / "bench" / "results_search.md"
BK_BUILD_BUDGET_S = 120.0
BK_SMALL_N = 200_000


# ------------------------------------------------------------------------------ data


def phash_like_codes(
    n: int, *, seed: int, latent_dim: int = 12, noise: float = 0.8, dup_fraction: float = 0.05
) -> np.ndarray:
    """Skewed 64-bit codes shaped like perceptual hashes of a photo collection.

    Bit ``i`` is ``w_i . z + noise * e_i > t_i`` for a Gaussian latent ``z`` (so bits are
    correlated), with thresholds giving bit probabilities spread over 0.2-0.8 (biased).
    ``dup_fraction`` of the codes are near-duplicates: copies of another code with 0-6 random
    bit flips (0 = an exact duplicate), clustered (several copies of the same original).
    """
    rng = np.random.default_rng(seed)
    n_dup = round(n * dup_fraction)
    n_base = n - n_dup
    weights = rng.standard_normal((64, latent_dim))
    weights /= np.linalg.norm(weights, axis=1, keepdims=True)
    p_one = rng.uniform(0.2, 0.8, 64)
    scale = np.sqrt(1 + noise**2)
    thresholds = np.array([NormalDist().inv_cdf(1 - p) for p in p_one]) * scale
    latent = rng.standard_normal((n_base, latent_dim)).astype(np.float32)
    base = np.zeros(n_base, np.uint64)
    for bit in range(64):
        value = latent @ weights[bit].astype(np.float32)
        value += noise * rng.standard_normal(n_base, dtype=np.float32)
        base |= (value > thresholds[bit]).astype(np.uint64) << np.uint64(bit)
    originals = rng.integers(0, n_base, max(n_dup // 3, 1))  # ~3 copies per original
    copies = base[originals[rng.integers(0, originals.shape[0], n_dup)]]
    flips = rng.integers(0, 7, n_dup)
    for k in range(6):
        flip = np.uint64(1) << rng.integers(0, 64, n_dup).astype(np.uint64)
        copies ^= np.where(flips > k, flip, np.uint64(0))
    codes = np.concatenate([base, copies])
    rng.shuffle(codes)
    return codes


def describe_codes(codes: np.ndarray, *, seed: int = 1) -> dict[str, float]:
    """Bit bias, bit correlation and the distance distribution of random pairs."""
    rng = np.random.default_rng(seed)
    sample = codes[rng.integers(0, codes.shape[0], min(codes.shape[0], 100_000))]
    bits = ((sample[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(np.float32)
    p_one = bits.mean(axis=0)
    corr = np.corrcoef(bits.T)[np.triu_indices(64, 1)]
    a = codes[rng.integers(0, codes.shape[0], 2_000_000)]
    b = codes[rng.integers(0, codes.shape[0], 2_000_000)]
    dist = np.bitwise_count(a ^ b)
    return {
        "p_min": float(p_one.min()),
        "p_max": float(p_one.max()),
        "corr_mean": float(np.nanmean(np.abs(corr))),
        "corr_max": float(np.nanmax(np.abs(corr))),
        "dist_mean": float(dist.mean()),
        "dist_std": float(dist.std()),
        "unique": float(np.unique(codes).shape[0] / codes.shape[0]),
    }


# ------------------------------------------------------------------------- measuring


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


@dataclass
class Timing:
    """Wall seconds of repeated runs, this process's user and system CPU seconds, and the
    CPU (in cores) that other processes took meanwhile."""

    walls: list[float] = field(default_factory=list)
    users: list[float] = field(default_factory=list)
    systems: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)

    def runs(self) -> str:
        return ", ".join(f"{w:.3g}" for w in self.walls)

    def cpu(self) -> str:
        user, system = statistics.median(self.users), statistics.median(self.systems)
        return f"{user:.3g} + {system:.3g}"

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def other_load(self) -> float:
        return max(self.others, default=0.0)


def timed(run: Callable[[], T], *, repeat: int) -> tuple[T, Timing]:
    """Run ``repeat`` times; wall time of each, and the busy cores not used by this process."""
    timing = Timing()
    result: T | None = None
    ticks = os.sysconf("SC_CLK_TCK")
    for _ in range(repeat):
        result = None  # let the previous result go before the next run
        busy0, _ = _busy_jiffies()
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        result = run()
        wall = time.perf_counter() - start
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        busy1, _ = _busy_jiffies()
        user, system = usage1.ru_utime - usage0.ru_utime, usage1.ru_stime - usage0.ru_stime
        timing.walls.append(wall)
        timing.users.append(user)
        timing.systems.append(system)
        other = (busy1 - busy0) / ticks - user - system
        timing.others.append(max(0.0, other / max(wall, 1e-9)))
    assert result is not None
    return result, timing


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_rss() -> Iterator[list[int]]:
    """Yield a one-item list that receives the RSS high-water mark above the start, in bytes."""
    start, peak, done = _rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes() - start)
            done.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], _rss_bytes() - start)


def compile_seconds() -> tuple[float, float]:
    """First-call time with an empty numba cache (cold compile), and with this run's cache."""
    probe = (
        "import time, numpy as np\n"
        "from tasks.ingest.hash_index import HammingIndex, all_pairs\n"
        "codes = np.random.default_rng(0).integers(0, 2**63, 5000, dtype=np.uint64)\n"
        "t = time.perf_counter()\n"
        "all_pairs(codes, radius=8, blocks=4); all_pairs(codes, radius=8)\n"
        "index = HammingIndex(codes, radius=8, blocks=4)\n"
        "index.query(codes[:10]); index.query(codes)\n"
        "print(time.perf_counter() - t)\n"
    )
    seconds = []
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(2):  # the first run compiles into the empty cache, the second loads it
            out = subprocess.run(
                [sys.executable, "-c", probe],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "NUMBA_CACHE_DIR": cache},
            )
            seconds.append(float(out.stdout.strip().splitlines()[-1]))
    return seconds[0], seconds[1]


# -------------------------------------------------------------------------- baselines


class BKTree:
    """A plain pure-Python BK-tree over integer codes (node = (code, id, children))."""

    def __init__(self) -> None:
        self.root: tuple[int, int, dict[int, tuple]] | None = None
        self.size = 0

    def add(self, code: int, item: int) -> None:
        self.size += 1
        if self.root is None:
            self.root = (code, item, {})
            return
        node = self.root
        while True:
            d = (code ^ node[0]).bit_count()
            child = node[2].get(d)
            if child is None:
                node[2][d] = (code, item, {})
                return
            node = child

    def query(self, code: int, radius: int) -> list[int]:
        found: list[int] = []
        stack = [self.root] if self.root is not None else []
        while stack:
            node_code, item, children = stack.pop()
            d = (code ^ node_code).bit_count()
            if d <= radius:
                found.append(item)
            for edge, child in children.items():
                if d - radius <= edge <= d + radius:
                    stack.append(child)
        return found


def build_bk_tree(codes: np.ndarray) -> tuple[BKTree, float, str]:
    """Build over all codes unless the projected build exceeds the budget; then over 200k."""
    tree, values = BKTree(), codes.tolist()
    start = time.perf_counter()
    first = min(len(values), BK_SMALL_N)
    for i in range(first):
        tree.add(values[i], i)
    projected = (time.perf_counter() - start) * len(values) / max(first, 1)
    if projected > BK_BUILD_BUDGET_S:
        note = (
            f"built over the first {first:,} codes only (projected {projected:.0f} s "
            f"for all {len(values):,})"
        )
        return tree, time.perf_counter() - start, note
    for i in range(first, len(values)):
        tree.add(values[i], i)
    return tree, time.perf_counter() - start, f"built over all {len(values):,} codes"


def numpy_brute_rate(codes: np.ndarray, radius: int, *, rows: int) -> float:
    """Seconds per (row x all codes) for xor + np.bitwise_count + threshold, single-threaded."""
    start = time.perf_counter()
    hits = 0
    for lo in range(0, rows, 16):
        block = codes[lo : min(lo + 16, rows), None] ^ codes[None, :]
        hits += int((np.bitwise_count(block) <= radius).sum())
    return (time.perf_counter() - start) / rows


# ---------------------------------------------------------------------------- driver


@dataclass
class RadiusResult:
    radius: int
    pairs: int
    all_pairs: Timing
    all_pairs_rss: int
    build: Timing
    build_rss: int
    query: Timing
    query_rss: int
    hits: int
    layout: str
    bk_per_query: float
    bk_hits_match: bool
    brute_row_s: float


def bench_radius(
    codes: np.ndarray, queries: np.ndarray, bk: BKTree, radius: int, args: argparse.Namespace
) -> RadiusResult:
    with peak_rss() as ap_rss:
        result, ap_time = timed(lambda: all_pairs(codes, radius=radius), repeat=args.pair_repeat)
    pairs = len(result)
    del result
    with peak_rss() as build_rss:
        index, build_time = timed(lambda: HammingIndex(codes, radius=radius), repeat=3)
    with peak_rss() as query_rss:
        hits, query_time = timed(lambda: index.query(queries), repeat=args.repeat)
    layout = (
        f"{len(index.block_widths)} x {'/'.join(map(str, index.block_widths))} bits, "
        f"probe radii {'/'.join(map(str, index.block_radii()))}"
    )
    bk_queries = queries[: args.bk_queries]
    start = time.perf_counter()
    bk_found = [sorted(bk.query(int(c), radius)) for c in bk_queries.tolist()]
    bk_per_query = (time.perf_counter() - start) / max(len(bk_found), 1)
    bk_index = HammingIndex(codes[: bk.size], radius=radius).query(bk_queries)
    match = all(
        found == bk_index.right[bk_index.left == i].tolist() for i, found in enumerate(bk_found)
    )
    brute = numpy_brute_rate(codes, radius, rows=args.brute_rows)
    return RadiusResult(
        radius,
        pairs,
        ap_time,
        ap_rss[0],
        build_time,
        build_rss[0],
        query_time,
        query_rss[0],
        len(hits),
        layout,
        bk_per_query,
        match,
        brute,
    )


def _fmt_s(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.3g} s" if seconds >= 0.01 else f"{seconds * 1e3:.3g} ms"


def _gib(n_bytes: float) -> str:
    if n_bytes < 2**30:
        return f"{n_bytes / 2**20:.0f} MiB"
    return f"{n_bytes / 2**30:.2f} GiB"


def report(
    args: argparse.Namespace,
    stats: dict[str, float],
    results: list[RadiusResult],
    extras: dict[str, str],
) -> str:
    n, nq = args.n, args.queries
    all_pairs_count = n * (n - 1) / 2
    lines = [
        "## Hamming-radius search (`tasks/ingest/hash_index.py`)",
        "",
        f"Command: `{extras['command']}`",
        "",
        f"Machine: {extras['machine']}",
        "",
        (
            f"Data: {n:,} phash-like 64-bit codes plus {nq:,} new query codes from the same "
            "distribution (`phash_like_codes`: bits are thresholded projections of a 12-d Gaussian "
            "latent plus noise; 5% near-duplicates with 0-6 bit flips, clustered). "
            f"Bit P(1) {stats['p_min']:.2f}-{stats['p_max']:.2f}, mean |corr| between bits "
            f"{stats['corr_mean']:.3f} (max {stats['corr_max']:.2f}), random-pair distance "
            f"{stats['dist_mean']:.1f} +- {stats['dist_std']:.1f} (uniform codes: 32 +- 4), "
            f"{stats['unique']:.1%} distinct."
        ),
        "",
        (
            f"Timings are medians of {args.pair_repeat} runs (all_pairs), 3 (build) and "
            f"{args.repeat} (query batch), wall clock, numba on {numba.get_num_threads()} threads, "
            "compile excluded."
        ),
        "",
        (
            f"| radius | all_pairs | pairs found (share of all pairs) | build ({n:,} codes) | "
            f"query batch ({nq:,}) | per query | hits | index layout |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.radius} | {_fmt_s(r.all_pairs.median)} | {r.pairs:,} "
            f"({r.pairs / all_pairs_count:.1e}) | "
            f"{_fmt_s(r.build.median)} | {_fmt_s(r.query.median)} | "
            f"{r.query.median / nq * 1e6:.1f} us | {r.hits:,} | {r.layout} |"
        )
    lines += [
        "",
        (
            "Peak memory (RSS high-water above the start of each phase, sampled every 5 ms; "
            f"the input codes themselves are {_gib(n * 8)}):"
        ),
        "",
        "| radius | all_pairs | build | query batch |",
        "|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.radius} | {_gib(r.all_pairs_rss)} | {_gib(r.build_rss)} | {_gib(r.query_rss)} |"
        )
    lines += [
        "",
        (
            "Individual runs (wall seconds) and median CPU seconds of this process, user + "
            "system (system time is mostly first-touch page faults of fresh output memory):"
        ),
        "",
        "| radius | all_pairs runs | all_pairs CPU | build runs | query batch runs | query CPU |",
        "|---:|---|---:|---|---|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.radius} | {r.all_pairs.runs()} | {r.all_pairs.cpu()} | "
            f"{r.build.runs()} | {r.query.runs()} | {r.query.cpu()} |"
        )
    lines += [
        "",
        f"Process RSS high-water mark for the whole run: {extras['maxrss']}.",
        "",
        (
            f"Baselines: pure-Python BK-tree ({extras['bk_note']}, build {extras['bk_build']}; "
            f"{args.bk_queries} queries per radius, results checked equal to the index), and numpy "
            f"brute force (xor + `np.bitwise_count`, one thread; {args.brute_rows:,} rows x "
            f"{n:,} timed, **extrapolated** to {all_pairs_count:,.0f} pairs and to the query "
            "batch)."
        ),
        "",
        (
            "| radius | BK-tree per query | index per query | speed-up | numpy brute force "
            "all-pairs (extrapolated) | all_pairs speed-up | numpy brute force query batch "
            "(extrapolated) |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        per_query = r.query.median / nq
        brute_all = r.brute_row_s * all_pairs_count / n
        match = "" if r.bk_hits_match else " (MISMATCH)"
        lines.append(
            f"| {r.radius} | {_fmt_s(r.bk_per_query)}{match} | {per_query * 1e6:.1f} us | "
            f"{r.bk_per_query / per_query:,.0f}x | {_fmt_s(brute_all)} | "
            f"{brute_all / r.all_pairs.median:,.0f}x | {_fmt_s(r.brute_row_s * nq)} |"
        )
    lines += [
        "",
        f"numba compile (first calls, excluded above): {extras['compile']}.",
        "",
        f"Other processes' CPU load during the timed runs: {extras['contention']}",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="codes in the collection")
    parser.add_argument("--radius", default="8,10,12", help="comma-separated radii")
    parser.add_argument("--repeat", type=int, default=5, help="runs of the query batch")
    parser.add_argument("--pair-repeat", type=int, default=3, help="runs of all_pairs")
    parser.add_argument("--queries", type=int, default=10_000, help="new codes per batch")
    parser.add_argument("--bk-queries", type=int, default=20, help="BK-tree queries timed")
    parser.add_argument("--brute-rows", type=int, default=2_000, help="numpy brute-force rows")
    parser.add_argument("--quick", action="store_true", help="smoke run: n=100,000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="Markdown output file")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = 100_000
    args.radii = [int(r) for r in args.radius.split(",")]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python bench/bench_search.py " + " ".join(sys.argv[1:] if argv is None else argv)
    codes_all = phash_like_codes(args.n + args.queries, seed=args.seed)
    codes, queries = codes_all[: args.n], codes_all[args.n :]
    stats = describe_codes(codes)
    cold, cached = compile_seconds()
    all_pairs(codes[:5000], radius=8)  # load the compiled kernels before timing
    HammingIndex(codes[:5000], radius=8).query(codes[:5000])
    bk, bk_seconds, bk_note = build_bk_tree(codes)
    results = []
    for radius in args.radii:
        print(f"radius {radius} ...", file=sys.stderr, flush=True)
        results.append(bench_radius(codes, queries, bk, radius, args))
    loads = [t.other_load for r in results for t in (r.all_pairs, r.build, r.query)]
    extras = {
        "command": command.strip(),
        "machine": f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}, "
        f"{_cpu_model()}), numba {numba.__version__} threading layer "
        f"{numba.threading_layer()}, numpy {np.__version__}, Python {platform.python_version()}",
        "maxrss": _gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
        "bk_note": bk_note,
        "bk_build": _fmt_s(bk_seconds),
        "compile": f"{cold:.1f} s with an empty numba cache, {cached:.2f} s once cached "
        "(`cache=True` keeps compiled kernels in `tasks/__pycache__`)",
        "contention": f"up to {max(loads, default=0):.2f} cores (0 = the machine was otherwise "
        "idle; the machine is shared, so figures above ~0.2 mean the timings are pessimistic).",
    }
    text = report(args, stats, results, extras)
    print(text)
    args.out.write_text(text)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
