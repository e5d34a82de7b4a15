"""Ingest throughput through the Prefect flow vs imagededup and the decode floor, same run.

    .venv/bin/python bench/bench_ingest.py --n 1000 --repeat 3

Generates (once) n FullHD JPEGs (quality ~90) with ``hagrid synth`` into bench/_data, then, per
repeat and interleaved: the decode floor (1/8-scale grey draft decode over 2 processes),
imagededup's ``PHash().encode_images`` (in .venv-bench, see bench/setup_bench_env.sh), and the
``ingest`` flow end to end into a fresh root (ephemeral Prefect, started by a warm-up run that
is not timed; its process pool of 2 included; no flow-run heartbeats, as ``hagrid ingest`` on a
temporary server), and with ``--local-cluster`` the same flow on
``--cluster local``. Prints a Markdown section with medians and ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baselines import (
    BENCH_PYTHON,
    cached_batch,
    jpeg_files,
    time_decode_floor,
    time_imagededup,
)


def _time_ingest(batch: Path, work: Path, *, workers: int = 2,
                 cluster: str | None = None) -> tuple[float, dict]:
    from flows.ingest import ingest
    from flows.terminal import no_heartbeats_on_a_temporary_server

    root = Path(tempfile.mkdtemp(dir=work))
    with no_heartbeats_on_a_temporary_server():  # as ``hagrid ingest`` runs it
        start = time.perf_counter()
        summary = ingest(source=str(batch), submissions=str(batch / "submissions.csv"),
                         root=str(root), workers=workers, cluster=cluster)
        seconds = time.perf_counter() - start
    shutil.rmtree(root)
    return seconds, summary


def _warm(files: list[Path]) -> None:
    for f in files:
        f.read_bytes()


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print (and save) the Markdown section."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results_ingest.md")
    ap.add_argument("--local-cluster", action="store_true",
                    help="also time the flow with --cluster local (a LocalCluster of 2)")
    args = ap.parse_args(argv)
    batch = cached_batch("ingest", args.n, args.seed, dup_rate=0.0, problems=False)
    files = jpeg_files(batch / "photos")
    work = Path(__file__).parent / "_work"
    work.mkdir(exist_ok=True)
    _warm(files)
    small = cached_batch("ingest", 40, 99, dup_rate=0.0, problems=False)
    _time_ingest(small, work)  # starts Prefect's ephemeral server; not timed
    floor: list[float] = []
    dedup: list[float] = []
    ours: list[float] = []
    dask: list[float] = []
    for _ in range(args.repeat):
        floor.append(time_decode_floor(files, workers=2))
        dedup.append(time_imagededup(batch / "photos", python=str(BENCH_PYTHON)))
        seconds, summary = _time_ingest(batch, work, workers=2)
        assert summary["inputs"] == len(files), summary
        ours.append(seconds)
        if args.local_cluster:
            seconds, summary = _time_ingest(batch, work, workers=2, cluster="local")
            assert summary["inspected_on"] == "local Dask cluster of 2", summary
            dask.append(seconds)
    text = _report(len(files), floor, dedup, ours, args, dask=dask)
    print(text)
    args.out.write_text(text)


def _report(n: int, floor: list[float], dedup: list[float], ours: list[float],
            args: argparse.Namespace, *, dask: list[float]) -> str:
    f, d, o = (statistics.median(x) for x in (floor, dedup, ours))
    photos = cached_batch("ingest", args.n, args.seed, dup_rate=0.0, problems=False) / "photos"
    mb = sum(p.stat().st_size for p in jpeg_files(photos)) / n / 1e6
    rows = [
        ("decode floor (draft 1/8 grey, 2 processes)", f, floor),
        ("imagededup PHash().encode_images (2 processes)", d, dedup),
        ("hagrid ingest flow, end to end (process pool of 2)", o, ours),
    ]
    if dask:
        rows.append(("hagrid ingest flow, end to end, --cluster local (LocalCluster of 2)",
                     statistics.median(dask), dask))
    lines = [
        "## Ingest throughput", "",
        (f"`.venv/bin/python bench/bench_ingest.py --n {args.n} --repeat {args.repeat}"
         f"{' --local-cluster' if dask else ''}` "
        f"({n} FullHD JPEGs, quality ~90, {mb:.2f} MB average, page cache warm; 2 cores; "
        f"median of {args.repeat} interleaved runs)"), "",
        "| what | median s | images/s | runs (s) |", "|---|---:|---:|---|",
    ]
    lines += [f"| {name} | {m:.2f} | {n / m:.0f} | {', '.join(f'{x:.2f}' for x in runs)} |"
              for name, m, runs in rows]
    lines += ["", f"- ingest vs imagededup: **{d / o:.2f}x** (target >= 3x)",
              (f"- ingest vs decode floor: **{f / o:.0%}** of the floor's throughput "
              "(target >= 85%)")]
    if dask:
        lines.append(f"- --cluster local vs the process pool: **{statistics.median(dask) / o:.2f}x** "
                     "the time (cluster start included)")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
