"""Settings of a baseline training run, and the shape of a run folder.

A run folder ``RUN_DIR/`` holds::

    model.safetensors        the weights after the last completed epoch
    best.safetensors         the weights of the epoch with the best gesture macro F1
    checkpoint.pt            optimizer, scheduler and epoch: what ``--resume`` continues from
    run.json                 release (version, uri, SHA256SUMS digest), settings, seed,
                             software versions, one record per completed epoch
    metrics.json             the evaluation metrics of the last epoch, per head
    confusion_<head>.png     the confusion matrix of each head (last epoch)

The recipe is HaGRID v1's classifier (hukenovs/hagrid, branch Hagrid_v1, ``classifier/``):
a square crop around a hand box of side ``max(w, h) x s``, ``s ~ U(1, 2)`` in training and
1 at evaluation; the gesture box with ``p = 0.7``, otherwise a free hand (``no_gesture``),
whose leading-hand target is flipped; two heads, cross-entropy summed; SGD with momentum and
a linear warm-up from ``0.001 x lr`` over up to 1,000 iterations, then constant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TypedDict

MODELS: tuple[str, ...] = ("resnet18", "small")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
LR_DECAYS: tuple[str, ...] = ("none", "cosine")  # after the warm-up: constant, or to 0
VIEWS: tuple[str, ...] = ("auto", "full", "crops")  # auto: the crops view when published
HEADS: tuple[str, ...] = ("gesture", "leading_hand")
LEADING_HANDS: tuple[str, ...] = ("right", "left")  # HaGRID's target indices: right 0, left 1
NO_GESTURE = "no_gesture"  # the free hand's box label: the last of HaGRID v1's 19 classes
DEFAULT_INPUT_SIZE: dict[str, int] = {"resnet18": 224, "small": 64}

# What `hagrid demo` trains with (and bench/bench_train.py compares with HaGRID's recipe): a
# short run from scratch on a CPU learns faster at a higher rate decayed to 0, and a small
# synthetic release needs more than HaGRID's crop-scale augmentation (bench/RESULTS.md).
class Recipe(TypedDict):
    """The optimisation and augmentation settings of a recipe (``TrainSettings`` fields)."""

    batch_size: int
    lr: float
    lr_decay: str
    warmup_iters: int
    shift: float
    color_jitter: float
    flip: float


CPU_RECIPE: Recipe = {
    "batch_size": 32, "lr": 0.05, "lr_decay": "cosine", "warmup_iters": 50,
    "shift": 0.1, "color_jitter": 0.2, "flip": 0.5,
}

MODEL_WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "best.safetensors"
CHECKPOINT = "checkpoint.pt"
RUN_INFO = "run.json"
METRICS = "metrics.json"


def confusion_png(head: str) -> str:
    """File name of a head's confusion matrix in the run folder."""
    return f"confusion_{head}.png"


@dataclass(frozen=True)
class TrainSettings:
    """Everything a run decides with, besides the release. Same settings, same seed and same
    release give the same metrics on CPU.

    - ``epochs``: the total to reach (``--resume`` continues up to it).
    - ``model``: ``resnet18`` (HaGRID's baseline) or ``small`` (a narrow ResNet for CPUs);
      ``input_size``: the side of the square input, in pixels.
    - ``device``: ``auto`` takes CUDA when present (bf16 autocast, channels_last).
    - ``view``: ``full`` frames, the published hand ``crops``, or ``auto`` (crops when
      published). ``workers``: DataLoader processes (0: read in the training process).
    - ``lr``, ``momentum``, ``weight_decay``, ``warmup_start_factor``, ``warmup_iters``:
      the optimizer and the warm-up (HaGRID's values by default); ``lr_decay``: after the
      warm-up, ``none`` keeps the rate (HaGRID) and ``cosine`` decays it to 0 at ``epochs``.
    - ``gesture_box_p``: the chance of cropping the gesture hand when the image has a free
      hand too; ``scale_min`` / ``scale_max``: the training crop scale range.
    - ``shift``, ``color_jitter``, ``flip``: augmentations beyond HaGRID's recipe (off by
      default): the training crop's centre moved by up to ``shift`` x its side each way;
      brightness and contrast scaled by factors in ``1 +- color_jitter``; the crop mirrored
      with probability ``flip``, its leading hand swapped.
    - ``verify_shards``: hash the shards against ``SHA256SUMS`` before training (off: only
      their presence and length are checked; manifests and release.json are always hashed).
    """

    epochs: int = 10
    batch_size: int = 64
    model: str = "small"
    input_size: int = 64
    device: str = "auto"
    view: str = "auto"
    workers: int = 2
    seed: int = 0
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_start_factor: float = 0.001
    warmup_iters: int = 1000
    lr_decay: str = "none"
    gesture_box_p: float = 0.7
    scale_min: float = 1.0
    scale_max: float = 2.0
    shift: float = 0.0
    color_jitter: float = 0.0
    flip: float = 0.0
    verify_shards: bool = True

    def __post_init__(self) -> None:
        for name, value, allowed in (("model", self.model, MODELS),
                                     ("device", self.device, DEVICES),
                                     ("view", self.view, VIEWS),
                                     ("lr_decay", self.lr_decay, LR_DECAYS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; use one of {allowed}")
        if self.epochs < 1 or self.batch_size < 2 or self.workers < 0:
            raise ValueError("epochs must be >= 1, batch_size >= 2 and workers >= 0")
        if not 16 <= self.input_size <= 1024:
            raise ValueError(f"input_size must be 16-1024 px, got {self.input_size}")
        if not 1.0 <= self.scale_min <= self.scale_max <= 2.0:
            raise ValueError("crop scales must satisfy 1 <= scale_min <= scale_max <= 2")
        if not (0.0 <= self.shift <= 0.5 and 0.0 <= self.color_jitter < 1.0
                and 0.0 <= self.flip <= 1.0):
            raise ValueError("shift must be in [0, 0.5], color_jitter in [0, 1), flip in [0, 1]")
        if not 0.0 <= self.gesture_box_p <= 1.0 or self.lr <= 0 or self.warmup_iters < 0:
            raise ValueError("gesture_box_p must be in [0, 1], lr > 0, warmup_iters >= 0")

    def as_dict(self) -> dict[str, object]:
        """The settings as plain JSON values (recorded in run.json)."""
        return asdict(self)

    def resume_conflicts(self, other: TrainSettings) -> list[str]:
        """Names of the settings that differ from ``other`` and would change what a resumed
        run computes: everything but ``device``, ``workers``, ``verify_shards``, and
        ``epochs`` unless a cosine decay (whose length it sets) is on."""
        free = {"device", "workers", "verify_shards"}
        if self.lr_decay == "none" and other.lr_decay == "none":
            free.add("epochs")
        mine, theirs = self.as_dict(), other.as_dict()
        return sorted(k for k in mine if k not in free and mine[k] != theirs[k])
