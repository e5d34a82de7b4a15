"""The ``validate`` and ``filter`` flows: crowd stages 2 and 3, and the stage cycle they share.

Each run pulls the answers given since the last run, aggregates them, writes the verdicts
that are final, and pushes what is still pending (first rounds, re-queues, expert review).
Runs are idempotent, so a deployment can run them on a schedule.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import secrets
from pathlib import Path
from typing import Any, cast

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from flows.ingest import DEFAULT_ROOT
from flows.root_lock import locked_root
from flows.run_names import run_name
from schemas.annotation import AnnotationSettings
from schemas.crowd import (
    CrowdBackendOptions,
    CrowdSettings,
    FlagPolicy,
    Queue,
    Stage,
)
from tasks.annotate.label_review import current_answers, flagged_review_decisions, review_notes
from tasks.annotate.stage import agreement_histogram
from tasks.catalog import Catalog
from tasks.crowd.backends import (
    CrowdBackend,
    CrowdTask,
    FileCrowd,
    PushedTask,
    quarantined_tables,
)
from tasks.crowd.consensus import discount_rule
from tasks.crowd.report import report_markdown, stage_report
from tasks.crowd.stage import (
    StageDecision,
    StageTables,
    answer_table,
    boxes_table,
    changed_decisions,
    crowd_tasks,
    decide,
    golden_table,
    latest_preannotations,
    latest_verdicts,
    load_stage,
    pull_answers,
    task_table,
    verdict_table,
)
from tasks.simulation.crowd import (
    GeneratorTruth,
    SimulatedCrowd,
    pick_control_images,
    worker_pool,
)
from tasks.storage import open_storage


def make_backend(options: CrowdBackendOptions, catalog: Catalog, *, settings: CrowdSettings,
                 s3_endpoint_url: str | None = None, taxonomy: str | None = None) -> CrowdBackend:
    """The crowd back end named by ``options.kind``; ``taxonomy`` gives the box labels of
    annotation (Label Studio's project, the simulated annotators' label swaps)."""
    if options.kind == "file":
        return FileCrowd(catalog.root)
    if options.kind == "simulated":
        truth = GeneratorTruth.from_catalog(catalog, endpoint_url=s3_endpoint_url)
        return SimulatedCrowd(catalog.root, truth=truth, seed=options.sim_seed, taxonomy=taxonomy,
                              workers=worker_pool(n_workers=options.sim_workers,
                                                  spammer_share=options.sim_spammer_share,
                                                  seed=options.sim_seed))
    if options.kind == "labelstudio":
        from annotation_ui.labelstudio_crowd import LabelStudioCrowd

        url = options.ls_url or os.environ.get("LABEL_STUDIO_URL")
        token = options.ls_token or os.environ.get("LABEL_STUDIO_API_KEY")
        if not url or not token:
            raise ValueError("Label Studio needs --ls-url and --ls-token "
                             "(or LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)")
        doc_root = options.ls_document_root or os.environ.get(
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
        backend = LabelStudioCrowd(url=url, token=token, root=catalog.root,
                                   prefix=options.ls_project_prefix, settings=settings,
                                   document_root=Path(doc_root) if doc_root else None,
                                   s3_endpoint_url=s3_endpoint_url, taxonomy=taxonomy,
                                   references=options.ls_references)
        if options.ls_references:  # a class without a picture stops the run here, at once
            backend.reference_keys()
        return backend
    raise ValueError(f"unknown crowd back end {options.kind!r}: labelstudio, file or simulated")


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3)
def pull_task(backend: CrowdBackend, tables: StageTables, taxonomy: str) -> pd.DataFrame:
    """Pull and screen new answers (network-facing: retried); ``taxonomy``: box labels."""
    return pull_answers(backend, tables, taxonomy=taxonomy)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3)
def push_task(backend: CrowdBackend, stage: Stage, tasks: list[CrowdTask],
              batch_id: str) -> list[PushedTask]:
    """Send pending tasks (network-facing: retried; pushes are idempotent)."""
    return backend.push(stage, tasks, batch_id=batch_id)


def run_crowd_stage(stage: Stage, *, root: str, options: CrowdBackendOptions,
                    settings: CrowdSettings, cycles: int = 1,
                    s3_endpoint_url: str | None = None,
                    annotation: AnnotationSettings | None = None,
                    wait_for_lock: float = 0.0) -> dict[str, Any]:
    """Up to ``cycles`` pull-decide-push cycles of ``stage``; stops early once quiet.

    Holds the root's writer lock for the whole run (``RootLocked`` when another run holds
    it for longer than ``wait_for_lock`` seconds).
    """
    catalog = Catalog(open_storage(root, endpoint_url=s3_endpoint_url))
    get_run_logger().info("%s of %s with the %s crowd (%s): up to %d cycles", stage.value,
                          catalog.root.uri, options.kind, settings.method, max(1, cycles))
    with locked_root(catalog.root, command=stage.value, wait_s=wait_for_lock):
        catalog.remove_uncommitted()  # under the lock: only a dead run's files
        return _stage_cycles(stage, catalog, options=options, settings=settings,
                             cycles=cycles, s3_endpoint_url=s3_endpoint_url,
                             annotation=annotation)


def _stage_cycles(stage: Stage, catalog: Catalog, *, options: CrowdBackendOptions,
                  settings: CrowdSettings, cycles: int, s3_endpoint_url: str | None,
                  annotation: AnnotationSettings | None) -> dict[str, Any]:
    backend = make_backend(options, catalog, settings=settings, s3_endpoint_url=s3_endpoint_url,
                           taxonomy=annotation.taxonomy if annotation else None)
    started = dt.datetime.now(dt.UTC)
    imported = dict(zip(import_answer_files(catalog, stage, [Path(p) for p in options.answers]),
                        options.answers, strict=True))
    if isinstance(backend, SimulatedCrowd) and stage is not Stage.ANNOTATION:
        seed_simulated_golden(catalog, stage, options, backend.truth)
    preannotations = latest_preannotations(catalog) if stage is Stage.ANNOTATION else {}
    pulled: list[pd.DataFrame] = []
    pushed_total = 0
    label_reviews = {"label_reviews_sent": 0, "label_reviews_decided": 0}
    for cycle in range(1, max(1, cycles) + 1):
        tables = load_stage(catalog, stage)
        rows: pd.DataFrame = pull_task(backend, tables,
                                       (annotation or AnnotationSettings()).taxonomy)
        tables = tables.with_answers(rows)
        decision = decide(tables, settings=settings, annotation=annotation)
        plan = decision.plan
        tag = _batch_tag(stage)
        now = dt.datetime.now(dt.UTC)
        decisions = changed_decisions(plan.decisions, tables.verdicts)
        if len(rows) or decisions:
            batch: dict[str, Any] = {
                "answers": answer_table(rows, batch_id=f"{tag}-a", now=now),
                "verdicts": verdict_table(stage, decisions, batch_id=f"{tag}-a", now=now)}
            if stage is Stage.ANNOTATION:
                batch["boxes"] = boxes_table(decisions, decision.annotations,
                                             batch_id=f"{tag}-a", now=now)
            catalog.write_batch(f"{tag}-a", batch,
                                info={"stage": stage.value, "kind": "answers+verdicts"})
        shown, notes = _label_review_display(catalog, tables, decision, preannotations)
        # quoted: Prefect would walk every field of every task (25 s for 50k tasks); the task
        # gets the list itself
        pending = cast(list[CrowdTask], quote(crowd_tasks(plan, tables, shown, notes)))
        pushed = push_task(backend, stage, pending, f"{tag}-t")
        if tables.flags is not None:
            label_reviews["label_reviews_sent"] += sum(
                p.image_id in notes for p in pushed if p.queue is Queue.REVIEW)
            label_reviews["label_reviews_decided"] += flagged_review_decisions(
                ((d.image_id, d.method) for d in decisions), tables.flags.issues)
        if pushed:
            catalog.write_batch(f"{tag}-t", {"stage_tasks": task_table(
                stage, pushed, set(tables.golden.index), backend=backend.name,
                batch_id=f"{tag}-t", now=now)}, info={"stage": stage.value, "kind": "tasks"})
        pulled.append(rows)
        pushed_total += len(pushed)
        get_run_logger().info("cycle %d: %d answers pulled, %d verdicts changed, %d tasks "
                              "pushed", cycle, len(rows), len(decisions), len(pushed))
        if rows.empty and not pushed:
            break
    report = stage_report(stage, verdicts=latest_verdicts(catalog, stage), plan=plan,
                          quality=decision.quality,
                          new_answers=pd.concat([r for r in pulled if len(r)] or pulled[:1],
                                                ignore_index=True),
                          pushed=pushed_total, method=decision.method, backend=backend.name,
                          quarantined=quarantined_tables(catalog.root, stage, since=started),
                          imported=imported, discount_rule=discount_rule(settings))
    if stage is Stage.ANNOTATION:
        report["agreement"] = agreement_histogram(decision.annotations)
        report.update(label_reviews)
    report["root"] = catalog.root.uri
    if isinstance(backend, SimulatedCrowd):
        report["simulated_unanswerable"] = len(backend.unanswerable)
        if backend.unanswerable:
            get_run_logger().warning(
                "simulated crowd: %d images have no generator truth (their source has no "
                "truth.jsonl) and were not answered; they wait for a real crowd",
                len(backend.unanswerable))
    create_markdown_artifact(key=f"{stage.value}-report", markdown=report_markdown(report),
                             description=f"{stage.value} stage on {catalog.root.uri}")
    get_run_logger().info("%s done: verdicts %s, queue %s, %d workers discounted",
                          stage.value, report["verdicts"], report["queue"],
                          len(report["discounted_workers"]))
    return report


def _label_review_display(catalog: Catalog, tables: StageTables, decision: StageDecision,
                          preannotations: dict[str, str]) -> tuple[dict[str, str],
                                                                   dict[str, str]]:
    """What review tasks of flagged images show: the image's current annotation as the
    starting point (instead of any pre-annotation) and a note of what the audit suspects."""
    if not decision.label_reviews or tables.flags is None:
        return preannotations, {}
    current = current_answers(catalog, decision.label_reviews)
    return ({**preannotations, **current},
            review_notes(tables.flags.issues, decision.label_reviews))


def _batch_tag(stage: Stage) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    return f"{stamp}-{stage.value}-{secrets.token_hex(3)}"


def import_answer_files(catalog: Catalog, stage: Stage, paths: list[Path]) -> list[str]:
    """Copy answer tables into the stage's inbox, where ``pull`` reads them."""
    inbox = FileCrowd(catalog.root)
    return [inbox.import_file(stage, p.name, p.read_bytes()) for p in paths]


