"""A training run from start to finish: the run folder, the model and its loaders, one
epoch at a time (train, evaluate, save), and the final figures.

``start_run`` makes a fresh run or resumes one (``--resume``: the checkpoint of the last
completed epoch, refused when the release or a setting that shapes the training differs).
``run_epoch`` trains and evaluates one epoch and saves everything, so a run killed between
epochs loses at most the epoch in progress. ``finish_run`` draws the confusion matrices of
the last evaluation. The flow calls the three; a test may call them directly.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from schemas.release import RELEASES
from schemas.train import (
    BEST_WEIGHTS,
    CHECKPOINT,
    HEADS,
    LEADING_HANDS,
    METRICS,
    MODEL_WEIGHTS,
    RUN_INFO,
    TrainSettings,
    confusion_png,
)
from tasks import progress
from tasks.train.checkpoint import (
    load_training_state,
    read_json,
    save_training_state,
    save_weights,
    write_bytes,
    write_json,
)
from tasks.train.dataset import HandCrops, Sampling, ShardReader, hand_loader
from tasks.train.loop import optimizer_for, predict, resolve_device, train_one_epoch
from tasks.train.metrics import confusion_figure_png, score_heads
from tasks.train.model import TwoHeadNet, build_model
from tasks.train.release import TrainingRelease

RUNS = "runs"  # beside releases/ in a dataset root


class RunDirError(ValueError):
    """The run folder cannot be used: it holds another run, or nothing to resume."""


@dataclass
class TrainingRun:
    """A run in progress (held between the flow's epoch tasks)."""

    release: TrainingRelease
    settings: TrainSettings
    run_dir: Path
    device: torch.device
    model: TwoHeadNet
    optimizer: torch.optim.SGD
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_loader: DataLoader[Any]
    eval_loader: DataLoader[Any]
    info: dict[str, Any]  # run.json
    epochs: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch done
    best: dict[str, Any] = field(default_factory=dict)  # epoch, gesture_f1_macro
    metrics: dict[str, Any] = field(default_factory=dict)  # the last evaluation

    @property
    def epochs_done(self) -> int:
        """Completed epochs (resumed ones included)."""
        return len(self.epochs)


def default_run_dir(release_uri: str, version: str, *, now: dt.datetime) -> Path:
    """``ROOT/runs/<version>-<UTC time>`` for a local release ``ROOT/releases/<version>``;
    ``./runs/<version>-<UTC time>`` otherwise (an S3 release, a folder elsewhere)."""
    name = f"{version}-{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
    release = Path(release_uri)
    if not release_uri.startswith("s3://") and release.parent.name == RELEASES:
        return release.parent.parent / RUNS / name
    return Path(RUNS) / name


def software_versions() -> dict[str, str]:
    """Versions of what the numbers depend on."""
    import PIL

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__,
            "safetensors": importlib.metadata.version("safetensors")}


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (the model's initial weights)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _loaders(release: TrainingRelease, settings: TrainSettings, *, endpoint_url: str | None,
             device: torch.device) -> tuple[DataLoader[Any], DataLoader[Any]]:
    reader = ShardReader(release.uri, endpoint_url=endpoint_url)
    sampling = Sampling(seed=settings.seed, gesture_p=settings.gesture_box_p,
                        scale_min=settings.scale_min, scale_max=settings.scale_max,
                        shift=settings.shift, color_jitter=settings.color_jitter,
                        flip=settings.flip)
    train = HandCrops(release.train, reader, size=settings.input_size, sampling=sampling)
    evaluation = HandCrops(release.evaluation, reader, size=settings.input_size)
    pin = device.type == "cuda"
    return (hand_loader(train, batch_size=settings.batch_size, workers=settings.workers,
                        seed=settings.seed, shuffle=True, pin_memory=pin,
                        drop_last=len(train) > settings.batch_size),
            hand_loader(evaluation, batch_size=settings.batch_size, workers=settings.workers,
                        seed=settings.seed, shuffle=False, pin_memory=pin))


