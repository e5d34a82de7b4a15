"""Settings of the ingestion stage: one frozen record, passed explicitly."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from schemas.taxonomy import DEFAULT_TAXONOMY


def default_workers() -> int:
    """Parallel workers for decoding: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class DedupSettings:
    """Near-duplicate decision: a phash radius proposes, a second independent check confirms.

    ``radius`` is the Hamming radius on the 64-bit DCT hash within which two images are
    candidates. The confirming check compares the two 32x32 grey thumbnails over a search of
    small crops: the best Pearson correlation must reach ``min_similarity`` and, after that
    fit, no 4x4 block may disagree by more than ``max_local_residual`` (in standard
    deviations): this tells apart two photos of the same room with different people.
    Thresholds are measured on planted sets: bench/RESULTS.md.

    ``crop_path``: a copy cropped by up to ~8% per side and zoomed back can move the full hash
    past the radius. With it, a pair is also a candidate when one image's full hash lies
    within the radius of the other's centre hash (``centre_phash_bits``), and the confirming
    check (the same thresholds, for every candidate) searches crops of up to ~7.5% per side
    instead of ~5%, for the candidates the ~5% search did not confirm. That wider search lets
    photos of the same room align better too (closest measured: r 0.955, residual 0.630), so
    it must clear stricter thresholds, ``crop_min_similarity`` and
    ``crop_max_local_residual``. The wider search costs about three times the narrow one,
    so it runs only for candidates whose narrow search reached ``crop_gate_similarity``:
    every crop it confirmed on the planted sets had reached 0.90, while half the same-room
    candidates stay under 0.85. A wide match that correlates very closely
    (``crop_close_similarity``) may disagree a little more locally
    (``crop_close_max_local_residual``): the zoom of a crop blurs the 32x32 thumbnail
    evenly, while another person in the same room changes one region (no same-room pair of
    the planted sets reached r 0.96 under the wide search). Off: the decision as it was
    before (bench/bench_dedup_crops.py).
    """

    radius: int = 12
    min_similarity: float = 0.95
    max_local_residual: float = 0.63
    crop_path: bool = True
    crop_min_similarity: float = 0.96
    crop_max_local_residual: float = 0.60
    crop_gate_similarity: float = 0.85
    crop_close_similarity: float = 0.97
    crop_close_max_local_residual: float = 0.75


@dataclass(frozen=True)
class IngestSettings:
    """Everything the ``ingest`` flow decides with, besides its inputs."""

    min_side: int = 720
    max_pixels: int = 100_000_000
    max_bytes: int = 100_000_000  # per input; a HaGRID FullHD JPEG is ~1.3 MB
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "MPO")
    taxonomy: str = DEFAULT_TAXONOMY
    chunk_size: int = 256  # images per Prefect task (per-task overhead is ~10-15 ms)
    commit_every: int = 2048  # rows per committed catalog batch
    dedup: DedupSettings = field(default_factory=DedupSettings)
