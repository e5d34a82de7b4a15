"""One epoch of training and one pass of evaluation, as torchvision's reference scripts keep
them: plain functions over a model, a loader and an optimizer.

The loss is HaGRID v1's: the cross-entropy of the gesture head plus that of the leading-hand
head (over the crops whose leading hand is known). The scheduler steps once per iteration:
a linear warm-up from ``warmup_start_factor x lr`` over ``min(warmup_iters, iterations per
epoch - 1)`` iterations, then a constant rate (HaGRID's) or a cosine decay to 0 at the last
epoch (``lr_decay="cosine"``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from schemas.train import TrainSettings
from tasks.train.dataset import EpochSampler

OnBatch = Callable[[int, int], None]  # (batches done, batches in the pass)


class DivergedError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class EpochFigures:
    """What one training epoch did."""

    loss: float  # mean over its iterations
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        """Training throughput, loading included."""
        return self.images / self.seconds if self.seconds > 0 else 0.0


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU. ``cuda`` without CUDA is a ValueError."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class WarmupSchedule:
    """The learning-rate factor at iteration ``it``: a linear warm-up from ``start`` to 1
    over ``warmup`` iterations, then constant (HaGRID's) or, with ``total`` set, a cosine
    decay to 0 at iteration ``total``. A picklable callable, so a checkpoint stores it."""

    def __init__(self, *, start: float, warmup: int, total: int | None) -> None:
        self.start, self.warmup, self.total = start, warmup, total

    def __call__(self, it: int) -> float:
        if it < self.warmup:
            return self.start + (1.0 - self.start) * it / self.warmup
        if self.total is None or self.total <= self.warmup:
            return 1.0
        done = min(1.0, (it - self.warmup) / (self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * done))


def optimizer_for(model: nn.Module, settings: TrainSettings, *, iterations_per_epoch: int
                  ) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """HaGRID's SGD and its linear warm-up, then a constant rate or (``lr_decay="cosine"``)
    a cosine decay that reaches 0 at the end of ``settings.epochs``."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    warmup = max(1, min(settings.warmup_iters, iterations_per_epoch - 1))
    total = settings.epochs * iterations_per_epoch if settings.lr_decay == "cosine" else None
    schedule = WarmupSchedule(start=settings.warmup_start_factor, warmup=warmup, total=total)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def _batch_on(device: torch.device, images: Tensor) -> Tensor:
    """An NHWC uint8 batch as NCHW floats in [0, 1] (channels_last storage on CUDA)."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    return x if device.type == "cuda" else x.contiguous()


def _autocast(device: torch.device) -> Any:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" \
        else nullcontext()


@contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic algorithms on the CPU for the duration (restored after)."""
    before = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def two_head_loss(gesture: Tensor, hand: Tensor, gesture_target: Tensor,
                  hand_target: Tensor) -> Tensor:
    """Cross-entropy of the gesture head plus that of the leading-hand head over the crops
    whose leading hand is known (target >= 0)."""
    known = hand_target >= 0
    loss = F.cross_entropy(gesture.float(), gesture_target)
    if bool(known.any()):
        loss = loss + F.cross_entropy(hand.float()[known], hand_target[known])
    return loss


def train_one_epoch(model: nn.Module, loader: DataLoader[Any], optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, *, device: torch.device,
                    epoch: int, on_batch: OnBatch | None = None) -> EpochFigures:
    """One pass over the training loader; the scheduler steps per iteration."""
    sampler = loader.sampler
    if isinstance(sampler, EpochSampler):
        sampler.set_epoch(epoch)
    model.train()
    total, images, start = 0.0, 0, time.perf_counter()
    batches = len(loader)
    with deterministic(device):
        for step, (pixels, gesture_t, hand_t) in enumerate(loader, start=1):
            x = _batch_on(device, pixels)
            with _autocast(device):
                gesture, hand = model(x)
            loss = two_head_loss(gesture, hand, gesture_t.to(device), hand_t.to(device))
            value = float(loss.detach())
            if not math.isfinite(value):
                raise DivergedError(f"epoch {epoch + 1}, iteration {step}: the loss is {value}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += value
            images += len(pixels)
            if on_batch is not None:
                on_batch(step, batches)
    return EpochFigures(loss=total / max(batches, 1), images=images,
                        seconds=time.perf_counter() - start)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader[Any], *, device: torch.device,
            on_batch: OnBatch | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class indices of both heads for every item, in loader order."""
    gesture, hand = _logits(model, loader, device=device, on_batch=on_batch)
    return gesture.argmax(dim=1).numpy(), hand.argmax(dim=1).numpy()


@torch.no_grad()
def predict_probabilities(model: nn.Module, loader: DataLoader[Any], *, device: torch.device,
                          on_batch: OnBatch | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities of both heads for every item, in loader order: the gesture
    head's ``[n, classes]`` and the leading-hand head's ``[n, 2]`` (float64)."""
    gesture, hand = _logits(model, loader, device=device, on_batch=on_batch)
    return (F.softmax(gesture, dim=1).numpy().astype(np.float64),
            F.softmax(hand, dim=1).numpy().astype(np.float64))


def _logits(model: nn.Module, loader: DataLoader[Any], *, device: torch.device,
            on_batch: OnBatch | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both heads' float32 logits on the CPU for every item, in loader order (the model in
    eval mode, deterministic kernels)."""
    model.eval()
    gestures, hands = [], []
    batches = len(loader)
    with deterministic(device):
        for step, (pixels, _gesture_t, _hand_t) in enumerate(loader, start=1):
            with _autocast(device):
                gesture, hand = model(_batch_on(device, pixels))
            gestures.append(gesture.float().cpu())
            hands.append(hand.float().cpu())
            if on_batch is not None:
                on_batch(step, batches)
    if not gestures:
        head = getattr(model, "gesture", None)
        return torch.zeros((0, int(getattr(head, "out_features", 0)))), torch.zeros((0, 2))
    return torch.cat(gestures), torch.cat(hands)