def seed_simulated_golden(catalog: Catalog, stage: Stage, options: CrowdBackendOptions,
                          truth: GeneratorTruth) -> int:
    """Give a simulated campaign control images from the generator's truth, once per stage."""
    tables = load_stage(catalog, stage)
    if len(tables.golden) or tables.images.empty or options.sim_golden <= 0:
        return 0
    undecided = [i for i in tables.images["image_id"]
                 if i not in tables.verdicts.index and i in truth]
    rows = pick_control_images(undecided, truth.answer, stage, n=options.sim_golden,
                               seed=options.sim_seed)
    if not rows:
        return 0
    tag = _batch_tag(stage)
    table, problems = golden_table(stage, rows, known_images=set(undecided),
                                   source="simulated-truth",
                                   batch_id=f"{tag}-g", now=dt.datetime.now(dt.UTC))
    assert not problems, problems  # planted answers are canonical by construction
    catalog.write_batch(f"{tag}-g", {"golden": table}, info={"stage": stage.value})
    return table.num_rows


def stage_settings(*, overlap: int, method: str, min_confidence: float, max_answers: int,
                   skill_floor: float, flag_policy: str, min_flag_votes: int,
                   golden_overlap: int, min_credible: int | None = None) -> CrowdSettings:
    """Settings from flow parameters (validated by ``CrowdSettings``); ``min_credible``
    defaults to ``overlap``."""
    return CrowdSettings(overlap=overlap, method=method, min_confidence=min_confidence,
                         max_answers=max(max_answers, overlap), skill_floor=skill_floor,
                         flag_policy=FlagPolicy(flag_policy), min_flag_votes=min_flag_votes,
                         golden_overlap=golden_overlap,
                         min_credible=min(min_credible or overlap, overlap))


