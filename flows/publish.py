"""The ``publish`` flow: stage 5, an immutable release built from the catalog.

Reads the images that passed validation and filtration and have final boxes, assigns
user-disjoint sticky splits, writes shards, manifests and exports into a staging folder,
runs the data contracts (a failure stops the release), writes the report, the data card and
the checksums, then commits the folder as ``ROOT/releases/<version>/`` in one step.

The run's Prefect artifacts (``release-summary``, or ``release-refused``) are Markdown with
the tables and the contract results; the release's files are named by path in code spans,
not linked: a ``file://`` or ``s3://`` link does nothing from the Prefect UI's http page.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from data_contracts.page import render_page
from data_contracts.runner import ContractReport, run_contracts
from flows.cluster import ClusterJobs, job_pool
from flows.ingest import DEFAULT_ROOT
from flows.root_lock import locked_root
from flows.run_names import run_name
from schemas.release import (
    CHECKSUMS,
    CONTRACTS_PAGE,
    CONTRACTS_RESULTS,
    CROPS,
    DATA_CARD,
    DATA_DOCS,
    RELEASE_INFO,
    REPORT,
    SPLITS,
    PublishSettings,
    check_version,
    parse_fractions,
)
from schemas.taxonomy import load_taxonomy
from tasks.catalog import Catalog
from tasks.publish.assembly import (
    SPOOL,
    SplitPlan,
    contract_frames,
    export_files,
    plan_split,
    publish_images,
    release_info,
    shard_order,
    write_split_shards,
)
from tasks.publish.crops import write_crops
from tasks.publish.data_card import data_card, release_figures
from tasks.publish.exports import json_bytes
from tasks.publish.provenance import provenance_notes, simulation_provenance
from tasks.publish.remote import RemoteStaging, remote_staging
from tasks.publish.report import write_report
from tasks.publish.samples import remote_shard_reader, shard_reader
from tasks.publish.selection import (
    SplitResult,
    rejection_summary,
    release_images,
    sample_table,
    split_counts,
    split_release,
)
from tasks.publish.shards import group_by_shard
from tasks.publish.summary import refused_markdown, release_markdown, split_shares
from tasks.publish.writer import (
    JobPool,
    WrittenShard,
    check_new_release,
    checksums,
    commit_release,
    discard,
    keep_refused_docs,
    parquet_bytes,
    shard_members,
    staging_dir,
    write_file,
)
from tasks.storage import LocalStorage, Storage, open_storage

UNKNOWN_HAND = "unknown"  # how the report shows a leading hand the manifest leaves null


class ContractsFailed(RuntimeError):
    """The data contracts failed: the release was not written."""

    def __init__(self, message: str, report: ContractReport | None = None) -> None:
        super().__init__(message)
        self.report = report  # None after a round trip through pickle


@task(cache_policy=NO_CACHE)
def select_images(root: Storage) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Images that belong in the release, and their final boxes."""
    images, boxes = release_images(Catalog(root))
    if images.empty:
        raise ValueError("nothing to publish: no image passed validation, filtration and "
                         "annotation yet")
    return images, boxes


@task(cache_policy=NO_CACHE)
def assign(root: Storage, images: pd.DataFrame, settings: PublishSettings) -> SplitResult:
    """User-disjoint, link-aware, sticky split assignment."""
    return split_release(Catalog(root), images, fractions=settings.fractions, seed=settings.seed)


