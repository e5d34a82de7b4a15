"""Importing a large answer file, and the next run with nothing new: wall time and peak RSS.

    .venv/bin/python bench/bench_answers.py [--rows 875000] [--per-image 5] [--repeat 3]
    BENCH_CODE=/tmp/old .venv/bin/python bench/bench_answers.py --label before

A catalog of ``rows / per-image`` synthetic ``images`` rows (no photo behind them: the crowd
stages never open one), each already pushed to the validation crowd queue, and one answer
table in the simulated crowd's format (``image_id, worker_id, answer, queue, stage, time``)
with ``per-image`` answers per image from a pool of simulated workers (honest, spammers, one
always-yes). Each repetition copies the catalog, then runs two child processes of the
validation stage (file back end, as ``hagrid validate --crowd file`` runs it):

- **import**: ``--answers FILE`` (copy into the inbox, pull, screen, aggregate, commit);
- **later**: the same root again, nothing new in the inbox.

A child reports the stage's wall time and CPU time (the flow call, after a warm-up flow has
started Prefect; CPU time says more on a shared machine) and its peak RSS
(``resource.getrusage``; Prefect's temporary API server runs in a process of its own and is
not counted). Figures are medians over ``--repeat``.

``BENCH_CODE`` (default: this checkout) is the source tree the children import, so the
same script measures an older version: ``git worktree add /tmp/old HEAD``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
CODE = Path(os.environ.get("BENCH_CODE", str(BENCH.parent))).resolve()
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # the machine is shared
os.environ.setdefault("PREFECT_HOME", str(BENCH / "_work" / "prefect-home"))
sys.path.insert(0, str(CODE))

import numpy as np
import pyarrow as pa
from prefect import flow

from flows.crowd import run_crowd_stage
from schemas.crowd import CrowdBackendOptions, CrowdSettings, Queue, Stage
from schemas.tables import IMAGES, STAGE_TASKS
from schemas.taxonomy import load_taxonomy
from tasks.catalog import Catalog, image_id_for, object_key
from tasks.simulation.crowd import planted_truth, worker_answer, worker_pool
from tasks.storage import LocalStorage

WORKERS = 100


# ---- the data ------------------------------------------------------------------------------

def write_catalog(root: Path, *, n: int, per_image: int) -> list[str]:
    """N ``images`` rows, each pushed once to the validation crowd queue for ``per_image``."""
    now = pa.scalar(time.time_ns() // 1000, pa.timestamp("us", tz="UTC"))
    shas = [hashlib.sha256(f"bench-answers|{i}".encode()).hexdigest() for i in range(n)]
    ids = [image_id_for(s) for s in shas]
    gestures = load_taxonomy().gestures
    images = pa.table({
        "image_id": ids, "sha256": shas, "object_key": [object_key(s, "JPEG") for s in shas],
        "format": ["JPEG"] * n, "width": [1920] * n, "height": [1080] * n,
        "orientation": [1] * n, "bytes": [500_000] * n,
        "user_id": [f"user-{i % 997:03d}" for i in range(n)],
        "gesture": [gestures[i % len(gestures)] for i in range(n)],
        "submitted_at": pa.nulls(n, pa.timestamp("us", tz="UTC")),
        "submission_id": [f"sub-{i}" for i in range(n)], "phash": [0] * n,
        "phash_mirror": [0] * n, "thumb": [b""] * n, "batch_id": ["bench-images"] * n,
        "ingested_at": pa.array([now.value] * n, pa.timestamp("us", tz="UTC")),
    }, schema=IMAGES)
    tasks = pa.table({
        "stage": [Stage.VALIDATION.value] * n, "image_id": ids, "queue": [Queue.CROWD.value] * n,
        "round": [1] * n, "answers_wanted": [per_image] * n, "is_golden": [False] * n,
        "backend": ["file"] * n, "external_id": ["bench"] * n, "batch_id": ["bench-tasks"] * n,
        "pushed_at": pa.array([now.value] * n, pa.timestamp("us", tz="UTC")),
    }, schema=STAGE_TASKS)
    catalog = Catalog(LocalStorage(root))
    catalog.write_batch("00000-bench-images", {"images": images}, info={"kind": "bench"})
    catalog.write_batch("00001-bench-tasks", {"stage_tasks": tasks}, info={"kind": "bench"})
    return ids


def write_answers(path: Path, ids: list[str], *, per_image: int, seed: int = 0) -> int:
    """The simulated crowd's answer table: ``per_image`` distinct workers per image."""
    pool = worker_pool(n_workers=WORKERS, seed=seed)
    truth = planted_truth(seed=seed)
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(pool), size=len(ids))
    stamp = "2026-11-01T10:00:00+00:00"
    with path.open("w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["image_id", "worker_id", "answer", "queue", "stage", "time"])
        for image_id, start in zip(ids, first, strict=True):
            right = truth(Stage.VALIDATION, image_id)
            for k in range(per_image):
                worker = pool[(int(start) + k) % len(pool)]
                out.writerow([image_id, worker.worker_id,
                              worker_answer(worker, Stage.VALIDATION, right, rng),
                              Queue.CROWD.value, Stage.VALIDATION.value, stamp])
    return len(ids) * per_image


# ---- one measured run (a child process) ----------------------------------------------------

@flow(name="bench-answers-stage")
def stage_flow(root: str, options: CrowdBackendOptions, settings: CrowdSettings) -> dict[str, Any]:
    """The validation stage as the validate flow runs it."""
    return run_crowd_stage(Stage.VALIDATION, root=root, options=options, settings=settings)


@flow(name="bench-warm-up")
def warm_up() -> None:
    """Start Prefect (its temporary server) before the clock starts."""


def child(root: str, answers: str | None, *, per_image: int) -> dict[str, Any]:
    """Run the stage once; wall time of the flow call and this process's peak RSS."""
    warm_up()
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    options = CrowdBackendOptions(kind="file", answers=(answers,) if answers else ())
    settings = CrowdSettings(overlap=per_image, min_credible=per_image,
                             max_answers=per_image + 2)
    start, cpu = time.perf_counter(), _cpu_s()
    report = stage_flow(root, options, settings)
    wall, cpu = time.perf_counter() - start, _cpu_s() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(peak_mb),
            "base_rss_mb": round(base_mb), "answers_pulled": report["answers_pulled"],
            "verdicts": report["verdicts"]}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(root: Path, answers: Path | None, *, per_image: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(root), "--per-image", str(per_image)]
    if answers is not None:
        cmd += ["--answers", str(answers)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the plan and the report ---------------------------------------------------------------

def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    base = work / "catalog"
    answers = work / "answers.csv"
    n = args.rows // args.per_image
    t = time.perf_counter()
    ids = write_catalog(base, n=n, per_image=args.per_image)
    rows = write_answers(answers, ids, per_image=args.per_image)
    print(f"data: {n} images, {rows} answers, {answers.stat().st_size / 1e6:.1f} MB "
          f"({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"import": [], "later": []}
    for i in range(args.repeat):
        root = work / f"root-{i}"
        shutil.copytree(base, root)
        runs["import"].append(run_child(root, answers, per_image=args.per_image))
        runs["later"].append(run_child(root, None, per_image=args.per_image))
        print(f"repeat {i}: {runs['import'][-1]} / {runs['later'][-1]}", file=sys.stderr,
              flush=True)
        shutil.rmtree(root)
    return {"images": n, "rows": rows, "mb": answers.stat().st_size / 1e6, "runs": runs}


def report(result: dict[str, Any], *, label: str) -> str:
    lines = [f"### {label}: code {CODE}", "",
             (f"{result['rows']} answers for {result['images']} images, "
              f"{result['mb']:.1f} MB CSV; median of {len(result['runs']['import'])}"), "",
             "| run | wall s | CPU s | peak RSS MB | answers pulled | runs (wall s / CPU s / MB) |",
             "|---|---:|---:|---:|---:|---|"]
    for name, runs in result["runs"].items():
        wall = statistics.median(r["wall_s"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        rss = statistics.median(r["peak_rss_mb"] for r in runs)
        each = ", ".join(f"{r['wall_s']} / {r['cpu_s']} / {r['peak_rss_mb']}" for r in runs)
        lines.append(f"| {name} | {wall:.1f} | {cpu:.1f} | {rss:.0f} "
                     f"| {runs[0]['answers_pulled']} | {each} |")
    base = statistics.median(r["base_rss_mb"] for rs in result["runs"].values() for r in rs)
    lines += ["", f"(RSS of a child after the warm-up flow, before the stage: {base:.0f} MB)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=875_000)
    parser.add_argument("--per-image", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--out", help="append the Markdown table to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--answers", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.answers, per_image=args.per_image)))
        return
    (BENCH / "_work").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="answers-", dir=BENCH / "_work"))
    try:
        markdown = report(measure(args, work), label=args.label)
    finally:
        shutil.rmtree(work)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
