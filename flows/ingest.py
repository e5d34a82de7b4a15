"""The ``ingest`` flow: mining ingestion with exact and perceptual dedup into the catalog."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections import deque
from pathlib import PurePosixPath
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from flows.cluster import ChunkFuture, ChunkRunner, InProcess, chunk_runner
from flows.root_lock import locked_root
from flows.run_names import run_name
from schemas.settings import DedupSettings, IngestSettings, default_workers
from schemas.taxonomy import load_taxonomy
from tasks import progress
from tasks.catalog import Catalog
from tasks.ingest.dedup import DuplicateDecision, KnownImages
from tasks.ingest.intake import (
    PlannedInput,
    nested_root_folder,
    parse_submissions,
    plan_inputs,
    without_folder,
)
from tasks.ingest.reading import InspectedInput, inspect_chunk
from tasks.ingest.steps import (
    build_records,
    commit_window,
    decide_window,
    load_known_images,
    seen_submission_ids,
)
from tasks.ingest.summary import summarize_run, summary_markdown
from tasks.storage import SourceError, Storage, open_storage

DEFAULT_ROOT = "./hagrid-root"


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def read_submissions_table(uri: str, *, endpoint_url: str | None) -> Any:
    """Fetch and parse the submissions table (local path or ``s3://``)."""
    parent, name = str(PurePosixPath(uri).parent), PurePosixPath(uri).name
    if uri.startswith("s3://"):
        parent = uri.rsplit("/", 1)[0]
    store = open_storage(parent, endpoint_url=endpoint_url)
    try:
        data = store.read_bytes(name)
    except FileNotFoundError as exc:
        raise SourceError(f"submissions table not found: {uri}") from exc
    except Exception as exc:
        raise SourceError(f"cannot read submissions table {uri}: {exc}") from exc
    return parse_submissions(data, name=name)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def list_source(source: Storage, root: Storage) -> list[str]:
    """Every key of the source (the broken-source check happens here) but a root's in it."""
    source.check()
    return without_folder(source.list(), nested_root_folder(source.uri, root.uri))


# Read, check, hash and store one chunk of inputs: phase 1, anywhere (flows.cluster). Its
# function is ``tasks.ingest.reading.inspect_chunk`` itself, so a process pool can pickle it.
inspect_chunk_task = task(name="inspect-chunk", cache_policy=NO_CACHE)(inspect_chunk)


@task(cache_policy=NO_CACHE)
def commit_decided(catalog: Catalog, inspected: list[InspectedInput],
                   decisions: list[DuplicateDecision | None], *, source_uri: str, batch_id: str,
                   salt: str, keep_user_ids: bool = False) -> Any:
    """A window's catalog batch from its inputs and duplicate decisions, committed atomically."""
    subs, images = build_records(inspected, decisions, source=source_uri, batch_id=batch_id,
                                 salt=salt, now=dt.datetime.now(dt.UTC),
                                 keep_user_ids=keep_user_ids)
    commit_window(catalog, batch_id=batch_id, submissions=subs, images=images,
                  inspected=inspected, decisions=decisions)
    return subs


@flow(name="ingest", flow_run_name=run_name("ingest", "source"), log_prints=True)
def ingest(source: str, submissions: str, root: str = DEFAULT_ROOT, min_side: int = 720,
           taxonomy: str = "hagrid_v1", commit_every: int = 2048, chunk_size: int = 256,
           radius: int = 12, min_similarity: float = 0.95, max_local_residual: float = 0.63,
           s3_endpoint_url: str | None = None, wait_for_lock: float = 0.0,
           max_bytes: int = 100_000_000, keep_user_ids: bool = False,
           cluster: str | None = None, workers: int | None = None) -> dict[str, Any]:
    """Ingest a crowd batch from ``source`` (folder or ``s3://bucket/prefix``) into ``root``.

    Every input ends in ``catalog/submissions`` exactly once, accepted or rejected with a
    reason; accepted images are stored under ``objects/`` and listed in ``catalog/images``.
    Reruns skip inputs already recorded; a killed run resumes from its last committed batch.
    One run writes to a root at a time: another run holding it refuses this one
    (``RootLocked``) unless it ends within ``wait_for_lock`` seconds. Worker ids are stored
    as a salted hash (``user_key``); ``keep_user_ids`` keeps ids that are already hex hashes
    as they are (``import-hagrid --keep-user-ids``: a published dataset's subject ids).

    Inspection (read, sha256, decode, hashes, thumbnail, object write) runs in chunks of
    ``chunk_size`` on ``workers`` local processes (default: the usable cores), or with
    ``cluster`` on a Dask cluster (``tcp://host:8786``, or ``local``; ``flows.cluster``);
    duplicate decisions and commits run here, window by window in input order, while the
    next window is inspected.
    """
    settings = IngestSettings(min_side=min_side, taxonomy=taxonomy, commit_every=commit_every,
                              chunk_size=chunk_size, max_bytes=max_bytes,
                              dedup=DedupSettings(radius=radius, min_similarity=min_similarity,
                                                  max_local_residual=max_local_residual))
    src = open_storage(source, endpoint_url=s3_endpoint_url)
    catalog = Catalog(open_storage(root, endpoint_url=s3_endpoint_url))
    get_run_logger().info("ingest %s (table %s) into %s", src.uri, submissions,
                          catalog.root.uri)
    with locked_root(catalog.root, command="ingest", wait_s=wait_for_lock):
        catalog.remove_uncommitted()  # under the lock: only a dead run's files
        summary = _ingest_locked(src, catalog, submissions, settings=settings,
                                 s3_endpoint_url=s3_endpoint_url,
                                 keep_user_ids=keep_user_ids, cluster=cluster,
                                 workers=workers or default_workers())
    create_markdown_artifact(key="ingest-summary", markdown=summary_markdown(summary),
                             description=f"ingest of {source}")
    get_run_logger().info(
        "ingest done in %.1f s: %d inputs (%d already seen, skipped), %d accepted, %d "
        "rejected %s", summary["elapsed_s"], summary["inputs"],
        summary["skipped_already_seen"], summary["accepted"], summary["rejected"],
        summary["reasons"])
    return summary


def _ingest_locked(src: Storage, catalog: Catalog, submissions: str, *,
                   settings: IngestSettings, s3_endpoint_url: str | None,
                   keep_user_ids: bool = False, cluster: str | None = None,
                   workers: int = 1) -> dict[str, Any]:
    started = time.perf_counter()
    table = read_submissions_table(submissions, endpoint_url=s3_endpoint_url)
    planned = plan_inputs(table, source=src.uri, source_keys=list_source(src, catalog.root),
                          taxonomy=load_taxonomy(settings.taxonomy))
    # the workers start while the catalog is read (at most one chunk: this process reads it)
    with chunk_runner(cluster, workers=workers, chunks=-(-len(planned) // settings.chunk_size),
                      preload=(inspect_chunk.__module__,)) as runner:
        seen = seen_submission_ids(catalog)
        todo = [p for p in planned if p.submission_id not in seen]
        known = load_known_images(catalog, settings=settings)
        get_run_logger().info("%d inputs in the table, %d already in the catalog: %d to "
                              "ingest; inspection: %s", len(planned), len(planned) - len(todo),
                              len(todo), runner.where)
        results = run_windows(src, catalog, todo, known, settings=settings, runner=runner,
                              keep_user_ids=keep_user_ids)
        where = runner.where
    kept = {r["image_id"]: r["file"] for t in results for r in
            t.select(["image_id", "file"]).to_pylist() if r["image_id"]}
    summary = summarize_run(results, kept_files=kept, skipped=len(planned) - len(todo),
                            elapsed_s=time.perf_counter() - started)
    summary["root"] = catalog.root.uri
    summary["inspected_on"] = where
    return summary


def run_windows(src: Storage, catalog: Catalog, todo: list[PlannedInput], known: KnownImages,
                *, settings: IngestSettings, runner: ChunkRunner | None = None,
                keep_user_ids: bool = False) -> list[Any]:
    """Inspect the windows of inputs in chunks on ``runner``; decide and commit each window
    in input order in this process, while the next window's chunks are being inspected."""
    runner = runner or InProcess()
    salt = catalog.salt()
    run_stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    run_tag = f"{run_stamp}-{secrets.token_hex(3)}"
    windows = [todo[i:i + settings.commit_every] for i in range(0, len(todo), settings.commit_every)]
    results: list[Any] = []
    done = 0
    progress.report("ingest", 0, len(todo))
    in_flight: deque[tuple[int, list[tuple[list[PlannedInput], ChunkFuture]]]] = deque()
    for w, window in enumerate(windows):
        chunks = [window[i:i + settings.chunk_size]
                  for i in range(0, len(window), settings.chunk_size)]
        in_flight.append((w, [(c, runner.submit(inspect_chunk_task, source=src, root=catalog.root,
                                                items=c, settings=settings)) for c in chunks]))
        if len(in_flight) > WINDOWS_AHEAD:
            done = _commit_next(in_flight, catalog, known, results, done=done, total=len(todo),
                                commit_every=settings.commit_every,
                                source_uri=src.uri, run_tag=run_tag, salt=salt,
                                keep_user_ids=keep_user_ids)
    while in_flight:
        done = _commit_next(in_flight, catalog, known, results, done=done, total=len(todo),
                            commit_every=settings.commit_every, source_uri=src.uri, run_tag=run_tag, salt=salt,
                            keep_user_ids=keep_user_ids)
    return results


WINDOWS_AHEAD = 1  # windows being inspected while one is decided and committed


def _commit_next(in_flight: deque[tuple[int, list[tuple[list[PlannedInput], ChunkFuture]]]],
                 catalog: Catalog, known: KnownImages, results: list[Any], *, done: int,
                 total: int, commit_every: int,
                 source_uri: str, run_tag: str, salt: str, keep_user_ids: bool) -> int:
    """Decide the oldest window's chunks in order as each arrives (deciding chunk by chunk
    equals deciding the window at once: ``known`` grows with each accepted image), then
    commit the window; returns the inputs done."""
    w, chunks = in_flight.popleft()
    inspected: list[InspectedInput] = []
    decisions: list[DuplicateDecision | None] = []
    for items, fut in chunks:  # decided chunk by chunk, in order, as they arrive
        got = fut.result()
        decisions += decide_window(got, known)
        inspected += got
        done += len(items)
        progress.report("ingest", done, total)
    # quote: Prefect would otherwise walk every input's record for task inputs (~0.3 ms
    # each); the task gets the lists themselves
    results.append(commit_decided(catalog, quote(inspected),  # type: ignore[call-overload]
                                  quote(decisions),
                                  source_uri=source_uri,
                                  batch_id=f"{run_tag}-{w:05d}", salt=salt,
                                  keep_user_ids=keep_user_ids))
    get_run_logger().info("window %d of %d committed: %d of %d inputs ingested", w + 1,
                          -(-total // commit_every), done, total)
    return done