@task(cache_policy=NO_CACHE)
def write_shards_and_manifests(
        root: Storage, staging: Path, images: pd.DataFrame, boxes: pd.DataFrame,
        assignment: pd.Series, settings: PublishSettings, pool: JobPool | None,
        endpoint_url: str | None, remote: RemoteStaging | None = None
) -> tuple[dict[str, pa.Table], dict[str, pa.Table], dict[str, WrittenShard],
           dict[str, float]]:
    """Make every published image, plan, write and check every split's shards; write the
    manifests; with ``settings.crops`` also the crops view, cut from the written shards.
    The image and shard jobs run in ``pool`` (``worker_pool``; None: in this process), and
    with ``remote`` stage their files under the root (``tasks.publish.remote``).
    Returns the manifests and crops manifests per split, shard name -> what was written
    (crop shards included) and timings."""
    logger = get_run_logger()
    t0 = time.perf_counter()
    spool = Path(SPOOL) if remote is not None else staging / SPOOL
    published = publish_images(root, spool, images, shard_order(assignment),
                               pool=pool, endpoint_url=endpoint_url, remote=remote)
    t1 = time.perf_counter()
    logger.info("images: %d made in %.1f s", len(published), t1 - t0)
    samples = sample_table(images, boxes, assignment, published)
    plans: list[SplitPlan] = [plan_split(samples, published, split=s, settings=settings)
                              for s in SPLITS if s in set(assignment)]
    for p in plans:
        write_file(staging, f"manifests/{p.split}.parquet", parquet_bytes(p.manifest))
    t2 = time.perf_counter()
    written = write_split_shards(staging, plans, pool=pool, remote=remote)
    t3 = time.perf_counter()
    _log_shards(written, plans, seconds=t3 - t2)
    manifests = {p.split: p.manifest for p in plans}
    crops: dict[str, pa.Table] = {}
    if settings.crops:  # cut from the staged shards, in the same pool
        crops, crop_shards = write_crops(staging, manifests, spool=spool, settings=settings,
                                         pool=pool, remote=remote)
        for split, table in crops.items():
            write_file(staging, f"{CROPS}/manifests/{split}.parquet", parquet_bytes(table))
        written.update(crop_shards)
        logger.info("crops: %d in %d shards (%s) in %.1f s",
                    sum(t.num_rows for t in crops.values()), len(crop_shards),
                    _megabytes(crop_shards), time.perf_counter() - t3)
    discard(staging / SPOOL)
    if remote is not None:
        remote.remove(SPOOL)
    t4 = time.perf_counter()
    return manifests, crops, written, {"images_s": t1 - t0, "manifests_s": t2 - t1,
                                       "shards_s": t3 - t2, "crops_s": t4 - t3}


def _log_shards(written: Mapping[str, WrittenShard], plans: list[SplitPlan], *,
                seconds: float) -> None:
    """A run-log line per split (its shards, their size, its images), then the total."""
    logger = get_run_logger()
    names: list[str] = []
    for p in plans:
        shards = list(group_by_shard(p.plan))
        names += shards
        logger.info("shards %s: %d (%s, %d images)", p.split, len(shards),
                    _megabytes(written, shards), p.manifest.num_rows)
    logger.info("shards written in %.1f s: %d (%s)", seconds, len(names),
                _megabytes(written, names))


def _megabytes(written: Mapping[str, WrittenShard], names: Iterable[str] | None = None
               ) -> str:
    """The size of the written shards ``names`` (default all) in MB (10^6 bytes), for a
    run-log line."""
    total = sum(written[name].size for name in (written if names is None else names))
    return f"{total / 1e6:,.1f} MB"


@task(cache_policy=NO_CACHE)
def check_contracts(root: Storage, staging: Path, manifest: pd.DataFrame,
                    links: list[tuple[str, str]], settings: PublishSettings,
                    version: str, members: pd.DataFrame) -> ContractReport:
    """Run the data contracts over the catalog and the staged release (``members``: what
    its shards hold, ``writer.shard_members``); keep the Data Docs, the contracts page and
    its results (``report/contracts.html``, ``contracts.json``)."""
    started = time.perf_counter()
    frames = contract_frames(Catalog(root), manifest, members, links)
    report = run_contracts(frames, taxonomy=load_taxonomy(settings.taxonomy),
                           docs_dir=staging / DATA_DOCS, run_name=version)
    tally = report.tally().values()
    get_run_logger().info("contracts: %d passed, %d failed on %d tables in %.1f s",
                          sum(t["passed"] for t in tally), sum(t["failed"] for t in tally),
                          len(tally), time.perf_counter() - started)
    page = render_page(report.results, title=f"{settings.title}: data contracts of release "
                       f"{version}", links=_contracts_links(success=report.success),
                       docs_href=f"../{DATA_DOCS}/index.html")
    write_file(staging, f"{REPORT}/{CONTRACTS_PAGE}", page.encode())
    write_file(staging, f"{REPORT}/{CONTRACTS_RESULTS}", json_bytes(report.as_dict()))
    return report