@flow(name="validate", flow_run_name=run_name("validate", "root"), log_prints=True)
def validate(root: str = DEFAULT_ROOT, crowd: str = "simulated", overlap: int = 3,
             method: str = "ds", min_confidence: float = 0.9, max_answers: int = 7,
             skill_floor: float = 0.7, golden_overlap: int = 10,
             min_credible: int | None = None, cycles: int = 1,
             options: CrowdBackendOptions | None = None,
             s3_endpoint_url: str | None = None, wait_for_lock: float = 0.0) -> dict[str, Any]:
    """Stage 2: did the worker follow the task? Crowd answers -> ``verdicts``.

    A verdict needs ``min_credible`` answers (default: ``overlap``) from workers who are not
    discounted; 2 saves about 0.9 answers per image at some accuracy (bench/RESULTS.md).
    """
    settings = stage_settings(overlap=overlap, method=method, min_confidence=min_confidence,
                              max_answers=max_answers, skill_floor=skill_floor,
                              flag_policy=FlagPolicy.ANY_CREDIBLE.value, min_flag_votes=1,
                              golden_overlap=golden_overlap, min_credible=min_credible)
    opts = options or CrowdBackendOptions(kind=crowd)
    return run_crowd_stage(Stage.VALIDATION, root=root, options=opts, settings=settings,
                           cycles=cycles, s3_endpoint_url=s3_endpoint_url,
                           wait_for_lock=wait_for_lock)


