"""Publishing an S3 root: in the flow's process, and on a local Dask cluster whose workers
stage their files under the root (``tasks.publish.remote``).

    .venv/bin/python bench/bench_publish_s3.py [--n 1000] [--size 320x240] [--runs 3] [--workers 2]

Starts ``moto_server`` (moto's S3-protocol server, a process of its own on 127.0.0.1), builds
(once, cached like ``bench_publish.py``) a catalog of ``n`` passing, annotated JPEGs and
uploads it to two roots of one bucket. Each run publishes release ``v<run>`` of both roots:

- ``in-process``: no cluster; the flow's process reads every object (an S3 root's jobs run
  there), stages the release in a local temporary folder and uploads it at the commit;
- ``cluster``: ``cluster="local"``, a LocalCluster of ``--workers`` processes started for the
  run; the image and shard jobs read by ranged GETs, upload what they write under
  ``releases/.staging-*/``, and the commit copies it server-side.

The two releases must be byte for byte the same (their ``SHA256SUMS`` are compared). Reported
per mode: the flow's images and shards timings, the commit, and the whole call (the
cluster's start included), medians of ``--runs``. moto keeps every object in its own
memory and runs on the same 2 cores, so these figures say what the cluster path costs
against the in-process one here, not what real S3 would give.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from bench.bench_publish import build_catalog

BUCKET = "bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto(port: int, log: Path) -> subprocess.Popen[bytes]:
    """``moto_server`` on 127.0.0.1:``port``, answering before this returns."""
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H",
                               "127.0.0.1", "-p", str(port)], stdout=log.open("wb"),
                              stderr=subprocess.STDOUT)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(100):
        try:
            opener.open(f"http://127.0.0.1:{port}/moto-api/", timeout=2).close()
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}")


def upload(client: object, local: Path, prefix: str) -> None:
    """Every file under ``local`` to ``s3://BUCKET/<prefix>/``."""
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(local).as_posix()}")  # type: ignore[attr-defined]


def release_sums(client: object, prefix: str, version: str) -> str:
    """The release's ``SHA256SUMS`` text."""
    got = client.get_object(Bucket=BUCKET, Key=f"{prefix}/releases/{version}/SHA256SUMS")  # type: ignore[attr-defined]
    return str(got["Body"].read().decode())


def one_run(endpoint: str, version: str, *, cluster: str | None, workers: int,
            prefix: str) -> dict[str, float]:
    """Publish ``version`` of ``s3://BUCKET/<prefix>``; the flow's timings and wall time."""
    from flows.publish import publish

    started = time.perf_counter()
    summary = publish(root=f"s3://{BUCKET}/{prefix}", version=version, s3_endpoint_url=endpoint,
                      cluster=cluster, workers=workers)
    wall = time.perf_counter() - started
    timings = summary["timings"]
    return {"images_s": timings["images_s"], "shards_s": timings["shards_s"],
            "wall_s": wall, "images": float(summary["images"])}


def main() -> None:
    """Build and upload the catalog, publish ``--runs`` times each way, print the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=5123)
    parser.add_argument("--out", type=Path, default=BENCH / "results_publish_s3.md")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    local = BENCH / "_work" / f"publish-{args.n}-{args.size}" / "root"
    build_catalog(local, n=args.n, size=(width, height))
    os.environ.update(CREDENTIALS)
    endpoint = f"http://127.0.0.1:{args.port}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    server = start_moto(args.port, tmp / "moto.log")
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        t0 = time.perf_counter()
        for prefix in ("in-process", "cluster"):
            upload(client, local, prefix)
        print(f"catalog uploaded twice in {time.perf_counter() - t0:.1f}s", flush=True)
        rows: dict[str, list[dict[str, float]]] = {"in-process": [], "cluster": []}
        for run in range(args.runs):
            version = f"v{run}"
            rows["in-process"].append(one_run(endpoint, version, cluster=None,
                                              workers=args.workers, prefix="in-process"))
            rows["cluster"].append(one_run(endpoint, version, cluster="local",
                                           workers=args.workers, prefix="cluster"))
            same = release_sums(client, "in-process", version) == \
                release_sums(client, "cluster", version)
            if not same:
                raise SystemExit(f"release {version}: the two modes wrote different files")
            print(json.dumps({k: v[-1] for k, v in rows.items()}), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {mode: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
           for mode, runs in rows.items()}
    lines = [(f"# Publish of an S3 root (moto): {args.n} images of {args.size}, {args.runs} "
              f"runs, {args.workers} workers; the two releases identical in every run"), "",
             "| mode | images s | shards s | whole call s | images/s (whole call) |",
             "|---|---:|---:|---:|---:|"]
    for mode, m in med.items():
        lines.append(f"| {mode} | {m['images_s']:.2f} | {m['shards_s']:.2f} | "
                     f"{m['wall_s']:.2f} | {m['images'] / m['wall_s']:.0f} |")
    ratio = med["cluster"]["wall_s"] / med["in-process"]["wall_s"]
    lines += ["", f"cluster / in-process, whole call: {ratio:.2f}"]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
