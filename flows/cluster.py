"""Where a flow's heavy chunk tasks run: in this process, a local process pool, or Dask.

``chunk_runner`` is the one switch. The flows submit the same Prefect task either way:

- ``cluster=None`` (the default): a pool of local processes (``forkserver``; threads lose to
  the GIL on decoding and hashing) runs the task's function, or this process when there is
  only one worker or one chunk. No Prefect task run per chunk: they would cost a round trip
  to the API each and show nothing the flow's own logs do not.
- ``cluster="tcp://host:8786"``: an existing ``dask scheduler`` and its workers, through
  prefect-dask's ``DaskTaskRunner``. Each chunk is a Prefect task run on a worker, reported to
  the flow's Prefect server: every worker needs ``PREFECT_API_URL`` (a real server; an
  ephemeral one lives in the flow's process only), the code and the credentials of the
  storage in its own environment. A chunk whose worker dies is run again by Dask on another
  worker; chunk work is idempotent (content-addressed writes), so nothing is doubled.
- ``cluster="local"``: a ``distributed.LocalCluster`` of worker processes, one thread each,
  started for the run (seconds), reporting to the flow's Prefect API.

Arguments travel pickled: never pass the hash index or a table, only chunk descriptions.

Publish's jobs (images, shards, crops) take a pool with ``map``: ``job_pool`` gives a local
process pool or, with a cluster, ``ClusterJobs``, which runs each job as a ``cluster-job``
Prefect task run on the cluster's workers.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.processes import end_with_process
from tasks.publish.writer import JobPool, worker_pool

_Result = TypeVar("_Result")

LOCAL_CLUSTER = "local"


class ChunkFuture(Protocol):
    """What a submitted chunk gives back."""

    def result(self) -> Any:
        """Block until the chunk is done; its return value (or its exception raised)."""
        ...


class ChunkRunner(Protocol):
    """Runs chunk tasks somewhere; ``submit`` returns at once."""

    where: str  # in words, for logs and summaries

    def submit(self, task: Any, **parameters: Any) -> ChunkFuture:
        """Start ``task`` (a Prefect task) on ``parameters``."""
        ...


class InProcess:
    """Runs each chunk at once, in this process (one worker, or a single chunk)."""

    where = "in-process"

    def submit(self, task: Any, **parameters: Any) -> ChunkFuture:
        """Run the task's function now; the future is already done."""
        fut: Future[Any] = Future()
        try:
            fut.set_result(task.fn(**parameters))
        except Exception as exc:  # noqa: BLE001 - raised again by result(), as a pool would
            fut.set_exception(exc)
        return fut


class ProcessPool:
    """The task's function in a pool of local processes."""

    def __init__(self, pool: ProcessPoolExecutor, workers: int) -> None:
        self.pool = pool
        self.where = f"process pool of {workers}"

    def submit(self, task: Any, **parameters: Any) -> ChunkFuture:
        """Queue the task's function (it must be importable: a module-level function)."""
        return self.pool.submit(task.fn, **parameters)


class DaskCluster:
    """Prefect task runs on a Dask cluster (prefect-dask)."""

    def __init__(self, runner: Any, where: str) -> None:
        self.runner = runner
        self.where = where

    def submit(self, task: Any, **parameters: Any) -> ChunkFuture:
        """A Prefect task run on some worker of the cluster."""
        # Not quoted (unlike commit_decided's records): with quoted parameters the records
        # came back with their planned inputs as plain tuples (prefect-dask 0.3.7; not
        # investigated further), so Prefect walks each chunk's items for task inputs.
        return self.runner.submit(task, parameters=parameters)  # type: ignore[no-any-return]


@contextmanager
def chunk_runner(cluster: str | None, *, workers: int, chunks: int,
                 preload: tuple[str, ...] = ()) -> Iterator[ChunkRunner]:
    """The runner for a flow's chunk tasks (see the module docstring); closed on exit.

    ``workers``: processes of the local pool or of a ``local`` cluster; ``chunks``: how many
    chunks the run will submit (one chunk, or one worker, runs in this process). ``preload``:
    modules the pool's fork server imports once, so that each worker starts warm.
    """
    if cluster:
        with dask_runner(cluster, workers=workers) as runner:
            yield runner
        return
    if workers <= 1 or chunks <= 1:
        yield InProcess()
        return
    context = multiprocessing.get_context("forkserver")
    if preload:
        context.set_forkserver_preload(list(preload))
    n = min(workers, chunks)
    with ProcessPoolExecutor(max_workers=n, mp_context=context,
                             initializer=end_with_process, initargs=(os.getpid(),)) as pool:
        # Starting a worker blocks its submit until the fork server has imported ``preload``
        # (about 0.4 s): do it in a thread, so the caller reads its catalog meanwhile.
        warm = threading.Thread(target=_start_workers, args=(pool, n), name="pool-warm-up")
        warm.start()
        try:
            yield ProcessPool(pool, n)
        finally:
            warm.join()


def _start_workers(pool: ProcessPoolExecutor, n: int) -> None:
    """Make the pool start its ``n`` workers now (one trivial job each)."""
    for fut in [pool.submit(os.getpid) for _ in range(n)]:
        fut.result()


@contextmanager
def dask_runner(cluster: str, *, workers: int) -> Iterator[DaskCluster]:
    """prefect-dask's ``DaskTaskRunner`` for a scheduler address or a ``local`` cluster."""
    from prefect_dask import DaskTaskRunner

    if cluster == LOCAL_CLUSTER:
        env = _prefect_env()
        runner = DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
            "n_workers": workers, "threads_per_worker": 1, "processes": True,
            "dashboard_address": None, "env": env})
        where = f"local Dask cluster of {workers}"
    else:
        runner = DaskTaskRunner(address=cluster)
        where = f"Dask cluster at {cluster}"
    with runner:
        yield DaskCluster(runner, where)


def _prefect_env() -> dict[str, str]:
    """The environment a local cluster's workers need to report to this flow's Prefect API
    (an ephemeral server included: without it each worker would start its own)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    env = {"PREFECT_API_URL": api_url.rstrip("/")}
    for name in ("PREFECT_API_KEY", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_HOME"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


@task(name="cluster-job", task_run_name="{function.__name__}", cache_policy=NO_CACHE)
def run_job(function: Callable[[Any], Any], job: Any) -> Any:
    """One job on a cluster worker: ``function(job)`` (a module-level function and a small
    picklable job description)."""
    return function(job)


class ClusterJobs:
    """A Dask cluster as a job pool: each job a ``cluster-job`` Prefect task run."""

    def __init__(self, runner: DaskCluster) -> None:
        self.runner = runner

    def map(self, fn: Callable[[Any], _Result], jobs: Iterable[Any], /) -> Iterator[_Result]:
        """Submit every job now; the results in job order (a job whose worker died is run
        again by Dask elsewhere: jobs write whole files, so a rerun only rewrites them)."""
        futures = [self.runner.submit(run_job, function=fn, job=job) for job in jobs]
        return (future.result() for future in futures)


@contextmanager
def job_pool(cluster: str | None, *, workers: int) -> Iterator[tuple[JobPool | None, str]]:
    """Where publish's jobs run, and that place in words: ``cluster`` (an address or
    ``local``) through prefect-dask, else ``worker_pool(workers)`` (None: this process)."""
    if cluster:
        with dask_runner(cluster, workers=workers) as runner:
            yield ClusterJobs(runner), runner.where
        return
    with worker_pool(workers) as pool:
        yield pool, (f"process pool of {workers}" if pool is not None else "in-process")