def _contracts_links(*, success: bool) -> list[tuple[str, str]]:
    """The contracts page's links, relative to ``report/``: a refused release keeps only the
    page, its JSON and the Data Docs (``keep_refused_docs``)."""
    release = [("index.html", "Quality report"), (f"../{DATA_CARD}", "Data card")]
    return [*(release if success else []),
            (f"../{DATA_DOCS}/index.html", "Great Expectations Data Docs"),
            (CONTRACTS_RESULTS, "Results as JSON")]


@task(cache_policy=NO_CACHE)
def write_documents(root: Storage, staging: Path, manifest: pd.DataFrame, *, version: str,
                    settings: PublishSettings, split: SplitResult,
                    contracts: ContractReport, endpoint_url: str | None = None,
                    crops: dict[str, int] | None = None,
                    remote: RemoteStaging | None = None) -> dict[str, Any]:
    """Report, release.json and the data card; returns release.json's content.

    ``crops``: crops per split of the crops view, when one was written; ``remote``: where
    the shards are staged, when not in ``staging``."""
    taxonomy = load_taxonomy(settings.taxonomy)
    catalog = Catalog(root)
    rejections = rejection_summary(catalog)
    provenance = simulation_provenance(catalog, manifest["image_id"], endpoint_url=endpoint_url)
    notes = provenance_notes(provenance)
    hands = manifest["leading_hand"].astype(object).where(manifest["leading_hand"].notna(),
                                                           UNKNOWN_HAND)  # plotted by name
    write_report(manifest.assign(leading_hand=hands), rejections=rejections,
                 out_dir=staging / REPORT, title=f"{settings.title}: release {version}",
                 gestures=taxonomy.gestures, notes=notes,
                 read_image=shard_reader(staging) if remote is None
                 else remote_shard_reader(remote),
                 contracts=contracts.tally())
    counts = split_counts(manifest, taxonomy.gestures,
                          [s for s in SPLITS if s in set(manifest["split"])])
    info = release_info(version=version, settings=settings, counts=counts, split=split.info,
                        contracts=contracts.checked, figures=release_figures(manifest),
                        batches=catalog.committed_batches())
    info["simulation"] = provenance
    if crops:
        info["crops"] = dict(crops)
    write_file(staging, RELEASE_INFO, json_bytes(info))
    # the top-level entries of the release, wherever they are staged
    files = sorted({p.relative_to(staging).as_posix() for p in staging.iterdir()}
                   | {name.split("/")[0] for name in (remote.files() if remote else [])})
    card = data_card(version=version, title=settings.title, licence=settings.licence,
                     manifest=manifest, counts=counts, rejections=rejections, info=info,
                     taxonomy=settings.taxonomy, files=[*files, DATA_CARD, CHECKSUMS],
                     notes=notes)
    write_file(staging, DATA_CARD, card.encode())
    return info