@flow(name="filter", flow_run_name=run_name("filter", "root"), log_prints=True)
def filter_stage(root: str = DEFAULT_ROOT, crowd: str = "simulated", overlap: int = 3,
                 method: str = "ds", min_confidence: float = 0.9, max_answers: int = 7,
                 skill_floor: float = 0.7, golden_overlap: int = 10,
                 flag_policy: str = "aggregate", min_flag_votes: int = 1,
                 min_credible: int | None = None, cycles: int = 1,
                 options: CrowdBackendOptions | None = None,
                 s3_endpoint_url: str | None = None,
                 wait_for_lock: float = 0.0) -> dict[str, Any]:
    """Stage 3: ethical filtration. ``flag_policy`` ``aggregate`` (default): an image is
    excluded when the aggregation method's probability of a flag reaches 0.3;
    ``any_credible``: ``min_flag_votes`` flags from workers who are not discounted exclude it.

    A clear verdict needs ``min_credible`` answers (default: ``overlap``) from workers who
    are not discounted (with 2, flag recall fell from 1.000 to 0.955 in the benchmark).
    """
    settings = stage_settings(overlap=overlap, method=method, min_confidence=min_confidence,
                              max_answers=max_answers, skill_floor=skill_floor,
                              flag_policy=flag_policy, min_flag_votes=min_flag_votes,
                              golden_overlap=golden_overlap, min_credible=min_credible)
    opts = options or CrowdBackendOptions(kind=crowd)
    return run_crowd_stage(Stage.FILTRATION, root=root, options=opts, settings=settings,
                           cycles=cycles, s3_endpoint_url=s3_endpoint_url,
                           wait_for_lock=wait_for_lock)


def reaggregate(root: str, stage: Stage, *, settings: CrowdSettings,
                s3_endpoint_url: str | None = None,
                wait_for_lock: float = 0.0) -> dict[str, int]:
    """Recompute crowd verdicts with ``settings.method`` from stored answers; no new asks.

    Where the new method is not confident enough to decide, the image keeps its current
    verdict and is counted as ``undecided`` (a normal run would ask for more answers).
    """
    catalog = Catalog(open_storage(root, endpoint_url=s3_endpoint_url))
    with locked_root(catalog.root, command=f"aggregate {stage.value}", wait_s=wait_for_lock):
        return _reaggregate(catalog, stage, settings=settings)


def _reaggregate(catalog: Catalog, stage: Stage, *, settings: CrowdSettings) -> dict[str, int]:
    tables = load_stage(catalog, stage)
    plan = decide(tables, settings=settings).plan
    decisions = changed_decisions(plan.decisions, tables.verdicts)
    if decisions:
        tag = _batch_tag(stage)
        catalog.write_batch(f"{tag}-v", {"verdicts": verdict_table(
            stage, decisions, batch_id=f"{tag}-v", now=dt.datetime.now(dt.UTC))},
            info={"stage": stage.value, "kind": "reaggregate", "method": settings.method})
    undecided = plan.status["kept"]
    return {"decisions": len(plan.decisions), "changed": len(decisions), "undecided": undecided}



def add_golden(root: str, stage: Stage, path: Path, *, s3_endpoint_url: str | None = None,
               wait_for_lock: float = 0.0) -> tuple[int, list[str]]:
    """Add control answers from a CSV (image_id, answer[, reason]); returns (added, refused)."""
    catalog = Catalog(open_storage(root, endpoint_url=s3_endpoint_url))
    with locked_root(catalog.root, command=f"golden {stage.value}", wait_s=wait_for_lock):
        return _add_golden(catalog, stage, path)


def _add_golden(catalog: Catalog, stage: Stage, path: Path) -> tuple[int, list[str]]:
    rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    known = set(catalog.read_table("images", columns=["image_id"]).column("image_id").to_pylist())
    tag = _batch_tag(stage)
    table, problems = golden_table(stage, rows, known_images=known, source=f"file:{path.name}",
                                   batch_id=f"{tag}-g", now=dt.datetime.now(dt.UTC))
    if table.num_rows:
        catalog.write_batch(f"{tag}-g", {"golden": table}, info={"stage": stage.value})
    return table.num_rows, problems
