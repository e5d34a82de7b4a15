"""Baseline trainer figures (issue 13): test F1 per head and train time on this machine's CPU
cores, for the CPU recipe the demo uses and for HaGRID v1's own recipe, in the same run.

Each recipe is trained ``--runs`` times (seeds 0, 1, ...) for ``--epochs`` epochs on the
release's train split, with ``--threads`` torch threads and the crops view read in the
training process. The figures are those of the **last** epoch (no checkpoint picked on the
test split), and the table gives their median over the runs, with the spread.

    .venv/bin/python bench/bench_train.py RELEASE [--epochs 40] [--runs 3] [--threads 2]

RELEASE: a release with the crops view, for example the demo's at ``--n 2100`` (at least
1,500 images): ``hagrid demo --root /tmp/bt/root --n 2100 --no-train``. Prints markdown
tables (per recipe, and per epoch for the first run) for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from schemas.train import CPU_RECIPE, TrainSettings
from tasks.train.release import open_release
from tasks.train.run import finish_run, run_epoch, start_run

# The demo's recipe for a CPU run from scratch (schemas.train.CPU_RECIPE), and HaGRID v1's
# (lr 0.005, constant after the warm-up, no augmentation beyond the crop scale); both: the
# small model at 64 px, batch 32.
RECIPES: dict[str, dict[str, Any]] = {
    "cpu (demo)": dict(CPU_RECIPE),
    "hagrid v1": {"batch_size": 32, "lr": 0.005, "lr_decay": "none", "warmup_iters": 1000},
}
COMMON: dict[str, Any] = {"model": "small", "input_size": 64, "device": "cpu",
                          "view": "crops", "workers": 0, "verify_shards": False}


def train_once(release: str, settings: TrainSettings) -> dict[str, Any]:
    """One run from scratch: the last epoch's figures, the per-epoch records, the time."""
    data = open_release(release, view=settings.view, hash_shards=False)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-train-")) / "run"
    run = start_run(data, settings, run_dir=run_dir)
    started = time.perf_counter()
    while run.epochs_done < settings.epochs:
        run_epoch(run)
    seconds = time.perf_counter() - started
    summary = finish_run(run)
    return {"summary": summary, "epochs": run.epochs, "seconds": seconds,
            "train_images": len(data.train.image_rows()) - 1,
            "eval_boxes": summary["gesture"]["samples"],
            "train_seconds": sum(e["train_seconds"] for e in run.epochs)}


def spread(values: list[float], digits: int = 3) -> str:
    """``median (min-max)``."""
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    """Train each recipe ``--runs`` times and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("release")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, list[dict[str, Any]]] = {}
    for name in args.recipes.split(","):
        for seed in range(args.runs):
            settings = TrainSettings(epochs=args.epochs, seed=seed, **COMMON, **RECIPES[name])
            result = train_once(args.release, settings)
            s = result["summary"]
            print(f"{name} seed {seed}: gesture F1 macro {s['gesture']['f1_macro']:.3f}, "
                  f"leading hand accuracy {s['leading_hand']['accuracy']:.3f}, "
                  f"{result['seconds']:.0f} s", flush=True)
            results.setdefault(name, []).append(result)
    first = next(iter(results.values()))[0]
    print(f"\n{first['train_images']} train images, {first['eval_boxes']} test boxes, "
          f"{args.epochs} epochs, {args.threads} threads, median of {args.runs} seeds "
          "(min-max); last epoch\n")
    print("| recipe | gesture F1 macro | gesture F1 weighted | leading hand F1 macro | "
          "leading hand accuracy | train time, s | images/s |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        def head(h: str, k: str, rs: list[dict[str, Any]] = runs) -> str:
            return spread([r["summary"][h][k] for r in rs])
        print(f"| {name} | {head('gesture', 'f1_macro')} | {head('gesture', 'f1_weighted')} | "
              f"{head('leading_hand', 'f1_macro')} | {head('leading_hand', 'accuracy')} | "
              f"{spread([r['seconds'] for r in runs], 0)} | "
              f"{spread([r['train_images'] * args.epochs / r['train_seconds'] for r in runs], 0)}"
              " |")
    for name, runs in results.items():
        print(f"\n{name}, seed 0, per epoch:\n")
        print("| epoch | lr | loss | gesture F1 macro | leading hand accuracy |")
        print("|---|---|---|---|---|")
        for e in runs[0]["epochs"]:
            print(f"| {e['epoch']} | {e['lr']:.4f} | {e['loss']:.3f} | "
                  f"{e['gesture_f1_macro']:.3f} | {e['leading_hand_accuracy']:.3f} |")


if __name__ == "__main__":
    main()