@flow(name="publish", flow_run_name=run_name("publish", "version"), log_prints=True)
def publish(root: str = DEFAULT_ROOT, version: str = "v1", fractions: str | None = None,
            shard_max_bytes: int = 1 << 30, shard_max_count: int = 10_000, yolo: bool = False,
            seed: int = 0, taxonomy: str = "hagrid_v1", class_order: str = "hagrid",
            workers: int = 2, s3_endpoint_url: str | None = None,
            wait_for_lock: float = 0.0, crops: bool = False, crop_size: int = 256,
            crop_scale: float = 2.0, cluster: str | None = None) -> dict[str, Any]:
    """Build the immutable release ``ROOT/releases/<version>/`` from the catalog.

    ``crops``: also write the crops view ``crops/manifests/<split>.parquet`` and
    ``crops/shards/<split>-NNNNNN.tar`` (``schemas.release.CROPS_MANIFEST``): per hand box a
    square of side ``crop_scale`` x the box's longer side, centred on it, resized to
    ``crop_size`` px (``tasks.publish.crops``).

    ``fractions``: e.g. ``92/8`` or ``76/9/15`` (``parse_fractions``); default the
    taxonomy's (HaGRID v1's 92/8 train/test, v2's 76/9/15 train/val/test). ``class_order``:
    ``hagrid`` (HaGRID's class indices) or ``taxonomy``.

    The image, shard and crop jobs run on ``workers`` local processes (a local root; an S3
    root's objects are read in this process), or with ``cluster`` on a Dask cluster
    (``tcp://host:8786`` or ``local``; ``flows.cluster.job_pool``). With a local root the
    cluster's workers write into this run's staging folder under the root, so they must
    mount the root at the same path (``StagingNotVisible`` otherwise); with an S3 root they
    share no folder with this process: they stage their files under the root's
    ``releases/.staging-<version>-<hex>/``, copied into the release server-side at the
    commit (``tasks.publish.remote``). The summary's ``written_on`` says where the jobs ran.

    Refuses a version that exists. A failing data contract stops the release: nothing is
    written under ``releases/<version>``, the Data Docs of the failed run are kept in
    ``releases/.refused-<version>/data_docs/``, and ``ContractsFailed`` lists the failures.
    Holds the root's writer lock (``RootLocked`` when another run holds it for longer than
    ``wait_for_lock`` seconds).
    """
    settings = PublishSettings(fractions=parse_fractions(fractions) if fractions else {},
                               shard_max_bytes=shard_max_bytes, shard_max_count=shard_max_count,
                               yolo=yolo, seed=seed, taxonomy=taxonomy, class_order=class_order,
                               crops=crops, crop_size=crop_size, crop_scale=crop_scale)
    storage = open_storage(root, endpoint_url=s3_endpoint_url)
    check_version(version)
    get_run_logger().info("publish release %s of %s (fractions %s)", version, storage.uri,
                          settings.fractions or "the taxonomy's")
    with locked_root(storage, command=f"publish {version}", wait_s=wait_for_lock):
        return _publish_locked(storage, version, settings=settings, workers=workers,
                               endpoint_url=s3_endpoint_url, cluster=cluster)


def _publish_locked(storage: Storage, version: str, *, settings: PublishSettings,
                    workers: int, endpoint_url: str | None,
                    cluster: str | None) -> dict[str, Any]:
    check_new_release(storage, version)
    # The pool's processes start (and import) while the catalog is read. Without a cluster
    # S3 roots read objects in this process: a forkserver started earlier would not see
    # credentials set in the environment since (and S3 reads are network-bound).
    local = cluster or isinstance(storage, LocalStorage)
    with job_pool(cluster, workers=workers if local else 1) as (pool, where):
        images, boxes = select_images(storage)
        split = assign(storage, images, settings)
        logger = get_run_logger()
        logger.info("%d images; split shares %s", len(images),
                    split_shares(split.info["fractions"], split.info["target_fractions"]))
        for warning in split.info["warnings"]:
            logger.warning(warning)
        # an S3 root on a cluster: the workers stage their files under the root, since
        # they share no folder with this process (``tasks.publish.remote``)
        remote = remote_staging(storage, version, endpoint_url=endpoint_url) \
            if cluster and not isinstance(storage, LocalStorage) else None
        summary = _stage_and_commit(storage, version, images, boxes, split,
                                    settings=settings, pool=pool, endpoint_url=endpoint_url,
                                    remote=remote)
    return {**summary, "written_on": where}


