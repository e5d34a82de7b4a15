"""Training input throughput (issue 13): hand crops per second from the full frames and from
the crops view, against the decode floor of the same bytes, and the model's own speed.

For each view, in one process (what ``workers=0`` does) and with DataLoader workers:
- ``loader``: training items (a hand picked, a random scale, cropped, resized) per second;
- ``floor``: ``Image.open(...).convert("RGB")`` of the same members, bytes already in memory
  (the least work any loader of those bytes does);
and the small model and ResNet18's training steps per second on random inputs (no data).
Each figure is the median of ``--repeats`` runs. Usage:

    .venv/bin/python bench/bench_train_loading.py RELEASE [--items 400] [--repeats 3]

RELEASE: a release with the crops view (``hagrid demo --n 2000 --no-train`` makes one).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from schemas.train import TrainSettings
from tasks.train.dataset import HandCrops, Sampling, ShardReader, hand_loader
from tasks.train.model import build_model
from tasks.train.release import open_release


def median_rate(count: int, run: Callable[[], Any], repeats: int) -> float:
    """Items per second: ``count`` over the median wall time of ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return count / statistics.median(times)


def view_figures(release: str, view: str, *, items: int, size: int, repeats: int,
                 workers: int) -> dict[str, float]:
    """Loader and decode-floor rates of one view's train split."""
    data = open_release(release, view=view, hash_shards=False)
    reader = ShardReader(data.uri)
    dataset = HandCrops(data.train, reader, size=size, sampling=Sampling(seed=0))
    n = min(items, len(dataset))
    keys = [(0, i) for i in range(n)]
    rows = [dataset.choose(k).row for k in keys]
    hands = data.train
    blobs = [reader.read(hands.shards[hands.shard[r]], int(hands.offset[r]), int(hands.size[r]))
             for r in rows]

    def decode_all() -> None:
        for blob in blobs:
            with Image.open(io.BytesIO(blob)) as image:
                image.convert("RGB")

    def load_in_process() -> None:
        for key in keys:
            dataset[key]

    subset = HandCrops(hands, reader, size=size, sampling=Sampling(seed=0))
    loader = hand_loader(subset, batch_size=32, workers=workers, seed=0, shuffle=False)

    def load_with_workers() -> None:
        seen = 0
        for batch in loader:
            seen += len(batch[0])
            if seen >= n:
                break

    return {"floor": median_rate(n, decode_all, repeats),
            "in_process": median_rate(n, load_in_process, repeats),
            f"workers_{workers}": median_rate(n, load_with_workers, repeats),
            "mean_bytes": sum(map(len, blobs)) / len(blobs)}


def model_figures(*, size: int, repeats: int, classes: int = 19) -> dict[str, float]:
    """Training images per second of each model on random inputs (batch 32, this process's
    torch threads)."""
    out = {}
    for name in ("small", "resnet18"):
        model = build_model(name, num_classes=classes)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
        images = torch.randn(32, 3, size, size)
        target = torch.randint(0, classes, (32,))
        hands = torch.randint(0, 2, (32,))

        def step(model: torch.nn.Module = model, optimizer: torch.optim.SGD = optimizer,
                 images: torch.Tensor = images, target: torch.Tensor = target,
                 hands: torch.Tensor = hands) -> None:
            for _ in range(3):
                gesture, leading = model(images)
                loss = (torch.nn.functional.cross_entropy(gesture, target)
                        + torch.nn.functional.cross_entropy(leading, hands))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

        step()  # warm-up
        out[name] = median_rate(3 * 32, step, repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release")
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=TrainSettings().input_size)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch threads {torch.get_num_threads()}, input {args.size} px, "
          f"{args.items} items, median of {args.repeats}")
    for view in ("full", "crops"):
        fig = view_figures(args.release, view, items=args.items, size=args.size,
                           repeats=args.repeats, workers=args.workers)
        print(f"{view:5s} floor {fig['floor']:7.1f}/s  in-process {fig['in_process']:7.1f}/s "
              f"({fig['in_process'] / fig['floor']:.2f} of floor)  "
              f"{args.workers} workers {fig[f'workers_{args.workers}']:7.1f}/s  "
              f"member {fig['mean_bytes'] / 1024:.0f} KiB")
    for name, rate in model_figures(size=args.size, repeats=args.repeats).items():
        print(f"model {name:8s} {rate:7.1f} training images/s")


if __name__ == "__main__":
    main()
