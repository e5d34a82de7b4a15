"""The ``train`` flow: the pipeline's last stage, a two-head baseline trained from a release.

Checks the release (checksums, shards, manifest schema) before anything is trained, starts
or resumes the run folder, trains and evaluates one epoch per task, then draws the confusion
matrices and publishes the figures as artifacts. The work itself is in ``tasks.train``.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.run_names import run_name
from schemas.train import HEADS, TrainSettings, confusion_png
from tasks import progress
from tasks.markdown import markdown_text
from tasks.train.metrics import metrics_markdown
from tasks.train.release import TrainingRelease, open_release
from tasks.train.run import TrainingRun, default_run_dir, finish_run, run_epoch, start_run

PROGRESS_EVERY_S = 60.0  # at most one in-epoch progress line a minute in the run log


@task(cache_policy=NO_CACHE)
def check_release(release: str, settings: TrainSettings,
                  endpoint_url: str | None) -> TrainingRelease:
    """The release checked, and the hands of its train and evaluation splits."""
    started = time.perf_counter()
    data = open_release(release, view=settings.view, hash_shards=settings.verify_shards,
                        endpoint_url=endpoint_url)
    get_run_logger().info(
        "release %s checked in %.1f s: %s %d images (%d hands), %s %d hands, %s view",
        data.version, time.perf_counter() - started, data.train_split, data.train.n_images,
        len(data.train), data.eval_split, len(data.evaluation), data.view)
    return data


@task(cache_policy=NO_CACHE)
def start(data: TrainingRelease, settings: TrainSettings, run_dir: str, resume: bool,
          endpoint_url: str | None) -> TrainingRun:
    """A fresh run in ``run_dir``, or the run there resumed."""
    return start_run(data, settings, run_dir=Path(run_dir), resume=resume,
                     endpoint_url=endpoint_url)


@task(cache_policy=NO_CACHE, task_run_name="epoch-{number}")
def train_epoch(run: TrainingRun, number: int) -> dict[str, Any]:
    """Train and evaluate epoch ``number`` (1-based); everything saved when it returns.
    While it runs, a run-log line at most every ``PROGRESS_EVERY_S`` seconds says how far
    the pass in progress is."""
    logger = get_run_logger()

    def log_batches(stage: str, done: int, total: int) -> None:
        logger.info("%s: %d of %d batches", stage, done, total)

    with progress.listening(progress.at_most_every(PROGRESS_EVERY_S, log_batches)):
        record = run_epoch(run)
    logger.info(
        "epoch %d: loss %.4f, gesture F1 macro %s, leading hand F1 macro %s, %.0f images/s",
        record["epoch"], record["loss"], _figure(record["gesture_f1_macro"]),
        _figure(record["leading_hand_f1_macro"]), record["images_per_s"])
    return record


def _figure(value: float | None) -> str:
    """An F1 score for a log line: three decimals, ``-`` when there was nothing to score."""
    return "-" if value is None else f"{value:.3f}"


@task(cache_policy=NO_CACHE)
def finish(run: TrainingRun) -> dict[str, Any]:
    """Confusion matrices and the run's summary."""
    return finish_run(run)


