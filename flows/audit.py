"""The ``audit`` flow: labels of a release that models which never saw the person disagree
with, recorded in the dataset root's ``label_issues`` table for a reviewer.

Checks the release, splits its images into folds by person, trains one model per fold on
the others and predicts the held-out fold, lets cleanlab flag each head's likely-wrong
labels, keeps at most one flag per image (none on a reviewed image or one an earlier audit
of the release flagged), writes them to the catalog and ``ROOT/audits/<V>-<audit_id>/``.
The work itself is in ``tasks.audit``.
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.root_lock import locked_root
from flows.run_names import run_name
from schemas.release import RELEASES
from schemas.train import HEADS, TrainSettings
from tasks.audit.annotators import (
    ANNOTATORS_CSV,
    annotator_scores,
    crowd_answers,
    image_hand_probs,
)
from tasks.audit.folds import Folds, user_folds
from tasks.audit.issues import (
    REVIEWED,
    Flags,
    Selection,
    flag_counts,
    flag_labels,
    issue_table,
    select_flags,
)
from tasks.audit.oof import FoldPrediction, OutOfFold, assemble, audit_settings, predict_fold
from tasks.audit.release import ReleaseHands, read_release_hands
from tasks.audit.report import ISSUES_CSV, audit_folder, csv_bytes, flag_strips
from tasks.catalog import Catalog
from tasks.markdown import markdown_text
from tasks.storage import open_storage

ISSUES_TABLE = "label_issues"


def default_root(release: str) -> str:
    """The dataset root of a release ``ROOT/releases/<V>`` (a folder or ``s3://``);
    ValueError for a release elsewhere."""
    if release.startswith("s3://"):
        parent, folder, _version = (["", "", ""] + release.rstrip("/").rsplit("/", 2))[-3:]
        found = parent if not parent.endswith(":/") else ""
    else:
        path = Path(release)
        folder, found = path.parent.name, str(path.parent.parent)
    if folder != RELEASES or not found:
        raise ValueError(f"{release} is not ROOT/{RELEASES}/<version>: name the dataset root "
                         "whose catalog gets the flags (--root)")
    return found


def new_audit_id(now: dt.datetime) -> str:
    """``audit-<UTC time>-<6 hex>``: names the audit's rows, batch and folder."""
    return f"audit-{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@task(cache_policy=NO_CACHE)
def check_release(release: str, settings: TrainSettings,
                  endpoint_url: str | None) -> ReleaseHands:
    """The release checked, and the hands of all its splits."""
    return read_release_hands(release, view=settings.view, hash_shards=settings.verify_shards,
                              endpoint_url=endpoint_url)


@task(cache_policy=NO_CACHE, task_run_name="fold-{fold}")
def train_fold(data: ReleaseHands, folds: Folds, fold: int, settings: TrainSettings,
               endpoint_url: str | None) -> FoldPrediction:
    """A fresh model trained without ``fold``'s people; its probabilities on their boxes."""
    prediction = predict_fold(data, folds.fold, fold, settings=settings,
                              endpoint_url=endpoint_url)
    get_run_logger().info("fold %d: %d boxes held out, %.1f s", fold, len(prediction.rows),
                          prediction.seconds)
    return prediction


@task(cache_policy=NO_CACHE)
def flag(data: ReleaseHands, oof: OutOfFold) -> Flags:
    """cleanlab's flags of both heads over the out-of-fold probabilities, worst first."""
    return flag_labels(data.hands, oof.gesture, oof.hand, classes=data.classes)


@task(cache_policy=NO_CACHE)
def record(root: str, endpoint_url: str | None, data: ReleaseHands, flags: Flags,
           audit_id: str, now: dt.datetime, max_quality: float | None = None) -> Selection:
    """Under the root's writer lock: the release's rules applied against the catalog, the
    new rows written as one batch (none when nothing is new)."""
    storage = open_storage(root, endpoint_url=endpoint_url)
    catalog = Catalog(storage)
    with locked_root(storage, command="audit"):
        earlier = catalog.read_table(ISSUES_TABLE, columns=["image_id"],
                                     filters=pc.field("release") == data.version)
        selection = select_flags(
            flags, row_image_ids=data.row_image_ids(),
            reviewed=set(data.image_ids[data.methods == REVIEWED].tolist()),
            already_flagged=set(earlier["image_id"].to_pylist()), max_quality=max_quality)
        if len(selection.flags):
            table = issue_table(selection.flags, release=data.version,
                                row_image_ids=data.row_image_ids(), box_index=data.box_index,
                                audit_id=audit_id, flagged_at=now)
            catalog.write_batch(audit_id, {ISSUES_TABLE: table},
                                info={"kind": "audit", "release": data.version,
                                      "rows": table.num_rows})
    return selection


@task(cache_policy=NO_CACHE)
def write_report(root: str, endpoint_url: str | None, data: ReleaseHands,
                 selection: Selection, audit_id: str, now: dt.datetime) -> str:
    """``ROOT/audits/<V>-<audit_id>/``: issues.csv (the new rows) and a PNG strip of crops
    per head and given label; returns the CSV's location."""
    storage = open_storage(root, endpoint_url=endpoint_url)
    folder = audit_folder(data.version, audit_id)
    table = issue_table(selection.flags, release=data.version,
                        row_image_ids=data.row_image_ids(), box_index=data.box_index,
                        audit_id=audit_id, flagged_at=now)
    storage.write_bytes(f"{folder}/{ISSUES_CSV}", csv_bytes(table))
    for name, png in flag_strips(data, selection.flags, endpoint_url=endpoint_url).items():
        storage.write_bytes(f"{folder}/{name}", png)
    return f"{storage.uri.rstrip('/')}/{folder}/{ISSUES_CSV}"


@task(cache_policy=NO_CACHE)
def rate_annotators(root: str, endpoint_url: str | None, data: ReleaseHands, oof: OutOfFold,
                    audit_id: str) -> dict[str, Any]:
    """Per crowd annotator of the release's images: how many of their images the release's
    audits flagged, and cleanlab's multi-annotator quality of their leading-hand answers;
    written to ``ROOT/audits/<V>-<audit_id>/annotators.csv``. Returns the rows, worst
    first, and why the cleanlab columns are empty when they are."""
    storage = open_storage(root, endpoint_url=endpoint_url)
    catalog = Catalog(storage)
    image_ids, probs = image_hand_probs(data, oof.hand)
    answers = crowd_answers(catalog, set(data.image_ids.tolist()))
    issues = catalog.read_table(ISSUES_TABLE, columns=["image_id", "flagged_at"],
                                filters=pc.field("release") == data.version).to_pandas()
    table, reason = annotator_scores(answers, issues, image_ids, probs)
    if reason:
        get_run_logger().warning("annotator scores: %s", reason)
    folder = audit_folder(data.version, audit_id)
    storage.write_bytes(f"{folder}/{ANNOTATORS_CSV}", table.to_csv().encode())
    rows = [{"worker_id": str(worker), **{k: (None if pd.isna(v) else round(float(v), 4))
                                          for k, v in row.items()}}
            for worker, row in table.iterrows()]
    return {"rows": rows, "note": reason,
            "csv": f"{storage.uri.rstrip('/')}/{folder}/{ANNOTATORS_CSV}"}


@flow(name="audit", flow_run_name=run_name("audit", "release"), log_prints=True)
def audit(release: str, root: str | None = None, folds: int = 5, epochs: int = 20,
          seed: int = 0, input_size: int = 64, model: str = "small", device: str = "auto",
          view: str = "auto", verify_shards: bool = True, max_quality: float | None = None,
          s3_endpoint_url: str | None = None) -> dict[str, Any]:
    """Flag a release's likely-wrong labels (gesture and leading hand) in ``label_issues``.

    ``release``: ``ROOT/releases/<V>`` or an ``s3://`` URI; ``root``: the dataset root whose
    catalog gets the rows (default: the release's ``ROOT``). ``folds``: folds by person
    (lowered to the number of people when fewer); per fold a ``model`` (``small`` or
    ``resnet18``) is trained for ``epochs`` epochs with the CPU recipe at ``input_size`` px
    on ``device``, its weights seeded from ``seed`` and the fold. ``max_quality``: record
    only flags whose cleanlab label quality is below it (default: every flag cleanlab
    finds; bench/RESULTS.md shows the precision and recall of both). Raises ``ReleaseError``
    before any training when the release fails its checks, ValueError for a bad setting or
    a release outside ``ROOT/releases/`` without ``root``. Returns the summary.
    """
    settings = audit_settings(epochs=epochs, model=model, input_size=input_size,
                              device=device, seed=seed, view=view, verify_shards=verify_shards)
    if max_quality is not None and not 0 < max_quality <= 1:
        raise ValueError(f"max_quality must be in (0, 1], got {max_quality}")
    root = root or default_root(release)
    logger = get_run_logger()
    logger.info("audit the labels of %s: %d fold models of %d epochs, flags into %s",
                release, folds, epochs, root)
    data = check_release(release, settings, s3_endpoint_url)
    split = user_folds(data.user_ids, k=folds, seed=seed)
    logger.info("%d images, %d boxes, %d people in %d folds", data.hands.n_images,
                len(data.hands), len(set(data.user_ids.tolist())), split.k)
    predictions = [train_fold(data, split, f, settings, s3_endpoint_url) for f in range(split.k)]
    oof = assemble(predictions, n_rows=len(data.hands), n_classes=len(data.classes))
    flags = flag(data, oof)
    now = dt.datetime.now(dt.UTC)
    audit_id = new_audit_id(now)
    selection = record(root, s3_endpoint_url, data, flags, audit_id, now, max_quality)
    issues_csv = write_report(root, s3_endpoint_url, data, selection, audit_id, now)
    annotators = rate_annotators(root, s3_endpoint_url, data, oof, audit_id)
    summary = _summary(data, split, predictions, flags, selection, audit_id=audit_id,
                       root=root, issues_csv=issues_csv, settings=settings)
    summary["annotators"] = annotators
    _artifact(summary)
    logger.info("audit %s: flagged %s, %d new rows in %s (%s)", audit_id, summary["flagged"],
                summary["rows_written"], ISSUES_TABLE, issues_csv)
    return summary


def _summary(data: ReleaseHands, split: Folds, predictions: list[FoldPrediction], flags: Flags,
             selection: Selection, *, audit_id: str, root: str, issues_csv: str,
             settings: TrainSettings) -> dict[str, Any]:
    written = selection.flags
    image_ids, box_index = data.row_image_ids(), data.box_index
    top = [{"image_id": str(image_ids[r]), "box_index": int(box_index[r]), "head": str(h),
            "given_label": str(g), "suggested_label": str(s), "quality": round(float(q), 4)}
           for r, h, g, s, q in zip(written.row[:20], written.head[:20], written.given[:20],
                                    written.suggested[:20], written.quality[:20], strict=True)]
    return {
        "release": data.version, "uri": data.uri, "view": data.view, "root": root,
        "audit_id": audit_id, "splits": list(data.splits), "images": int(data.hands.n_images),
        "boxes": len(data.hands), "users": len(set(data.user_ids.tolist())),
        "folds": split.k, "folds_requested": split.requested, "fold_images": split.sizes(),
        "seconds_per_fold": [round(p.seconds, 2) for p in sorted(predictions,
                                                                 key=lambda p: p.fold)],
        "flagged": {h: int(np.sum(flags.head == h)) for h in HEADS},
        "flagged_per_class": flag_counts(flags),
        "rows_written": len(written),
        "written": {h: int(np.sum(written.head == h)) for h in HEADS},
        "skipped_reviewed": selection.skipped_reviewed,
        "skipped_already_flagged": selection.skipped_already_flagged,
        "skipped_quality": selection.skipped_quality,
        "issues_csv": issues_csv, "top": top, "settings": settings.as_dict(),
    }


def _artifact(summary: dict[str, Any]) -> None:
    rows = ["| head | given label | flagged |", "|---|---|---:|"]
    rows += [f"| {head} | {markdown_text(label)} | {n} |"
             for head, per_label in summary["flagged_per_class"].items()
             for label, n in sorted(per_label.items(), key=lambda kv: (-kv[1], kv[0]))]
    create_markdown_artifact(
        key="label-audit",
        markdown=(f"# Label audit {summary['audit_id']} of {markdown_text(summary['release'])}"
                  f"\n\n{summary['images']} images, {summary['boxes']} boxes, "
                  f"{summary['folds']} folds by person. New rows: {summary['rows_written']} "
                  f"(skipped: {summary['skipped_already_flagged']} images flagged before, "
                  f"{summary['skipped_quality']} flags at or above max_quality, "
                  f"{summary['skipped_reviewed']} flags on reviewed images). "
                  f"Rows: {markdown_text(summary['issues_csv'])}\n\n" + "\n".join(rows)
                  + _annotator_markdown(summary.get("annotators"))),
        description="Likely-wrong labels per head and given label; annotator scores")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _annotator_markdown(annotators: dict[str, Any] | None, *, top: int = 10) -> str:
    """The worst ``top`` crowd annotators by flag rate, as a markdown table."""
    if not annotators or not annotators["rows"]:
        return ""
    lines = ["", "", f"## Annotators (worst {top} by flag rate)", "",
             ("| annotator | images | flagged | flag rate | leading-hand quality "
              "(cleanlab) | agreement with consensus |"), "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {markdown_text(r['worker_id'])} | {r['images']:.0f} | {r['flagged']:.0f} | "
              f"{_number(r['flag_rate'])} | {_number(r['annotator_quality'])} | "
              f"{_number(r['agreement_with_consensus'])} |" for r in annotators["rows"][:top]]
    if annotators["note"]:
        lines += ["", markdown_text(annotators["note"])]
    return "\n".join(lines) + f"\n\nAll annotators: {markdown_text(annotators['csv'])}"
