"""Ingest on a real Dask cluster: a ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1, a real Prefect server, source and dataset root on S3 (moto). The cluster's catalog
must equal a single-process run's, row for row (run columns aside), and a worker killed
mid-run must cost nothing: its chunk runs again elsewhere and nothing is doubled.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from schemas.tables import RUN_COLUMNS
from tasks.catalog import SALT_KEY, Catalog
from tasks.storage import open_storage
from tests.servers import (
    DaskCluster,
    S3Endpoint,
    dask_cluster,
    isolated_prefect_env,
    log_tail,
    open_direct,
    prefect_server,
)

pytestmark = pytest.mark.slow

BUCKET = "cluster"
SOURCE = f"s3://{BUCKET}/drops/2026-12"
CHUNK = 4  # small chunks: many tasks, so one is running when a worker is killed
RUN_INGEST = (
    "import json, sys\n"
    "from flows.ingest import ingest\n"
    "print(json.dumps(ingest(**json.loads(sys.argv[1])), default=str))\n"
)


@dataclass(frozen=True)
class Setup:
    """The servers of this module and the environment every process of a run gets."""

    api_url: str
    env: dict[str, str]
    dask: DaskCluster
    s3: S3Endpoint
    home: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Endpoint,
            crowd_batch: Path) -> Iterator[Setup]:
    """Prefect server, Dask scheduler and 2 workers, the crowd batch uploaded to S3."""
    home = tmp_path_factory.mktemp("cluster")
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    prefix = SOURCE.removeprefix(f"s3://{BUCKET}/")
    for path in sorted(crowd_batch.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(crowd_batch)}",
                              Body=path.read_bytes())
    with prefect_server(home / "prefect") as api_url:
        env = {**isolated_prefect_env(home / "prefect", api_url=api_url), **s3_server.env()}
        with dask_cluster(home / "dask", env=env, n_workers=2) as dask:
            yield Setup(api_url, env, dask, s3_server, home)


def _command(setup: Setup, root: str, **options: object) -> list[str]:
    args = {"source": SOURCE, "submissions": f"{SOURCE}/submissions.csv", "root": root,
            "s3_endpoint_url": setup.s3.endpoint_url, "chunk_size": CHUNK, **options}
    return [sys.executable, "-c", RUN_INGEST, json.dumps(args)]


def _ingest(setup: Setup, root: str, **options: object) -> dict:
    done = subprocess.run(_command(setup, root, **options), env=setup.env, cwd=setup.home,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{_logs(setup)}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _logs(setup: Setup) -> str:
    return "\n".join(log_tail(p, lines=20) for p in setup.dask.logs)


def _new_root(setup: Setup, name: str) -> str:
    """An empty root on S3 with a fixed salt, so user keys compare across roots."""
    setup.s3.client().put_object(Bucket=BUCKET, Key=f"{name}/{SALT_KEY}", Body=b"f" * 64)
    return f"s3://{BUCKET}/{name}"


def _catalog(setup: Setup, root: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Every row of both ingest tables (run columns dropped, sorted) and the object keys."""
    for key, value in setup.s3.env().items():
        monkeypatch.setenv(key, value)
    store = open_storage(root, endpoint_url=setup.s3.endpoint_url)
    catalog = Catalog(store)
    out: dict[str, object] = {}
    for table, key in (("submissions", "submission_id"), ("images", "image_id")):
        rows = catalog.read_table(table).drop_columns(list(RUN_COLUMNS)).to_pylist()
        out[table] = sorted(rows, key=lambda r: r[key])
    out["objects"] = store.list("objects")
    return out


