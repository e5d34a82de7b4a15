"""Label audit figures (issue 14): planted label errors, the audit's flags, one review cycle
with the simulated crowd, and models trained on the noisy and on the corrected release.

For each error rate (default 2%, 5% and 10%), on a copy of a demo root that holds release v1:

1. plant errors in the catalog (a new ``boxes`` batch, the annotation's own method kept):
   the gesture box of ``rate`` of v1's images gets another gesture's label, and the leading
   hand of another ``rate`` of them is flipped;
2. publish ``v2`` (noisy) with the crops view, and run the ``audit`` flow on it (K folds by
   person, the CPU recipe): precision and recall of its flags against the planted errors
   (per head, by image), and against every label the generator's truth says is wrong
   (planted, or the simulated crowd's own slips);
   With ``--analyse``: the same precision and recall had the audit kept only flags below
   a quality threshold (``--max-quality``), from the recorded rows;
3. run the ``annotate`` flow once with the simulated crowd (flagged images go to review, the
   simulated expert answers from the truth) and publish ``v3`` (corrected): the errors left;
4. train one model on v2 and one on v3 (CPU recipe, same seed) and score both on v1's
   evaluation split (the labels before planting; the split is the same by user).

    .venv/bin/python bench/bench_audit.py ROOT [--rates 0.02,0.05,0.10] [--folds 5]
        [--audit-epochs 20] [--epochs 40] [--threads 2] [--work /tmp/bench-audit]
    .venv/bin/python bench/bench_audit.py ROOT --analyse --work /tmp/bench-audit

ROOT: a demo root with its release v1 and the crops view, for example
``hagrid demo --root /tmp/bt2500/root --n 2500 --no-train``. Prints markdown tables for
bench/RESULTS.md. The copies hard-link the objects and releases (they are never rewritten).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from flows.annotate import annotate
from flows.audit import audit
from flows.publish import publish
from schemas.annotation import BOXES
from schemas.train import CPU_RECIPE, LEADING_HANDS, NO_GESTURE, TrainSettings
from tasks.annotate.boxes import Box, iou
from tasks.catalog import Catalog
from tasks.simulation.crowd import GeneratorTruth
from tasks.storage import LocalStorage
from tasks.train.dataset import HandCrops, ShardReader, hand_loader
from tasks.train.loop import predict
from tasks.train.metrics import score_heads
from tasks.train.release import TrainingRelease, open_release
from tasks.train.run import finish_run, run_epoch, start_run

FLIP = {"left": "right", "right": "left"}


def copy_root(base: Path, dest: Path) -> Path:
    """A writable copy of a dataset root: catalog and crowd copied, objects and releases
    hard-linked (immutable)."""
    dest.mkdir(parents=True)
    for name in ("objects", "releases"):
        subprocess.run(["cp", "-al", str(base / name), str(dest / name)], check=True)
    for name in ("catalog", "crowd"):
        if (base / name).exists():
            shutil.copytree(base / name, dest / name)
    return dest


def manifest(release: Path) -> pd.DataFrame:
    """Every split's image rows of a release, with a ``split`` column."""
    parts = []
    for path in sorted((release / "manifests").glob("*.parquet")):
        frame = pq.read_table(path).to_pandas()
        parts.append(frame.assign(split=path.stem))
    return pd.concat(parts, ignore_index=True)


def current_boxes(catalog: Catalog) -> pd.DataFrame:
    """Each image's latest boxes batch."""
    boxes = catalog.read_table("boxes").to_pandas()
    last = (boxes.sort_values(["decided_at", "batch_id"])
            .groupby("image_id")["batch_id"].last())
    return boxes[boxes["batch_id"] == boxes["image_id"].map(last)]


def plant(root: Path, image_ids: list[str], rate: float, *, seed: int
          ) -> tuple[dict[str, str], dict[str, str]]:
    """Swap the gesture label of ``rate`` of ``image_ids`` and flip the leading hand of
    another ``rate``, as one catalog batch; returns ``({image: planted label},
    {image: planted hand})``."""
    rng = np.random.default_rng(seed)
    n = max(1, round(rate * len(image_ids)))
    chosen = rng.permutation(sorted(image_ids))[: 2 * n]
    swap, flip = set(chosen[:n].tolist()), set(chosen[n:].tolist())
    catalog = Catalog(LocalStorage(root))
    current = current_boxes(catalog)
    gestures = sorted({g for g in current["label"] if g != NO_GESTURE})
    rows = current[current["image_id"].isin(swap | flip)].copy()
    planted_label, planted_hand = {}, {}
    for image_id, group in rows.groupby("image_id"):
        idx = group.sort_values("box_index").index
        if image_id in swap:
            given = rows.at[idx[0], "label"]
            wrong = str(rng.choice([g for g in gestures if g != given]))
            rows.at[idx[0], "label"] = wrong
            planted_label[str(image_id)] = wrong
        else:
            hand = rows.at[idx[0], "leading_hand"]
            rows.loc[idx, "leading_hand"] = FLIP.get(hand, "left")
            planted_hand[str(image_id)] = FLIP.get(hand, "left")
    batch = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-planted"
    rows = rows.assign(batch_id=batch, decided_at=dt.datetime.now(dt.UTC))
    catalog.write_batch(batch, {"boxes": pa.Table.from_pandas(
        rows[BOXES.names], schema=BOXES, preserve_index=False)}, info={"kind": "planted"})
    return planted_label, planted_hand