def _check_run_dir(run_dir: Path, *, resume: bool) -> None:
    """Resume: a checkpoint and run.json are there. Fresh: the folder is absent, empty, or
    holds only the run.json of a run that completed no epoch."""
    if resume and not ((run_dir / CHECKPOINT).is_file() and (run_dir / RUN_INFO).is_file()):
        raise RunDirError(f"nothing to resume in {run_dir}: no {CHECKPOINT} and {RUN_INFO}")
    if not resume and run_dir.is_dir() and {p.name for p in run_dir.iterdir()} - {RUN_INFO}:
        raise RunDirError(f"{run_dir} is not empty: --resume continues the run there, or "
                          "choose another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a folder")


def _check_resumable(previous: dict[str, Any], release: TrainingRelease,
                     settings: TrainSettings) -> None:
    """The run in run.json trained on this release with these settings."""
    before = previous.get("release", {})
    if before.get("sha256sums_sha256") != release.checksums_sha256 or \
            before.get("view") != release.view:
        raise RunDirError("the run to resume trained on another release or view "
                          f"({before.get('version')}, {before.get('view')})")
    conflicts = settings.resume_conflicts(TrainSettings(**previous["settings"]))
    if conflicts:
        raise RunDirError(f"the run to resume used other settings: {', '.join(conflicts)}")


def start_run(release: TrainingRelease, settings: TrainSettings, *, run_dir: Path,
              resume: bool = False, endpoint_url: str | None = None) -> TrainingRun:
    """A fresh run in ``run_dir`` (absent or empty), or the run there resumed from its last
    completed epoch. Raises RunDirError; ValueError for ``--device cuda`` without CUDA."""
    _check_run_dir(run_dir, resume=resume)
    previous = read_json(run_dir / RUN_INFO) if resume else {}
    if resume:
        _check_resumable(previous, release, settings)
    device = resolve_device(settings.device)
    seed_everything(settings.seed)
    model = build_model(settings.model, num_classes=len(release.classes)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    train_loader, eval_loader = _loaders(release, settings, endpoint_url=endpoint_url,
                                         device=device)
    optimizer, scheduler = optimizer_for(model, settings, iterations_per_epoch=len(train_loader))
    run = TrainingRun(release=release, settings=settings, run_dir=run_dir, device=device,
                      model=model, optimizer=optimizer, scheduler=scheduler,
                      train_loader=train_loader, eval_loader=eval_loader, info={})
    if resume:
        state = load_training_state(run_dir / CHECKPOINT, model=model, optimizer=optimizer,
                                    scheduler=scheduler)
        run.epochs, run.best = list(state["epochs"]), dict(state["best"])
        run.metrics = read_json(run_dir / METRICS) if (run_dir / METRICS).is_file() else {}
    run.info = _run_info(run, started=previous.get("started_at"))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / RUN_INFO, run.info)
    return run


def _run_info(run: TrainingRun, *, started: str | None) -> dict[str, Any]:
    s = run.settings
    return {
        "release": run.release.describe(), "settings": s.as_dict(), "seed": s.seed,
        "model": {"name": s.model, "input_size": s.input_size,
                  "parameters": sum(p.numel() for p in run.model.parameters()),
                  "heads": {"gesture": list(run.release.classes),
                            "leading_hand": list(LEADING_HANDS)}},
        "device": str(run.device), "software": software_versions(),
        "started_at": started or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "epochs": run.epochs, "best": run.best,
    }


def _weights_metadata(run: TrainingRun, epoch: int) -> dict[str, str]:
    """What a reader of the weights needs to rebuild and use the model (strings only)."""
    import json

    return {"model": run.settings.model, "input_size": str(run.settings.input_size),
            "classes": json.dumps(list(run.release.classes)),
            "leading_hands": json.dumps(list(LEADING_HANDS)), "epoch": str(epoch),
            "release": run.release.version, "sha256sums_sha256": run.release.checksums_sha256}