def _task_runs(api_url: str) -> list[dict]:
    """Every ``inspect-chunk`` task run the Prefect server knows of."""
    body = json.dumps({"task_runs": {"name": {"like_": "inspect-chunk"}}}).encode()
    import urllib.request

    request = urllib.request.Request(f"{api_url}/task_runs/filter", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with open_direct(request, timeout=10) as response:
        return list(json.load(response))


def test_ingest_on_a_dask_cluster_matches_a_single_process_run(cluster, crowd_batch,
                                                               monkeypatch):
    single = _ingest(cluster, _new_root(cluster, "single"), workers=1)
    before = len(_task_runs(cluster.api_url))
    on_dask = _ingest(cluster, _new_root(cluster, "dask"), cluster=cluster.dask.address)
    assert on_dask["inspected_on"] == f"Dask cluster at {cluster.dask.address}"
    assert single["inspected_on"] == "in-process"
    for key in ("inputs", "accepted", "rejected", "reasons"):
        assert on_dask[key] == single[key]
    one = _catalog(cluster, f"s3://{BUCKET}/single", monkeypatch)
    other = _catalog(cluster, f"s3://{BUCKET}/dask", monkeypatch)
    assert one["submissions"] and one["images"]
    assert other == one
    # the chunks ran as Prefect task runs on the workers, all completed
    runs = _task_runs(cluster.api_url)[before:] if before else _task_runs(cluster.api_url)
    inputs = len((crowd_batch / "submissions.csv").read_text().splitlines()) - 1
    assert len(runs) >= -(-inputs // CHUNK)
    assert {r["state_type"] for r in runs} == {"COMPLETED"}


def test_a_worker_killed_mid_run_is_survived(cluster, monkeypatch):
    from distributed import Client

    reference = _catalog(cluster, f"s3://{BUCKET}/single", monkeypatch)
    root = _new_root(cluster, "killed")
    run = subprocess.Popen(_command(cluster, root, cluster=cluster.dask.address),
                           env=cluster.env, cwd=cluster.home, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    killed = None
    with Client(cluster.dask.address, timeout=10) as client:
        names = {addr: w["name"] for addr, w in client.scheduler_info()["workers"].items()}
        deadline = time.monotonic() + 120
        while killed is None and run.poll() is None and time.monotonic() < deadline:
            busy = [addr for addr, keys in client.processing().items() if keys]
            if busy:  # a chunk is running there: kill that worker now
                killed = int(str(names[busy[0]]).rsplit("-", 1)[1])
                cluster.dask.kill_worker(killed)
            time.sleep(0.005)
        out, err = run.communicate(timeout=300)
        assert killed is not None, f"no chunk was seen running\n{out}\n{err}"
        assert run.returncode == 0, f"{out}\n{err}\n{_logs(cluster)}"
        assert len(client.scheduler_info()["workers"]) == 1  # the run ended on the other one
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["inputs"] == len(reference["submissions"])  # type: ignore[arg-type]
    got = _catalog(cluster, root, monkeypatch)
    assert got == reference  # every input once, nothing doubled, nothing lost
    ids = [r["submission_id"] for r in got["submissions"]]  # type: ignore[attr-defined]
    assert len(ids) == len(set(ids))


@pytest.mark.usefixtures("prefect_harness")
def test_local_cluster_and_process_pool_give_the_same_catalog(crowd_batch, tmp_path):
    """``cluster="local"`` (a LocalCluster reporting to this flow's ephemeral Prefect API) and
    the default process pool: the same rows as a run in this process."""
    from flows.ingest import ingest

    catalogs, where = [], []
    for name, options in (("inline", {"workers": 1}), ("pool", {"workers": 2}),
                          ("local", {"cluster": "local", "workers": 2})):
        root = tmp_path / name
        (root / SALT_KEY).parent.mkdir(parents=True)
        (root / SALT_KEY).write_text("f" * 64)
        summary = ingest(source=str(crowd_batch), submissions=str(crowd_batch / "submissions.csv"),
                         root=str(root), chunk_size=8, **options)
        where.append(summary["inspected_on"])
        catalog = Catalog(open_storage(root))
        catalogs.append({t: sorted(catalog.read_table(t).drop_columns(list(RUN_COLUMNS))
                                   .to_pylist(), key=lambda r: r["submission_id"]
                                   if "submission_id" in r else r["image_id"])
                         for t in ("submissions", "images")})
    assert where == ["in-process", "process pool of 2", "local Dask cluster of 2"]
    # the LocalCluster's chunks reported to this flow's API (not each to a server of its own)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            name=TaskRunFilterName(like_="inspect-chunk")))
    assert len(runs) >= -(-len(catalogs[0]["submissions"]) // 8)
    assert catalogs[0]["submissions"]
    assert catalogs[1] == catalogs[0]
    assert catalogs[2] == catalogs[0]