@flow(name="train", flow_run_name=run_name("train", "release"), log_prints=True)
def train(release: str, out: str | None = None, epochs: int = 10, batch_size: int = 64,
          model: str = "small", input_size: int = 64, device: str = "auto",
          view: str = "auto", workers: int = 2, seed: int = 0, resume: bool = False,
          s3_endpoint_url: str | None = None, verify_shards: bool = True,
          lr: float = 0.005, lr_decay: str = "none", shift: float = 0.0,
          color_jitter: float = 0.0, flip: float = 0.0, warmup_iters: int = 1000
          ) -> dict[str, Any]:
    """Train HaGRID v1's two-head classifier (gesture, leading hand) on a release.

    ``release``: ``ROOT/releases/<V>`` or an ``s3://`` URI. ``out``: the run folder, default
    ``ROOT/runs/<V>-<UTC time>`` (``./runs/...`` for a release elsewhere). ``model``:
    ``small`` or ``resnet18``; ``view``: ``auto`` (the crops view when published), ``full``
    or ``crops``; ``device``: ``auto``, ``cpu`` or ``cuda``. ``resume``: continue the run in
    ``out`` up to ``epochs``. ``verify_shards``: hash the shards (off: presence and length).
    ``lr``: SGD's learning rate (HaGRID's 0.005 by default; short CPU runs from scratch
    learn faster at about 0.05); ``lr_decay``: after the warm-up, ``none`` (HaGRID's constant
    rate) or ``cosine`` (to 0 at the last epoch); ``warmup_iters``: the linear warm-up's
    length (at most an epoch's iterations less one). ``shift``, ``color_jitter``, ``flip``:
    augmentations beyond HaGRID's recipe, off by default (``TrainSettings``).
    Trains on ``train``, evaluates on ``val`` (else ``test``). Raises ``ReleaseError``
    before any training when the release fails its checks, ``RunDirError`` for a run
    folder that cannot be used. Returns the summary (figures of the last epoch).
    """
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, model=model,
                             input_size=input_size, device=device, view=view,
                             workers=workers, seed=seed, verify_shards=verify_shards, lr=lr,
                             lr_decay=lr_decay, shift=shift, color_jitter=color_jitter,
                             flip=flip, warmup_iters=warmup_iters)
    logger = get_run_logger()
    logger.info("train a %s model on %s for %d epochs (%s view, device %s)", model, release,
                epochs, view, device)
    data = check_release(release, settings, s3_endpoint_url)
    run_dir = out or str(default_run_dir(data.uri, data.version, now=dt.datetime.now(dt.UTC)))
    run = start(data, settings, run_dir, resume, s3_endpoint_url)
    if run.epochs_done:
        logger.info("resuming %s after epoch %d", run_dir, run.epochs_done)
    logger.info("run folder %s: %d batches of %d per epoch on %s", run_dir,
                len(run.train_loader), settings.batch_size, run.device)
    for number in range(run.epochs_done + 1, settings.epochs + 1):
        train_epoch(run, number)
    summary = finish(run)
    _artifacts(run, summary)
    logger.info("trained in %s: %s", summary["run_dir"], _f1_line(summary))
    return summary


def _fixed(value: Any, digits: int = 3) -> str:
    """A figure for a table: ``digits`` decimals, or a dash when there is none."""
    return "-" if value is None else f"{float(value):.{digits}f}"


def _f1_line(summary: dict[str, Any]) -> str:
    """F1 macro per head on the evaluation split, in words."""
    heads = [f"{h} F1 macro {summary[h]['f1_macro']:.3f}" for h in HEADS
             if h in summary and summary[h].get("f1_macro") is not None]
    return f"{', '.join(heads) or 'no F1'} on {summary.get('eval_split')}"


def _artifacts(run: TrainingRun, summary: dict[str, Any]) -> None:
    rows = ["| epoch | loss | gesture F1 macro | leading hand F1 macro | images/s |",
            "|---:|---:|---:|---:|---:|"]
    rows += [f"| {r['epoch']} | {r['loss']:.4f} | {_fixed(r['gesture_f1_macro'])} | "
             f"{_fixed(r['leading_hand_f1_macro'])} | {_fixed(r['images_per_s'], 1)} |"
             for r in run.epochs]
    # named, not linked: a file:// link does nothing from the UI's http page
    links = ", ".join(f"`{confusion_png(h)}`" for h in HEADS)
    heads = "\n".join(metrics_markdown(run.metrics[h], head=h) for h in HEADS
                      if h in run.metrics)
    create_markdown_artifact(
        key="train-metrics",
        markdown=(f"# Training on {markdown_text(summary['release'])} "
                  f"({summary['view']} view, evaluated on {summary['eval_split']})\n\n"
                  f"Run folder {markdown_text(summary['run_dir'])}; best epoch "
                  f"{summary['best'].get('epoch')}. Confusion matrices (PNG, in the run "
                  f"folder): {links}\n\n"
                  + "\n".join(rows) + "\n\n" + heads),
        description="Per-epoch figures and the last evaluation per head")
