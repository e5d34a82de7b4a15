"""A map-style torch Dataset over a release's hands that reads each picture by its shard
offset, never scanning a tar, and cuts HaGRID v1's square crop from it.

``ShardReader`` opens its file handles (or its S3 client) lazily in the process that reads:
a DataLoader worker forked from the trainer never shares the trainer's handles, so one shard
serves any number of workers. A local shard is read with ``os.pread`` (a seek and a read in
one call, on this process's own descriptor); an S3 shard with a ranged GET.

Randomness is a pure function of (seed, epoch, index): which box is cropped and at what scale
does not depend on the worker that reads it, so runs are reproducible with any number of
workers, and a resumed run draws what an uninterrupted one would have drawn.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from tasks.storage import LocalStorage, Storage, open_storage
from tasks.train.hands import Hands, pick_hand

Key = tuple[int, int]  # (epoch, index): what the samplers yield and the datasets take


class SampleError(RuntimeError):
    """A picture could not be read or decoded (the shard named in the message)."""


class ShardReader:
    """Byte ranges of a release's shards, with handles owned by the process that reads."""

    def __init__(self, release_uri: str, *, endpoint_url: str | None = None) -> None:
        self.release_uri = release_uri
        self.endpoint_url = endpoint_url
        self._pid = -1
        self._storage: Storage | None = None
        self._files: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:  # spawned workers open their own handles
        return {"release_uri": self.release_uri, "endpoint_url": self.endpoint_url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.release_uri, self.endpoint_url = state["release_uri"], state["endpoint_url"]
        self._pid, self._storage, self._files = -1, None, {}

    def _own(self) -> Storage:
        """This process's storage: a process that inherited another's handles (a forked
        DataLoader worker) opens its own and leaves the inherited ones to their owner."""
        if self._pid != os.getpid() or self._storage is None:
            self._pid, self._files = os.getpid(), {}
            self._storage = open_storage(self.release_uri, endpoint_url=self.endpoint_url)
        return self._storage

    @property
    def reads_locally(self) -> bool:
        """True when the shards are local files (False: S3)."""
        return isinstance(self._own(), LocalStorage)

    def read(self, shard: str, offset: int, size: int) -> bytes:
        """``size`` bytes of ``shard`` from ``offset``; EOFError on a short read."""
        storage = self._own()
        if not isinstance(storage, LocalStorage):
            return storage.read_range(shard, offset, size)
        fd = self._files.get(shard)
        if fd is None:
            fd = self._files[shard] = os.open(storage.path / shard, os.O_RDONLY | os.O_CLOEXEC)
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise EOFError(f"{shard}: wanted {size} bytes at {offset}, got {len(data)}")
        return data

    def close(self) -> None:
        """Close this process's handles (inherited ones are left alone)."""
        if self._pid == os.getpid():
            for fd in self._files.values():
                os.close(fd)
        self._files, self._storage, self._pid = {}, None, -1


def crop_window(box: Sequence[float], *, scale: float, shift: tuple[float, float] = (0.0, 0.0)
                ) -> tuple[float, float, float, float]:
    """HaGRID's square around a box ``[x, y, w, h]`` (any unit): centred on the box, of side
    ``scale x max(w, h)``, its centre moved by ``shift`` (fractions of the side); returns
    ``(left, top, right, bottom)``, possibly past the picture."""
    x, y, w, h = box
    side = scale * max(w, h)
    cx, cy = x + w / 2 + shift[0] * side, y + h / 2 + shift[1] * side
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def crop_square(data: bytes, box: Sequence[float], *, scale: float, size: int,
                shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Decode a picture, cut the square of ``crop_window`` around ``box`` (relative to the
    picture), black outside it, resized to ``size`` x ``size``; HxWx3 uint8.

    A JPEG is decoded at a reduced scale (``Image.draft``) when the square stays at least
    ``size`` pixels wide, which spares most of the decoding of a FullHD frame.
    """
    source = Image.open(io.BytesIO(data))
    width, height = source.size
    x, y, w, h = box
    side = scale * max(w * width, h * height)
    reduce = 2 ** min(3, int(math.log2(max(side / size, 1.0))))
    if reduce > 1:
        source.draft("RGB", (math.ceil(width / reduce), math.ceil(height / reduce)))
    image = source.convert("RGB")
    sx, sy = image.width, image.height  # the decoded size (draft may have reduced it)
    left, top, right, bottom = crop_window((x * sx, y * sy, w * sx, h * sy), scale=scale,
                                           shift=shift)
    window = image.crop((round(left), round(top), max(round(right), round(left) + 1),
                         max(round(bottom), round(top) + 1)))
    return np.asarray(window.resize((size, size), Image.Resampling.BILINEAR))


@dataclass(frozen=True)
class Sampling:
    """How a training item is drawn from an image: HaGRID v1's recipe (a box, a scale), and
    three augmentations beyond it, off by default: the crop's centre moved by up to ``shift``
    of its side each way; brightness and contrast each scaled by a factor drawn from
    ``[1 - color_jitter, 1 + color_jitter]``; with probability ``flip``, the crop mirrored
    left to right and its leading hand swapped (a mirrored right hand is a left hand; no
    gesture class depends on the side)."""

    seed: int
    gesture_p: float = 0.7
    scale_min: float = 1.0
    scale_max: float = 2.0
    shift: float = 0.0
    color_jitter: float = 0.0
    flip: float = 0.0


@dataclass(frozen=True)
class Draw:
    """What item ``(epoch, index)`` crops: the hand row, the scale, the centre's shift, the
    brightness and contrast factors, and whether it is mirrored."""

    row: int
    scale: float
    shift: tuple[float, float] = (0.0, 0.0)
    brightness: float = 1.0
    contrast: float = 1.0
    mirrored: bool = False


def adjust_colors(pixels: np.ndarray, *, brightness: float, contrast: float) -> np.ndarray:
    """``pixels`` (uint8) with their contrast scaled about their mean, then their brightness
    scaled, clipped to 0-255."""
    if brightness == 1.0 and contrast == 1.0:
        return pixels
    values = pixels.astype(np.float32)
    mean = float(values.mean())
    values = ((values - mean) * contrast + mean) * brightness
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)


class HandCrops(Dataset[tuple[torch.Tensor, int, int]]):
    """Square hand crops of a split: with ``sampling``, one item per image (a box drawn by
    ``pick_hand``, a scale drawn from the range); without, one item per box at scale 1.

    Items are ``(HxWx3 uint8 tensor, gesture target, leading-hand target or -1)``, keyed by
    ``(epoch, index)``.
    """

    def __init__(self, hands: Hands, reader: ShardReader, *, size: int,
                 sampling: Sampling | None = None) -> None:
        self.hands, self.reader, self.size, self.sampling = hands, reader, size, sampling
        self.starts = hands.image_rows()

    def __len__(self) -> int:
        return self.hands.n_images if self.sampling else len(self.hands)

    def choose(self, key: Key) -> Draw:
        """What item ``key`` crops (a pure function of the seed and the key)."""
        epoch, index = key
        if self.sampling is None:
            return Draw(row=index, scale=1.0)
        s = self.sampling
        rng = np.random.default_rng((s.seed, epoch, index))
        rows = np.arange(self.starts[index], self.starts[index + 1])
        row = pick_hand(rows, self.hands.gesture_hand, rng, gesture_p=s.gesture_p)
        draw = Draw(row=row, scale=float(rng.uniform(s.scale_min, s.scale_max)))
        if s.shift > 0:
            dx, dy = rng.uniform(-s.shift, s.shift, size=2)
            draw = replace(draw, shift=(float(dx), float(dy)))
        if s.color_jitter > 0:
            b, c = rng.uniform(1 - s.color_jitter, 1 + s.color_jitter, size=2)
            draw = replace(draw, brightness=float(b), contrast=float(c))
        if s.flip > 0:
            draw = replace(draw, mirrored=bool(rng.random() < s.flip))
        return draw

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int, int]:
        draw = self.choose(key)
        row, h = draw.row, self.hands
        shard = h.shards[h.shard[row]]
        try:
            data = self.reader.read(shard, int(h.offset[row]), int(h.size[row]))
            pixels = crop_square(data, h.box[row], scale=draw.scale, size=self.size,
                                 shift=draw.shift)
        except (OSError, EOFError, ValueError, Image.DecompressionBombError) as exc:
            raise SampleError(f"{shard} at {h.offset[row]}: {exc}") from exc
        pixels = adjust_colors(pixels, brightness=draw.brightness, contrast=draw.contrast)
        hand = int(h.hand[row])
        if draw.mirrored:
            pixels, hand = pixels[:, ::-1], (1 - hand if hand >= 0 else hand)
        return torch.from_numpy(pixels.copy()), int(h.label[row]), hand


class EpochSampler(Sampler[Key]):
    """``(epoch, index)`` keys of one epoch: a permutation drawn from (seed, epoch) when
    shuffling, index order otherwise. ``set_epoch`` before each pass (the sampler runs in
    the trainer's process: the workers learn the epoch from the keys)."""

    def __init__(self, n: int, *, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next pass draws."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Key]:
        order = (np.random.default_rng((self.seed, self.epoch, 1)).permutation(self.n)
                 if self.shuffle else np.arange(self.n))
        return iter([(self.epoch, int(i)) for i in order])


def seed_worker(worker_id: int) -> None:
    """Seed Python's and numpy's global generators in a DataLoader worker from the seed
    torch gave it (the dataset draws from its own generators; this covers anything else)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def worker_context(reader: ShardReader) -> multiprocessing.context.BaseContext:
    """How DataLoader workers start. Not ``fork``: forking a process that runs Prefect's
    threads is not safe (a forked worker of a flow run may exit with status 1 at its end).

    Local shards: ``forkserver``, as the publish stage's pool, preloading torch and this
    module, so a worker starts in milliseconds. S3 shards: ``spawn``, so each worker reads
    the credentials from the environment as it is now (a fork server started earlier in
    this process would hand on the environment of its start).
    """
    if not reader.reads_locally:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", __name__])
    return context


def hand_loader(dataset: HandCrops, *, batch_size: int, workers: int, seed: int,
                shuffle: bool, drop_last: bool = False, pin_memory: bool = False
                ) -> DataLoader[Any]:
    """A DataLoader over ``dataset`` with an ``EpochSampler`` (``loader.sampler``) and
    seeded workers, started for each pass (``worker_context``), so none outlives it."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), seed=seed,
                                                             shuffle=shuffle),
        num_workers=workers, worker_init_fn=seed_worker,
        multiprocessing_context=worker_context(dataset.reader) if workers else None,
        generator=torch.Generator().manual_seed(seed), drop_last=drop_last,
        pin_memory=pin_memory, prefetch_factor=4 if workers else None)
