"""Out-of-fold probabilities: for each fold, a fresh model trained on the other folds'
images with the trainer's own loop, then asked about every box of the held-out fold.

Training draws crops as ``hagrid train`` does (``Sampling`` from the settings, one item per
image); the held-out boxes are cropped at scale 1, as an evaluation. Each fold's model
starts from the seed plus the fold's index, so an audit is reproducible on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from schemas.train import CPU_RECIPE, TrainSettings
from tasks.audit.release import ReleaseHands, subset_hands
from tasks.train.dataset import HandCrops, Sampling, ShardReader, hand_loader
from tasks.train.loop import optimizer_for, predict_probabilities, resolve_device, train_one_epoch
from tasks.train.model import build_model
from tasks.train.run import seed_everything


def audit_settings(*, epochs: int = 10, model: str = "small", input_size: int = 64,
                   device: str = "auto", seed: int = 0, view: str = "auto",
                   verify_shards: bool = True) -> TrainSettings:
    """The audit's training settings: the CPU recipe (``CPU_RECIPE``), read in-process."""
    return TrainSettings(epochs=epochs, model=model, input_size=input_size, device=device,
                         view=view, workers=0, seed=seed, verify_shards=verify_shards,
                         **CPU_RECIPE)


@dataclass(frozen=True)
class FoldPrediction:
    """A fold model's probabilities for the rows of its held-out fold."""

    fold: int
    rows: np.ndarray  # int64: the rows of the release's hands that were held out
    gesture: np.ndarray  # float64 [rows, classes]
    hand: np.ndarray  # float64 [rows, 2]: right, left
    seconds: float  # training and prediction


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold probabilities of every row of the release's hands."""

    gesture: np.ndarray  # float64 [n, classes]
    hand: np.ndarray  # float64 [n, 2]
    seconds: tuple[float, ...]  # per fold


def _sampling(settings: TrainSettings, seed: int) -> Sampling:
    return Sampling(seed=seed, gesture_p=settings.gesture_box_p, scale_min=settings.scale_min,
                    scale_max=settings.scale_max, shift=settings.shift,
                    color_jitter=settings.color_jitter, flip=settings.flip)


def predict_fold(data: ReleaseHands, image_fold: np.ndarray, fold: int, *,
                 settings: TrainSettings, endpoint_url: str | None = None) -> FoldPrediction:
    """Train a fresh model on the images outside ``fold`` (``image_fold``: a fold per image)
    for ``settings.epochs`` epochs, then predict both heads' probabilities on each box of
    the images in ``fold``."""
    start = time.perf_counter()
    seed = settings.seed + fold
    seed_everything(seed)
    device = resolve_device(settings.device)
    images = np.arange(len(image_fold))
    held_out = images[image_fold == fold]
    reader = ShardReader(data.uri, endpoint_url=endpoint_url)
    try:
        train = HandCrops(subset_hands(data.hands, images[image_fold != fold]), reader,
                          size=settings.input_size, sampling=_sampling(settings, seed))
        held = HandCrops(subset_hands(data.hands, held_out), reader, size=settings.input_size)
        train_loader = hand_loader(train, batch_size=settings.batch_size, workers=0, seed=seed,
                                   shuffle=True, drop_last=len(train) > settings.batch_size)
        model = build_model(settings.model, num_classes=len(data.classes)).to(device)
        optimizer, scheduler = optimizer_for(model, settings,
                                             iterations_per_epoch=len(train_loader))
        for epoch in range(settings.epochs):
            train_one_epoch(model, train_loader, optimizer, scheduler, device=device,
                            epoch=epoch)
        gesture, hand = predict_probabilities(
            model, hand_loader(held, batch_size=settings.batch_size, workers=0, seed=seed,
                               shuffle=False), device=device)
    finally:
        reader.close()
    rows = np.flatnonzero(np.isin(data.hands.image, held_out))
    return FoldPrediction(fold=fold, rows=rows, gesture=gesture, hand=hand,
                          seconds=time.perf_counter() - start)


def assemble(predictions: Sequence[FoldPrediction], *, n_rows: int, n_classes: int
             ) -> OutOfFold:
    """The folds' predictions as one array per head; ValueError when a row is missing or
    predicted twice."""
    gesture = np.full((n_rows, n_classes), np.nan)
    hand = np.full((n_rows, 2), np.nan)
    seen = np.zeros(n_rows, dtype=np.int64)
    for p in predictions:
        gesture[p.rows], hand[p.rows] = p.gesture, p.hand
        seen[p.rows] += 1
    if not np.all(seen == 1):
        raise ValueError("the folds' held-out rows do not cover every row exactly once")
    ordered = sorted(predictions, key=lambda p: p.fold)
    return OutOfFold(gesture=gesture, hand=hand, seconds=tuple(p.seconds for p in ordered))
