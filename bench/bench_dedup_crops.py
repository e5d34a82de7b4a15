"""Dedup recall on crops: a planted set of cropped-and-zoomed resubmissions and hard negatives.

    nice -n 15 .venv/bin/python bench/bench_dedup_crops.py --n 300 --seeds 101

Each seed is a synthetic batch of ``n`` originals (``generate_batch``, no resubmissions, no
problem files) in scene families: photos of the same room with other people, the hard
negatives. Every original also gets one resubmission cut by 2-8% per side (drawn per side)
and zoomed back to its full size. The duplicate decision runs twice on the same features,
with the crop path off (the decision before it existed) and on:

- the originals in table order against an empty catalog: every duplicate found among them is
  a false positive (a same-family one is a hard negative let through);
- then the crops against the accepted originals: a crop is caught when it is called a near
  duplicate of its own original; pointing at another image is a false positive.

It also times (CPU, one thread) the duplicate decision per image, inspection (the per-image
features, which the crop path leaves alone) and the centre hash, derived from the thumbnail.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Costs are CPU time on one thread: idle threads of numba and BLAS spin, and on a shared
# machine that spinning, not the work, dominates a multi-threaded CPU or wall-clock figure.
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
from PIL import Image, ImageOps

from bench.baselines import cached_batch

CROP_RANGE = (0.02, 0.08)


@dataclass(frozen=True)
class PlantedSet:
    """Originals (table order) with their scene family, and one crop of each."""

    originals: list[bytes]
    families: list[int]
    crops: list[bytes]
    crop_fractions: list[tuple[float, float, float, float]]


def crop_and_zoom(data: bytes, fractions: tuple[float, float, float, float], *,
                  quality: int = 90) -> bytes:
    """Cut ``fractions`` (left, top, right, bottom) off the photo, zoom back to its size."""
    with Image.open(io.BytesIO(data)) as opened:
        im = ImageOps.exif_transpose(opened).convert("RGB")
    w, h = im.size
    left, top, right, bottom = fractions
    box = (round(w * left), round(h * top), w - round(w * right), h - round(h * bottom))
    zoomed = im.crop(box).resize((w, h), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    zoomed.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def planted_set(n: int, seed: int) -> PlantedSet:
    """The originals of one generated batch and a 2-8%-per-side crop of each."""
    batch = cached_batch("crops", n, seed, dup_rate=0.0, problems=False)
    truth = [json.loads(x) for x in (batch / "truth.jsonl").read_text().splitlines()]
    rows = [t for t in truth if t["kind"] == "original"]
    rng = np.random.default_rng(seed)
    originals = [(batch / t["file"]).read_bytes() for t in rows]
    fractions = [tuple(float(v) for v in rng.uniform(*CROP_RANGE, 4)) for _ in rows]
    crops = [crop_and_zoom(d, f) for d, f in zip(originals, fractions)]  # type: ignore[arg-type]
    return PlantedSet(originals, [int(t["scene_family"]) for t in rows], crops,
                      fractions)  # type: ignore[arg-type]


def _features(datas: list[bytes]) -> tuple[list, float]:
    from tasks.ingest.inspection import ImageFeatures, inspect_image

    t0 = time.process_time()
    feats = [inspect_image(d) for d in datas]
    elapsed = time.process_time() - t0
    assert all(isinstance(f, ImageFeatures) for f in feats)
    return feats, elapsed / len(datas)


def score(planted: PlantedSet, originals: list, crops: list, *, crop_path: bool) -> dict:
    """Decide the originals, then the crops, with the crop path off or on."""
    from schemas.settings import DedupSettings
    from tasks.ingest.dedup import DedupItem, KnownImages, decide_duplicates

    settings = replace(DedupSettings(), crop_path=crop_path)
    known = KnownImages.from_catalog(ids=[], shas=[], phash=np.empty(0, np.uint64), thumbs=[],
                                     settings=settings)
    items = [DedupItem(f.sha256, f.phash, f.phash_mirror, f.thumb) for f in originals]
    ids = [f"o{i}" for i in range(len(items))]
    t0 = time.process_time()  # CPU seconds (all threads): the machine may be shared
    first = decide_duplicates(items, known, new_ids=ids)
    t1 = time.process_time()
    crop_items = [DedupItem(f.sha256, f.phash, f.phash_mirror, f.thumb) for f in crops]
    second = decide_duplicates(crop_items, known, new_ids=[f"c{i}" for i in range(len(crops))])
    per_original, per_crop = (t1 - t0) / len(items), (time.process_time() - t1) / len(crops)
    fam = planted.families
    fp_originals = [(i, d) for i, d in enumerate(first) if d is not None]
    same_family = sum(fam[int(d.duplicate_of[1:])] == fam[i] for i, d in fp_originals)
    caught = [d is not None and d.duplicate_of == f"o{i}" for i, d in enumerate(second)]
    wrong = [i for i, d in enumerate(second) if d is not None and d.duplicate_of != f"o{i}"]
    return {"crops": len(crops), "caught": sum(caught), "missed": [i for i, c in enumerate(caught)
            if not c], "fp_originals": len(fp_originals), "fp_same_family": same_family,
            "fp_crops": len(wrong), "decide_s": (per_original, per_crop)}


def centre_hash_cost(features: list) -> float:
    """CPU seconds per image to derive the centre hash from the thumbnail (best of 5)."""
    from tasks.ingest.inspection import centre_phash_bits, thumbs_array

    thumbs = thumbs_array([f.thumb for f in features])
    runs = []
    for _ in range(5):
        t0 = time.process_time()
        centre_phash_bits(thumbs)
        runs.append(time.process_time() - t0)
    return min(runs) / len(features)


def family_pairs(families: list[int]) -> int:
    """Hard-negative pairs: distinct originals of the same room."""
    counts = np.bincount(np.asarray(families))
    return int((counts * (counts - 1) // 2).sum())


def main(argv: list[str] | None = None) -> None:
    """Score every seed with the crop path off and on; print (and save) a Markdown section."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[101])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results_dedup_crops.md")
    args = ap.parse_args(argv)
    lines = [
        "## Dedup recall on crops (2-8% per side, zoomed back): crop path off vs on", "",
        (f"`nice -n 15 .venv/bin/python bench/bench_dedup_crops.py --n {args.n} --seeds "
        f"{' '.join(map(str, args.seeds))}`"), "",
        ("| seed | originals | hard-negative pairs | crop path | crops caught | recall | FP among "
        "originals (same room) | FP among crops | decide CPU per original / per crop |"),
        "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    notes = []
    for seed in args.seeds:
        planted = planted_set(args.n, seed)
        originals, t_orig = _features(planted.originals)
        crops, t_crop = _features(planted.crops)
        feature_ms = 1000 * (t_orig + t_crop) / 2
        notes.append(f"seed {seed}: inspection (features, unchanged by the crop path) "
                     f"{feature_ms:.1f} ms CPU per image; the centre hash from the thumbnail "
                     f"{1e6 * centre_hash_cost(originals):.1f} us per image")
        for crop_path in (False, True):  # compile the index kernels before timing
            score(planted, originals[:20], crops[:20], crop_path=crop_path)
        for crop_path in (False, True):
            r = score(planted, originals, crops, crop_path=crop_path)
            lines.append(
                f"| {seed} | {len(originals)} | {family_pairs(planted.families)} | "
                f"{'on' if crop_path else 'off'} | {r['caught']}/{r['crops']} | "
                f"{r['caught'] / r['crops']:.3f} | {r['fp_originals']} ({r['fp_same_family']}) | "
                f"{r['fp_crops']} | {1000 * r['decide_s'][0]:.2f} / "
                f"{1000 * r['decide_s'][1]:.2f} ms |")
            print(f"seed {seed} crop path {crop_path}: missed crops {r['missed']}",
                  file=sys.stderr)
    text = "\n".join([*lines, "", *notes]) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
