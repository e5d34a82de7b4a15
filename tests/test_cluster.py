"""Ingest and publish on a real Dask cluster: a ``dask scheduler`` and three ``dask worker``
processes on 127.0.0.1, a real Prefect server, source and dataset root on S3 (moto). The
cluster's catalog must equal a single-process run's, row for row (run columns aside), its
release the single-process release byte for byte, and a worker killed mid-run must cost
nothing: its chunk or shard runs again elsewhere and nothing is doubled. (Each kill test
takes one worker away for good.)

The workers share no folder with the flows, as machines of a real cluster: each has a
temporary folder of its own, and where the machine allows it (``can_hide_folders``) the
flows' temporary folder, where publish stages its small files, is hidden from them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from schemas.tables import RUN_COLUMNS
from tasks.catalog import SALT_KEY, Catalog
from tasks.storage import open_storage
from tests.catalogs import make_release_catalog
from tests.servers import (
    DaskCluster,
    S3Endpoint,
    can_hide_folders,
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
SHARD = 4  # small shards, for the same reason
RUN_FLOW = (  # module, flow, JSON parameters: the summary on the last line of stdout
    "import importlib, json, sys\n"
    "flow = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])\n"
    "print(json.dumps(flow(**json.loads(sys.argv[3])), default=str))\n"
)
WORKERS = 3


@dataclass(frozen=True)
class Setup:
    """The servers of this module and the environment every process of a run gets."""

    api_url: str
    env: dict[str, str]
    dask: DaskCluster
    s3: S3Endpoint
    home: Path
    flow_tmp: Path  # the flows' TMPDIR
    hidden: bool  # whether the workers see it empty


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Endpoint,
            crowd_batch: Path) -> Iterator[Setup]:
    """Prefect server, Dask scheduler and 3 workers, the crowd batch uploaded to S3."""
    home = tmp_path_factory.mktemp("cluster")
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    prefix = SOURCE.removeprefix(f"s3://{BUCKET}/")
    for path in sorted(crowd_batch.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(crowd_batch)}",
                              Body=path.read_bytes())
    flow_tmp, worker_tmp = home / "flow-tmp", home / "worker-tmp"
    flow_tmp.mkdir()
    worker_tmp.mkdir()
    (flow_tmp / FLOW_MARK).write_text("the flows' temporary folder")
    hidden = can_hide_folders()
    with prefect_server(home / "prefect") as api_url:
        env = {**isolated_prefect_env(home / "prefect", api_url=api_url), **s3_server.env()}
        with dask_cluster(home / "dask", env={**env, "TMPDIR": str(worker_tmp)},
                          n_workers=WORKERS, hidden=flow_tmp if hidden else None) as dask:
            yield Setup(api_url, {**env, "TMPDIR": str(flow_tmp)}, dask, s3_server, home,
                        flow_tmp, hidden)


FLOW_MARK = "flow-only.txt"


def test_the_workers_share_no_folder_with_the_flows(cluster):
    from distributed import Client

    if not cluster.hidden:
        pytest.skip("this machine cannot hide a folder from a process (no unshare -m): the "
                    "workers see the flows' temporary folder")
    flow_tmp = str(cluster.flow_tmp)
    with Client(cluster.dask.address, timeout=10) as client:
        seen = client.run(lambda: (os.listdir(flow_tmp), tempfile.gettempdir()))
    assert len(seen) == WORKERS
    for listing, temp in seen.values():
        assert listing == [] and temp == str(cluster.home / "worker-tmp")
    assert (cluster.flow_tmp / FLOW_MARK).is_file()  # still there for the flows


def _command(setup: Setup, root: str, **options: object) -> list[str]:
    args = {"source": SOURCE, "submissions": f"{SOURCE}/submissions.csv", "root": root,
            "s3_endpoint_url": setup.s3.endpoint_url, "chunk_size": CHUNK, **options}
    return [sys.executable, "-c", RUN_FLOW, "flows.ingest", "ingest", json.dumps(args)]


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


def _run_killing_a_worker(setup: Setup, command: list[str]) -> str:
    """Run ``command``; SIGKILL the first worker seen running a task. Its stdout."""
    from distributed import Client

    run = subprocess.Popen(command, env=setup.env, cwd=setup.home, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    killed = None
    with Client(setup.dask.address, timeout=10) as client:
        names = {addr: w["name"] for addr, w in client.scheduler_info()["workers"].items()}
        deadline = time.monotonic() + 120
        while killed is None and run.poll() is None and time.monotonic() < deadline:
            busy = [addr for addr, keys in client.processing().items() if keys]
            if busy:  # a task is running there: kill that worker now
                killed = int(str(names[busy[0]]).rsplit("-", 1)[1])
                setup.dask.kill_worker(killed)
            time.sleep(0.005)
        out, err = run.communicate(timeout=300)
        assert killed is not None, f"no task was seen running\n{out}\n{err}"
        assert run.returncode == 0, f"{out}\n{err}\n{_logs(setup)}"
        # the run ended on the others
        assert len(client.scheduler_info()["workers"]) == len(names) - 1
    return out


def test_a_worker_killed_mid_run_is_survived(cluster, monkeypatch):
    reference = _catalog(cluster, f"s3://{BUCKET}/single", monkeypatch)
    root = _new_root(cluster, "killed")
    out = _run_killing_a_worker(cluster, _command(cluster, root, cluster=cluster.dask.address))
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["inputs"] == len(reference["submissions"])  # type: ignore[arg-type]
    got = _catalog(cluster, root, monkeypatch)
    assert got == reference  # every input once, nothing doubled, nothing lost
    ids = [r["submission_id"] for r in got["submissions"]]  # type: ignore[attr-defined]
    assert len(ids) == len(set(ids))


def _publish_command(setup: Setup, root: str, **options: object) -> list[str]:
    args = {"root": root, "version": "v1", "shard_max_count": SHARD, "crops": True,
            "s3_endpoint_url": setup.s3.endpoint_url, **options}
    return [sys.executable, "-c", RUN_FLOW, "flows.publish", "publish", json.dumps(args)]


def _publish(setup: Setup, root: str, **options: object) -> dict:
    done = subprocess.run(_publish_command(setup, root, **options), env=setup.env,
                          cwd=setup.home, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{_logs(setup)}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def release_roots(cluster: Setup) -> list[str]:
    """Three S3 roots holding the same catalog, ready to publish."""
    from tasks.storage import S3Storage

    with pytest.MonkeyPatch.context() as patch:
        for key, value in cluster.s3.env().items():
            patch.setenv(key, value)
        make_release_catalog(S3Storage(f"s3://{BUCKET}/release-a",
                                       endpoint_url=cluster.s3.endpoint_url), n=48, seed=11)
    client = cluster.s3.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="release-a/") for o in page.get("Contents", [])]
    for name in ("release-b", "release-c"):
        for key in keys:
            client.copy_object(Bucket=BUCKET, CopySource={"Bucket": BUCKET, "Key": key},
                               Key=f"{name}/{key.removeprefix('release-a/')}")
    return [f"s3://{BUCKET}/release-{x}" for x in "abc"]


def _release_files(setup: Setup, root: str) -> dict[str, str]:
    """Every file of ``root``'s release v1 and its sha256, from its ``SHA256SUMS``."""
    client = setup.s3.client()
    key = f"{root.removeprefix(f's3://{BUCKET}/')}/releases/v1/SHA256SUMS"
    text = client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    return {name: digest for digest, name in (line.split("  ") for line in text.splitlines())}


