"""Synthetic crowd batches modelled on HaGRID: photos, a submissions table and the truth.

``generate_batch`` writes ``photos/``, ``submissions.csv`` (the crowd table the pipeline
ingests) and ``truth.jsonl`` (what the pipeline is expected to decide for each file or row);
both record shapes are declared in ``schemas.simulation``.

The photos are cheap stand-ins for real ones that behave like photographs under perceptual
hashing: an indoor room (walls, floor, furniture, sometimes a bright window), a person, and
hands drawn per gesture class (``scenes``, ``rooms``, ``people``, ``drawing``).

Planted on top of the originals: resubmissions (edited copies placed later in the table),
hard negatives (distinct photos of the same room, a "scene family") and broken or
ill-formed files (``problems``); ``planning`` decides all of it. Everything is a pure
function of the arguments: the same call writes the same bytes, whatever the number of
worker processes.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from PIL import Image, ImageOps

from schemas.simulation import SUBMISSIONS_TABLE_COLUMNS
from tasks.simulation.people import HAGRID_V1_GESTURES
from tasks.simulation.photos import PhotoGeometry, PhotoSpec, encode_jpeg
from tasks.simulation.planning import PlannedFile, plan_batch
from tasks.simulation.problems import (
    BOMB_SIDE,
    Edit,
    apply_edit,
    bomb_png,
    damage,
    edited_geometry,
)
from tasks.simulation.scenes import render_photo
from tasks.simulation.truth import truth_record


@dataclass(frozen=True)
class SynthSummary:
    """What `generate_batch` wrote: paths and counts per kind."""

    out_dir: Path
    photos_dir: Path
    submissions_csv: Path
    truth_jsonl: Path
    n_rows: int
    n_files: int
    kinds: dict[str, int]


def generate_batch(
    out_dir: Path,
    *,
    n: int,
    seed: int,
    gestures: Sequence[str] = HAGRID_V1_GESTURES,
    dup_rate: float = 0.15,
    problems: bool = True,
    hard_negatives: bool = True,
    workers: int = 2,
    size: tuple[int, int] = (1920, 1080),
    quality: int = 90,
) -> SynthSummary:
    """Write a synthetic crowd batch of `n` distinct originals plus planted cases to `out_dir`.

    Writes `photos/`, `submissions.csv` (file, user_id, gesture, submitted_at) and
    `truth.jsonl` (expected outcome and reason, true boxes, per file or row). The output
    depends only on the arguments, not on `workers`. Refuses an `out_dir` whose photos/ has
    files in it, so that stale files never mix with a new batch.
    """
    plan = plan_batch(
        n=n,
        seed=seed,
        gestures=gestures,
        dup_rate=dup_rate,
        problems=problems,
        hard_negatives=hard_negatives,
        size=size,
        quality=quality,
    )
    out_dir = Path(out_dir)
    photos = out_dir / "photos"
    if photos.is_dir() and any(photos.iterdir()):
        raise FileExistsError(f"{photos} is not empty")
    photos.mkdir(parents=True, exist_ok=True)
    geometry = write_files(out_dir, plan, workers=workers)
    _write_tables(out_dir, plan, geometry)
    return SynthSummary(
        out_dir=out_dir,
        photos_dir=photos,
        submissions_csv=out_dir / "submissions.csv",
        truth_jsonl=out_dir / "truth.jsonl",
        n_rows=sum(p.has_row for p in plan),
        n_files=sum(p.kind != "missing_file" for p in plan),
        kinds=dict(sorted(Counter(p.kind for p in plan).items())),
    )


def write_files(
    out_dir: Path, plan: list[PlannedFile], *, workers: int
) -> dict[str, PhotoGeometry | None]:
    """Write every planned file under `out_dir`; return the geometry of each (None: no image)."""
    jobs = _photo_jobs(out_dir, plan)
    rendered = _run_all(run_photo_job, jobs, workers)
    geometry = {
        j.path.relative_to(out_dir).as_posix(): g for j, g in zip(jobs, rendered, strict=True)
    }
    edits = [
        EditJob(out_dir / str(p.source_file), out_dir / p.file, p.edit)
        for p in plan
        if p.edit is not None
    ]
    _run_all(run_edit_job, edits, workers)
    found: dict[str, PhotoGeometry | None] = {}
    for p in plan:
        if p.edit is not None:
            found[p.file] = edited_geometry(geometry[str(p.source_file)], p.edit)
        elif p.photo is None:
            found[p.file] = _write_plain_problem(out_dir / p.file, p.kind)
        else:
            found[p.file] = None if p.kind in ("corrupt", "truncated") else geometry[p.file]
    return found


def _write_tables(
    out_dir: Path, plan: list[PlannedFile], geometry: dict[str, PhotoGeometry | None]
) -> None:
    with (out_dir / "submissions.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, SUBMISSIONS_TABLE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for p in plan:
            if p.has_row:
                writer.writerow(
                    {
                        "file": p.file,
                        "user_id": p.user_id,
                        "gesture": p.gesture,
                        "submitted_at": p.submitted_at,
                    }
                )
    by_file = {p.file: p for p in plan}
    with (out_dir / "truth.jsonl").open("w", encoding="utf-8") as f:
        for p in plan:
            source = by_file.get(p.source_file) if p.source_file else None
            f.write(json.dumps(truth_record(p, geometry[p.file], source)) + "\n")


# ---------------------------------------------------------------------------------------------
# Jobs: one written file each, run in worker processes (module-level, so they pickle)

_Job = TypeVar("_Job")
_Result = TypeVar("_Result")


def _run_all(fn: Callable[[_Job], _Result], jobs: Sequence[_Job], workers: int) -> list[_Result]:
    if workers <= 1 or len(jobs) <= 1:
        return [fn(job) for job in jobs]
    chunk = max(1, len(jobs) // (workers * 6))
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return list(pool.map(fn, jobs, chunksize=chunk))


@dataclass(frozen=True)
class PhotoJob:
    """Render one photo and write it: an original or a problem file made from a photo."""

    spec: PhotoSpec
    path: Path
    quality: int
    orientation: int = 1
    damage: str | None = None


def run_photo_job(job: PhotoJob) -> PhotoGeometry:
    """Render, encode (and maybe damage) one photo; return its geometry."""
    picture, geometry = render_photo(job.spec)
    data = encode_jpeg(picture, quality=job.quality, orientation=job.orientation)
    if job.damage:
        data = damage(data, job.damage, seed=job.spec.seed * 1_000_003 + job.spec.key)
    job.path.write_bytes(data)
    return geometry


@dataclass(frozen=True)
class EditJob:
    """Write one resubmission of `source` to `path`."""

    source: Path
    path: Path
    edit: Edit


def run_edit_job(job: EditJob) -> None:
    """Make and write one resubmission from its original's file."""
    if job.edit.kind == "exact_resubmission":
        shutil.copyfile(job.source, job.path)
        return
    with Image.open(job.source) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    picture = apply_edit(image, job.edit)
    if job.edit.kind == "png":
        picture.save(job.path, "PNG", compress_level=3)
        return
    job.path.write_bytes(
        encode_jpeg(picture, quality=job.edit.quality, orientation=job.edit.orientation)
    )


def _photo_jobs(out_dir: Path, plan: list[PlannedFile]) -> list[PhotoJob]:
    jobs = []
    for p in plan:
        if p.photo is not None:
            how = p.kind if p.kind in ("corrupt", "truncated") else None
            jobs.append(PhotoJob(p.photo, out_dir / p.file, p.quality, p.orientation, how))
    return sorted(jobs, key=lambda j: (j.spec.room, j.spec.key))  # room cache locality


def _write_plain_problem(path: Path, kind: str) -> PhotoGeometry | None:
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "not_image":
        path.write_text("IMG_2231 - hand photo\nsent from my phone, will upload later\n")
    elif kind == "decompression_bomb":
        path.write_bytes(bomb_png(BOMB_SIDE, BOMB_SIDE))
        return PhotoGeometry(BOMB_SIDE, BOMB_SIDE, (), (), "")
    return None