def evaluate(run: TrainingRun, *, label: str = "eval") -> dict[str, Any]:
    """Metrics of both heads over every box of the evaluation split (scale 1)."""
    gesture, hand = predict(run.model, run.eval_loader, device=run.device,
                            on_batch=lambda d, t: progress.report(label, d, t))
    e = run.release.evaluation
    return score_heads(label=e.label, hand=e.hand, gesture_hand=e.gesture_hand,
                       gesture_pred=gesture, hand_pred=hand, classes=run.release.classes,
                       hands=LEADING_HANDS)


def run_epoch(run: TrainingRun) -> dict[str, Any]:
    """Train and evaluate the next epoch, save the weights (and the best ones), the
    checkpoint, metrics.json and run.json; return the epoch's record."""
    epoch, total = run.epochs_done, run.settings.epochs
    name = f"epoch {epoch + 1}/{total}"
    figures = train_one_epoch(run.model, run.train_loader, run.optimizer, run.scheduler,
                              device=run.device, epoch=epoch,
                              on_batch=lambda d, t: progress.report(f"{name} train", d, t))
    started = time.perf_counter()
    heads = evaluate(run, label=f"{name} eval")
    record = {"epoch": epoch + 1, "loss": figures.loss,
              "lr": float(run.scheduler.get_last_lr()[0]),
              **{f"{h}_{k}": heads[h][k] for h in HEADS
                 for k in ("f1_macro", "f1_weighted", "accuracy")},
              "train_seconds": round(figures.seconds, 3),
              "eval_seconds": round(time.perf_counter() - started, 3),
              "images_per_s": round(figures.images_per_s, 1)}
    run.epochs.append(record)
    run.metrics = {"epoch": epoch + 1, "split": run.release.eval_split,
                   "view": run.release.view, **heads}
    _save(run, improved=_improves(run.best, record))
    return record


def _improves(best: dict[str, Any], record: dict[str, Any]) -> bool:
    score = record["gesture_f1_macro"]
    return score is not None and (not best or score > best["gesture_f1_macro"])


def _save(run: TrainingRun, *, improved: bool) -> None:
    epoch = run.epochs_done
    metadata = _weights_metadata(run, epoch)
    save_weights(run.model, run.run_dir / MODEL_WEIGHTS, metadata=metadata)
    if improved:
        run.best = {"epoch": epoch, "gesture_f1_macro": run.epochs[-1]["gesture_f1_macro"]}
        save_weights(run.model, run.run_dir / BEST_WEIGHTS, metadata=metadata)
    save_training_state(run.run_dir / CHECKPOINT, model=run.model, optimizer=run.optimizer,
                        scheduler=run.scheduler, progress={"epochs": run.epochs,
                                                           "best": run.best})
    write_json(run.run_dir / METRICS, run.metrics)
    run.info.update(epochs=run.epochs, best=run.best)
    write_json(run.run_dir / RUN_INFO, run.info)


def finish_run(run: TrainingRun) -> dict[str, Any]:
    """Draw each head's confusion matrix (last evaluation); return the run's summary."""
    for head in HEADS:
        if head in run.metrics:
            write_bytes(run.run_dir / confusion_png(head), confusion_figure_png(
                run.metrics[head]["confusion"], classes=run.metrics[head]["classes"],
                title=f"{head}: {run.release.version} {run.release.eval_split}, "
                      f"epoch {run.metrics['epoch']}"))
    last = run.epochs[-1] if run.epochs else {}
    return {
        "run_dir": str(run.run_dir), "release": run.release.version,
        "release_uri": run.release.uri, "view": run.release.view,
        "eval_split": run.release.eval_split, "device": str(run.device),
        "epochs": run.epochs_done, "loss": last.get("loss"),
        **{h: {k: run.metrics[h][k] for k in ("f1_macro", "f1_weighted", "accuracy",
                                              "samples")}
           for h in HEADS if h in run.metrics},
        "best": run.best,
    }