def wrong_labels(release: Path, truth: GeneratorTruth) -> tuple[set[str], set[str]]:
    """Images of a release whose gesture box label, or whose leading hand, is not the
    generator's truth (the published box nearest the true gesture box)."""
    gesture_wrong, hand_wrong = set(), set()
    for row in manifest(release).itertuples():
        if row.image_id not in truth:
            continue
        boxes, hand = truth.boxes(row.image_id)
        target = boxes[0]
        published = [Box(float(b[0]), float(b[1]), float(b[2]), float(b[3]), str(label))
                     for b, label in zip(row.boxes, row.labels, strict=True)]
        best = max(published, key=lambda b: iou(target, b), default=None)
        if best is None or best.label != target.label:
            gesture_wrong.add(row.image_id)
        if row.leading_hand != hand:
            hand_wrong.add(row.image_id)
    return gesture_wrong, hand_wrong


def precision_recall(flagged: set[str], wrong: set[str]) -> tuple[float, float]:
    """Share of flags on wrong labels; share of wrong labels flagged."""
    hits = len(flagged & wrong)
    return (hits / len(flagged) if flagged else float("nan"),
            hits / len(wrong) if wrong else float("nan"))


def score_on(run: Any, clean: TrainingRelease) -> dict[str, Any]:
    """The run's model scored on another release's evaluation split (scale 1, every box)."""
    assert tuple(run.release.classes) == tuple(clean.classes)
    crops = HandCrops(clean.evaluation, ShardReader(clean.uri), size=run.settings.input_size)
    loader = hand_loader(crops, batch_size=64, workers=0, seed=0, shuffle=False)
    gesture, hand = predict(run.model, loader, device=run.device)
    e = clean.evaluation
    return score_heads(label=e.label, hand=e.hand, gesture_hand=e.gesture_hand,
                       gesture_pred=gesture, hand_pred=hand, classes=clean.classes,
                       hands=LEADING_HANDS)


def train_and_score(release: Path, clean: TrainingRelease, *, epochs: int, seed: int
                    ) -> tuple[dict[str, Any], float]:
    """The CPU recipe trained on ``release``; its last epoch scored on ``clean``."""
    settings = TrainSettings(epochs=epochs, seed=seed, model="small", input_size=64,
                             device="cpu", view="crops", workers=0, verify_shards=False,
                             **CPU_RECIPE)
    data = open_release(str(release), view="crops", hash_shards=False)
    run = start_run(data, settings, run_dir=Path(tempfile.mkdtemp(prefix="bench-audit-")) / "r")
    started = time.perf_counter()
    while run.epochs_done < epochs:
        run_epoch(run)
    seconds = time.perf_counter() - started
    finish_run(run)
    return score_on(run, clean), seconds