def _keys(setup: Setup, root: str) -> list[str]:
    """Every key under ``root``."""
    prefix = root.removeprefix(f"s3://{BUCKET}/") + "/"
    pages = setup.s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                         Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _cluster_job_runs(api_url: str) -> list[dict]:
    """Every ``cluster-job`` task run (publish's jobs on the cluster, named after the job's
    function) the server knows of."""
    body = json.dumps({"task_runs": {"name": {"like_": "run_"}}}).encode()
    import urllib.request

    request = urllib.request.Request(f"{api_url}/task_runs/filter", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with open_direct(request, timeout=10) as response:
        return [r for r in json.load(response) if r["task_key"].startswith("run_job")]


def test_publish_on_a_dask_cluster_writes_the_same_release(cluster, release_roots):
    single_root, dask_root, _ = release_roots
    single = _publish(cluster, single_root, workers=1)
    on_dask = _publish(cluster, dask_root, cluster=cluster.dask.address)
    assert single["written_on"] == "in-process"
    assert on_dask["written_on"] == f"Dask cluster at {cluster.dask.address}"
    one, other = _release_files(cluster, single_root), _release_files(cluster, dask_root)
    assert sum(name.startswith("shards/") for name in one) == single["shards"] >= 5
    assert any(name.startswith("crops/shards/") for name in one)
    assert other == one  # every file, shards and documents, byte for byte
    # the workers staged under the root (they cannot see the flow's folder), and the
    # commit left nothing there or in the flows' temporary folder
    assert not [k for k in _keys(cluster, dask_root) if "/releases/.staging-" in k]
    assert sorted(p.name for p in cluster.flow_tmp.iterdir()) == [FLOW_MARK]
    # the shard jobs ran as Prefect task runs on the workers (the one crop job and the one
    # image job of so small a release run in the flow's process)
    done = [r for r in _cluster_job_runs(cluster.api_url) if r["state_type"] == "COMPLETED"]
    assert sum(r["name"] == "run_shard_job" for r in done) >= single["shards"]


def test_a_worker_killed_mid_publish_is_survived(cluster, release_roots):
    single_root, _, killed_root = release_roots
    reference = _release_files(cluster, single_root)
    out = _run_killing_a_worker(cluster, _publish_command(cluster, killed_root,
                                                          cluster=cluster.dask.address))
    assert json.loads(out.strip().splitlines()[-1])["images"] > 0
    assert _release_files(cluster, killed_root) == reference


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
