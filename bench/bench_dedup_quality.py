"""Near-duplicate precision and recall on planted sets, through the ingest flow.

    .venv/bin/python bench/bench_dedup_quality.py --n 500 --seeds 101 202

Each seed is a synthetic crowd batch (``hagrid synth``) with resubmissions of every kind
(dup rate 0.3) and hard negatives (scene families: the same room, other people, often the
same gesture). The batch is ingested; every duplicate decision is scored against the truth.
For contrast, the same catalog is scored with the hash radius alone (no confirming check).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.baselines import cached_batch

DUP = {"exact_duplicate", "near_duplicate", "mirrored_duplicate"}


def score(batch: Path) -> dict:
    """Ingest ``batch`` into a fresh root and score duplicates against the truth."""
    from flows.ingest import ingest
    from schemas.settings import DedupSettings
    from tasks.catalog import Catalog
    from tasks.ingest.hash_index import all_pairs
    from tasks.storage import LocalStorage

    root = Path(tempfile.mkdtemp())
    ingest(source=str(batch), submissions=str(batch / "submissions.csv"), root=str(root))
    cat = Catalog(LocalStorage(root))
    rows = {r["file"]: r for r in cat.read_table("submissions").to_pylist()}
    truth = [json.loads(x) for x in (batch / "truth.jsonl").read_text().splitlines()]
    c: Counter = Counter()
    per_kind: Counter = Counter()
    per_kind_hit: Counter = Counter()
    for t in truth:
        got = rows[t["file"]]
        truly_dup = t["expected_reason"] in DUP
        said_dup = got["reason"] in DUP
        if truly_dup:
            per_kind[t["kind"]] += 1
            kept = rows[t["duplicate_of_file"]]["image_id"]
            hit = said_dup and got["duplicate_of"] == kept and got["reason"] == t["expected_reason"]
            per_kind_hit[t["kind"]] += hit
            c["tp" if hit else "fn"] += 1
        elif said_dup:
            c["fp"] += 1
        elif t["expected_outcome"] == "accepted":
            c["tn"] += 1
    images = cat.read_table("images")
    codes = images.column("phash").to_numpy().astype(np.uint64)
    mirror = images.column("phash_mirror").to_numpy().astype(np.uint64)
    radius = DedupSettings().radius
    hash_only = len(all_pairs(codes, radius=radius))
    hash_only += sum(int((np.bitwise_count(codes ^ m) <= radius).sum()) for m in mirror)
    shutil.rmtree(root)
    families = Counter(t["scene_family"] for t in truth if t["kind"] == "original")
    return {"counts": dict(c), "per_kind": dict(per_kind), "per_kind_hit": dict(per_kind_hit),
            "hash_only_pairs_among_accepted": hash_only, "accepted": images.num_rows,
            "family_pairs": sum(k * (k - 1) // 2 for k in families.values()),
            "truth_rows": len(truth)}


def main(argv: list[str] | None = None) -> None:
    """Score every seed and print (and save) the Markdown section."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 202])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results_dedup.md")
    args = ap.parse_args(argv)
    results = {s: score(cached_batch("quality", args.n, s, dup_rate=0.3)) for s in args.seeds}
    text = _report(results, args)
    print(text)
    args.out.write_text(text)


def _report(results: dict[int, dict], args: argparse.Namespace) -> str:
    lines = ["## Duplicate decisions: precision and recall on planted sets", "",
             (f"`.venv/bin/python bench/bench_dedup_quality.py --n {args.n} --seeds "
             f"{' '.join(map(str, args.seeds))}` (synthetic batches, dup rate 0.3, hard "
             "negatives on; scored against the generator's truth)"), "",
             ("| seed | inputs | accepted | hard-negative pairs | TP | FN | FP | precision | recall "
             "| hash-radius-only false pairs |"), "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    kinds: Counter = Counter()
    hits: Counter = Counter()
    for seed, r in results.items():
        c = r["counts"]
        tp, fn, fp = c.get("tp", 0), c.get("fn", 0), c.get("fp", 0)
        prec = tp / (tp + fp) if tp + fp else 1.0
        rec = tp / (tp + fn) if tp + fn else 1.0
        lines.append(f"| {seed} | {r['truth_rows']} | {r['accepted']} | {r['family_pairs']} | "
                     f"{tp} | {fn} | {fp} | {prec:.3f} | {rec:.3f} | "
                     f"{r['hash_only_pairs_among_accepted']} |")
        kinds.update(r["per_kind"])
        hits.update(r["per_kind_hit"])
    lines += ["", "Recall per resubmission kind (all seeds): " + ", ".join(
        f"{k} {hits[k]}/{n}" for k, n in sorted(kinds.items())), "",
        ("\"hash-radius-only false pairs\": pairs of distinct accepted photos whose hashes (plain "
        "or mirrored) lie within the radius - what a radius-only rule would have rejected."), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