def one_rate(base: Path, work: Path, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    """Plant, publish, audit, review, publish again, train both; the figures."""
    root = copy_root(base, work / f"rate-{rate:.2f}")
    catalog = Catalog(LocalStorage(root))
    truth = GeneratorTruth.from_catalog(catalog)
    v1 = root / "releases" / "v1"
    released = manifest(v1)["image_id"].tolist()
    planted_label, planted_hand = plant(root, released, rate, seed=args.seed)
    publish(root=str(root), version="v2", crops=True, seed=args.seed)
    noisy = root / "releases" / "v2"
    started = time.perf_counter()
    summary = audit(release=str(noisy), folds=args.folds, epochs=args.audit_epochs,
                    seed=args.seed, input_size=64, model="small", device="cpu",
                    verify_shards=False)
    audit_seconds = time.perf_counter() - started
    issues = catalog.read_table("label_issues", filters=pc.field("audit_id")
                                == summary["audit_id"]).to_pandas()
    flagged = {h: set(issues.loc[issues["head"] == h, "image_id"])
               for h in ("gesture", "leading_hand")}
    noisy_wrong = wrong_labels(noisy, truth)
    review = annotate(root=str(root), crowd="simulated", cycles=4)
    publish(root=str(root), version="v3", crops=True, seed=args.seed)
    fixed = root / "releases" / "v3"
    fixed_wrong = wrong_labels(fixed, truth)
    clean = open_release(str(v1), view="auto", hash_shards=False)
    trained = {name: train_and_score(path, clean, epochs=args.epochs, seed=args.seed)
               for name, path in (("noisy", noisy), ("corrected", fixed))}
    return {
        "rate": rate, "images": len(released),
        "planted": {"gesture": set(planted_label), "leading_hand": set(planted_hand)},
        "flagged": flagged, "noisy_wrong": dict(zip(("gesture", "leading_hand"), noisy_wrong,
                                                    strict=True)),
        "fixed_wrong": dict(zip(("gesture", "leading_hand"), fixed_wrong, strict=True)),
        "audit_seconds": audit_seconds, "fold_seconds": summary["seconds_per_fold"],
        "reviews_sent": review["label_reviews_sent"],
        "reviews_decided": review["label_reviews_decided"], "trained": trained,
    }


def planted_from_catalog(catalog: Catalog) -> dict[str, set[str]]:
    """The images ``plant`` changed, per head, read back from the catalog's planted batch."""
    boxes = catalog.read_table("boxes").to_pandas()
    mine = boxes["batch_id"].str.endswith("-planted")
    earlier = ~mine & (boxes["decided_at"] < boxes.loc[mine, "decided_at"].min())
    before = (boxes[earlier]
              .sort_values(["decided_at", "batch_id"])
              .groupby(["image_id", "box_index"]).last().reset_index())
    both = boxes[mine].merge(before, on=["image_id", "box_index"], suffixes=("", "_before"))
    return {"gesture": set(both.loc[both["label"] != both["label_before"], "image_id"]),
            "leading_hand": set(both.loc[both["leading_hand"] != both["leading_hand_before"],
                                         "image_id"])}


def analyse(work: Path, thresholds: tuple[float, ...] = (0.005, 0.02, 0.05, 0.1)) -> None:
    """Precision and recall of the recorded flags of every rate in ``work`` had the audit
    kept only flags below each quality threshold (``hagrid audit --max-quality``)."""
    print("| rate | head | planted | max quality | flags | precision | recall |")
    print("|---|---|---|---|---|---|---|")
    for folder in sorted(work.glob("rate-*")):
        catalog = Catalog(LocalStorage(folder))
        planted = planted_from_catalog(catalog)
        issues = catalog.read_table("label_issues").to_pandas()
        planted["either (by image)"] = planted["gesture"] | planted["leading_hand"]
        for head, wrong in planted.items():
            mine = issues if head.startswith("either") else issues[issues["head"] == head]
            for t in (*thresholds, None):
                kept = mine if t is None else mine[mine["quality"] < t]
                p, r = precision_recall(set(kept["image_id"]), wrong)
                print(f"| {folder.name.removeprefix('rate-')} | {head} | {len(wrong)} | "
                      f"{'any' if t is None else t} | {len(kept)} | {p:.2f} | {r:.2f} |")


def main() -> None:
    """Run every rate and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--rates", default="0.02,0.05,0.10")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--audit-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--analyse", action="store_true",
                        help="only print the quality-threshold table of an earlier --work")
    args = parser.parse_args()
    if args.analyse:
        analyse(args.work)
        return
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-audit-"))
    results = []
    for rate in (float(r) for r in args.rates.split(",")):
        result = one_rate(args.root, work, rate, args)
        results.append(result)
        print(f"rate {rate}: audit {result['audit_seconds']:.0f} s, reviews "
              f"{result['reviews_sent']} sent / {result['reviews_decided']} decided", flush=True)
    heads = ("gesture", "leading_hand")
    print(f"\n{results[0]['images']} images in v1; {args.folds} folds by person, "
          f"{args.audit_epochs} epochs per fold model; models {args.epochs} epochs, seed "
          f"{args.seed}, {args.threads} threads\n")
    print("| rate | head | planted | flagged | precision (planted) | recall (planted) | "
          "precision (any wrong) | recall (any wrong) | wrong before audit | "
          "wrong after one review |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for key in ("flagged", "planted", "noisy_wrong", "fixed_wrong"):
            r[key]["either (by image)"] = r[key]["gesture"] | r[key]["leading_hand"]
        for h in (*heads, "either (by image)"):
            p1, r1 = precision_recall(r["flagged"][h], r["planted"][h])
            p2, r2 = precision_recall(r["flagged"][h], r["noisy_wrong"][h])
            print(f"| {r['rate']:.0%} | {h} | {len(r['planted'][h])} | {len(r['flagged'][h])} "
                  f"| {p1:.2f} | {r1:.2f} | {p2:.2f} | {r2:.2f} | {len(r['noisy_wrong'][h])} | "
                  f"{len(r['fixed_wrong'][h])} |")
    print("\n| rate | trained on | gesture F1 macro | gesture F1 weighted | "
          "leading hand accuracy | train time, s | audit time, s (K models) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for name, (scores, seconds) in r["trained"].items():
            print(f"| {r['rate']:.0%} | {name} | {scores['gesture']['f1_macro']:.3f} | "
                  f"{scores['gesture']['f1_weighted']:.3f} | "
                  f"{scores['leading_hand']['accuracy']:.3f} | {seconds:.0f} | "
                  f"{r['audit_seconds']:.0f} ({statistics.median(r['fold_seconds']):.0f} "
                  "per fold) |")


if __name__ == "__main__":
    main()