def _stage_and_commit(storage: Storage, version: str, images: pd.DataFrame,
                      boxes: pd.DataFrame, split: SplitResult, *, settings: PublishSettings,
                      pool: JobPool | None, endpoint_url: str | None,
                      remote: RemoteStaging | None = None) -> dict[str, Any]:
    """Build the release in a staging folder (and with ``remote`` under the root's staging
    prefix), then commit it (or keep the refused docs)."""
    staging = staging_dir(storage, version)
    try:
        summary = _build(storage, staging, images, boxes, split, settings=settings,
                         version=version, pool=pool, endpoint_url=endpoint_url, remote=remote)
        started = time.perf_counter()
        summary["uri"] = commit_release(storage, staging, version, remote)
        get_run_logger().info("committed release %s in %.1f s: %s", version,
                              time.perf_counter() - started, summary["uri"])
    except ContractsFailed as failed:
        kept = keep_refused_docs(storage, staging, version)
        discard(staging, remote)
        failed.add_note(f"contracts page: {kept}/{REPORT}/{CONTRACTS_PAGE}")
        if failed.report is not None:
            create_markdown_artifact(
                key="release-refused", markdown=refused_markdown(version, failed.report,
                                                                 kept=kept),
                description=f"Release {version} refused: failed contracts")
        raise
    except BaseException:
        discard(staging, remote)
        raise
    _artifacts(summary)
    return summary


def _build(storage: Storage, staging: Path, images: pd.DataFrame, boxes: pd.DataFrame,
           split: SplitResult, *, settings: PublishSettings, version: str,
           pool: JobPool | None, endpoint_url: str | None,
           remote: RemoteStaging | None) -> dict[str, Any]:
    """Everything between the split assignment and the commit (inside the staging folder)."""
    # On a cluster the jobs are task runs of their own, submitted from the flow's run:
    # prefect-dask cannot submit from inside a task run (its context does not pickle).
    step = write_shards_and_manifests.fn if isinstance(pool, ClusterJobs) \
        else write_shards_and_manifests
    manifests, crops, written, timings = step(
        storage, staging, images, boxes, split.assignment, settings, pool, endpoint_url, remote)
    digests = {name: shard.sha256 for name, shard in written.items()}
    manifest = pa.concat_tables(list(manifests.values())).to_pandas()
    members = shard_members(staging, {name: shard for name, shard in written.items()
                                      if not name.startswith(f"{CROPS}/")})
    contracts = check_contracts(storage, staging, manifest, split.links, settings, version,
                                members)
    if not contracts.success:
        raise ContractsFailed(f"release {version} refused:\n{contracts.summary()}", contracts)
    started = time.perf_counter()
    exports = export_files(manifests, settings=settings)
    for key, data in exports.items():
        write_file(staging, key, data)
    crop_counts = {k: t.num_rows for k, t in crops.items()}
    info = write_documents(storage, staging, manifest, version=version, settings=settings,
                           split=split, contracts=contracts, endpoint_url=endpoint_url,
                           crops=crop_counts, remote=remote)
    write_file(staging, CHECKSUMS, checksums(staging, known=digests, remote=remote))
    get_run_logger().info("documents: %d export files, the report, the data card, %s and "
                          "%s in %.1f s", len(exports), RELEASE_INFO, CHECKSUMS,
                          time.perf_counter() - started)
    shards = sum(not k.startswith(f"{CROPS}/") for k in digests)
    get_run_logger().info("release %s: %d images, %d shards, %d crops", version, len(manifest),
                          shards, sum(crop_counts.values()))
    return {"version": version, "images": len(manifest), "shards": shards,
            "split_images": {k: t.num_rows for k, t in manifests.items()},
            "split_subjects": {k: int(n) for k, n in
                               manifest.groupby("split")["user_id"].nunique().items()},
            "crops": crop_counts, "crop_shards": len(digests) - shards,
            "splits": info["splits"], "counts": info["counts"],
            "contracts": contracts.tally(), "timings": timings}


def _artifacts(summary: dict[str, Any]) -> None:
    create_markdown_artifact(key="release-summary", markdown=release_markdown(summary),
                             description=f"Release {summary['version']}: counts, contracts")
