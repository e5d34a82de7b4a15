"""Duplicate decisions: exact (sha256) and near (perceptual), against the catalog and the batch.

A near-duplicate decision needs two independent agreements: the 64-bit DCT hashes lie within
a Hamming radius (found with a multi-index, never all-pairs), and the shift-tolerant
correlation of the 32x32 grey thumbnails confirms it. With ``crop_path``, a second hash of the
image's centre (derived from the thumbnail) proposes cropped-and-zoomed copies too; they go
through the same confirming check. A loose radius alone would flag distinct photos of similar
rooms, at a rate that grows with N squared.

First arrival in table order wins: an input is compared with accepted images only (the
catalog, and earlier accepted rows of this run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from schemas.reasons import Reason
from schemas.settings import DedupSettings
from tasks.ingest.hash_index import HammingIndex
from tasks.ingest.inspection import (
    ThumbMatch,
    centre_phash_bits,
    coarse_similarities,
    thumb_similarities,
    thumbs_array,
)

# The coarse 8x8 correlation every confirmed pair clears with a wide margin: it only saves the
# costly crop-tolerant check from candidates that are plainly different photos.
COARSE_FLOOR = 0.5


@dataclass(frozen=True)
class DedupItem:
    """The features of one readable input, as the duplicate decision sees them."""

    sha256: str
    phash: int
    phash_mirror: int
    thumb: bytes


@dataclass(frozen=True)
class DuplicateDecision:
    """An input is a duplicate of an accepted image."""

    reason: Reason
    duplicate_of: str  # image_id
    distance: int | None = None
    similarity: float | None = None


@dataclass
class KnownImages:
    """Accepted images the next inputs are compared against.

    ``base`` (the catalog at the start of a run) is indexed once; images accepted during the
    run go to ``recent``, which is small and re-indexed per window.
    """

    settings: DedupSettings
    ids: list[str] = field(default_factory=list)
    thumbs: list[bytes] = field(default_factory=list)
    by_sha: dict[str, str] = field(default_factory=dict)
    phash: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))  # of base
    centre: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))  # of base
    # Hashes of the images accepted during the run, in order (lists: appending to the base
    # arrays copied all of them per accepted image, seconds per window at 1M images).
    recent_phash: list[int] = field(default_factory=list)
    recent_centre: list[int] = field(default_factory=list)
    n_base: int = 0
    base_index: HammingIndex | None = None
    base_centre_index: HammingIndex | None = None

    @classmethod
    def from_catalog(cls, *, ids: Sequence[str], shas: Sequence[str], phash: np.ndarray,
                     thumbs: Sequence[bytes], settings: DedupSettings) -> KnownImages:
        """Index the catalog's accepted images once."""
        known = cls(settings=settings, ids=list(ids), thumbs=list(thumbs),
                    by_sha=dict(zip(shas, ids)), phash=np.asarray(phash, np.uint64))
        known.n_base = len(known.ids)
        known.base_index = HammingIndex(known.phash, radius=settings.radius)
        if settings.crop_path:  # derived from the thumbnails: old catalogs have all it needs
            known.centre = _centre_codes(known.thumbs)
            known.base_centre_index = HammingIndex(known.centre, radius=settings.radius)
        return known

    def add(self, image_id: str, item: DedupItem) -> None:
        """Remember an image accepted during this run."""
        self.ids.append(image_id)
        self.thumbs.append(item.thumb)
        self.by_sha[item.sha256] = image_id
        self.recent_phash.append(item.phash)
        if self.settings.crop_path:
            self.recent_centre.append(int(_centre_codes([item.thumb])[0]))


CENTRE_CHUNK = 16_384  # thumbnails per centre-hash batch: the float64 work stays ~130 MB


def _centre_codes(thumbs: Sequence[bytes]) -> np.ndarray:
    """Centre hashes of ``thumbs``, in batches: all at once, a 1M-image catalog's float64
    intermediates took about 10 GB (bench/bench_memory.py)."""
    if not thumbs:
        return np.empty(0, np.uint64)
    return np.concatenate([centre_phash_bits(thumbs_array(list(thumbs[i:i + CENTRE_CHUNK])))
                           for i in range(0, len(thumbs), CENTRE_CHUNK)])


class _Candidate(NamedTuple):  # a tuple: hundreds of thousands per window at 1M images
    query: int  # position in the window
    target: int  # < 0: window position -(t+1); >= 0: position in known
    distance: int
    mirrored: bool


def _candidates(items: Sequence[DedupItem], known: KnownImages) -> list[_Candidate]:
    """Every (window item, earlier image) pair within the hash radius, normal or mirrored.

    With the crop path, also the pairs whose full hash and centre hash (either way round)
    lie within the radius. A pair found twice keeps its smallest distance.
    """
    normal = np.array([i.phash for i in items], dtype=np.uint64)
    mirror = np.array([i.phash_mirror for i in items], dtype=np.uint64)
    radius = known.settings.radius
    full = _Codes.of(known.base_index, np.array(known.recent_phash, dtype=np.uint64), normal,
                     radius=radius)
    probes = [(full, normal, False), (full, mirror, True)]
    if known.settings.crop_path:
        centre = _centre_codes([i.thumb for i in items])
        centres = _Codes.of(known.base_centre_index,
                            np.array(known.recent_centre, dtype=np.uint64), centre, radius=radius)
        probes += [(centres, normal, False), (full, centre, False)]
    best: dict[tuple[int, int, bool], _Candidate] = {}
    for indexed, codes, mirrored in probes:
        for cand in _search(indexed, codes, known, mirrored=mirrored):
            key = (cand.query, cand.target, cand.mirrored)
            if key not in best or cand.distance < best[key].distance:
                best[key] = cand
    return [best[k] for k in sorted(best)]


@dataclass(frozen=True)
class _Codes:
    """One kind of hash (full or centre) of the known images and of the window's items."""

    base_index: HammingIndex | None
    n_recent: int
    local: HammingIndex  # the images accepted during this run, then the window's items

    @classmethod
    def of(cls, base_index: HammingIndex | None, recent: np.ndarray, window: np.ndarray,
           *, radius: int) -> _Codes:
        """Index the run's recent images and the window together (both are small)."""
        return cls(base_index, len(recent), HammingIndex(np.concatenate([recent, window]),
                                                         radius=radius))


def _search(indexed: _Codes, codes: np.ndarray, known: KnownImages,
            *, mirrored: bool) -> list[_Candidate]:
    """Pairs (window item, earlier image) whose ``codes`` lie within the radius of ``indexed``."""
    radius, n_recent = known.settings.radius, indexed.n_recent
    out: list[_Candidate] = []
    if indexed.base_index is not None and known.n_base:
        res = indexed.base_index.query(codes, radius=radius)
        out += [_Candidate(q, t, d, mirrored) for q, t, d in
                zip(res.left.tolist(), res.right.tolist(), res.distance.tolist())]
    res = indexed.local.query(codes, radius=radius)
    for q, t, d in zip(res.left.tolist(), res.right.tolist(), res.distance.tolist()):
        if t < n_recent:
            out.append(_Candidate(q, known.n_base + t, d, mirrored))
        elif t - n_recent < q:  # an earlier row of this window
            out.append(_Candidate(q, -(t - n_recent) - 1, d, mirrored))
    return out


def decide_duplicates(items: Sequence[DedupItem], known: KnownImages,
                      *, new_ids: Sequence[str]) -> list[DuplicateDecision | None]:
    """For each item in table order: the duplicate decision, or None when it is unique.

    ``new_ids`` are the ids the items get when accepted. ``known`` is updated with the
    accepted items, so the next window sees them.
    """
    if not items:
        return []
    by_query: dict[int, list[_Candidate]] = {}
    for cand in _candidates(items, known):
        by_query.setdefault(cand.query, []).append(cand)
    decisions: list[DuplicateDecision | None] = []
    accepted: dict[int, int] = {}  # accepted window position -> its position in known
    for pos, item in enumerate(items):
        decision = _decide_one(item, by_query.get(pos, []), known, accepted)
        decisions.append(decision)
        if decision is None:
            known.add(new_ids[pos], item)
            accepted[pos] = len(known.ids) - 1
    return decisions


def _decide_one(item: DedupItem, cands: list[_Candidate], known: KnownImages,
                accepted: dict[int, int]) -> DuplicateDecision | None:
    """Exact match first; else the best confirmed candidate (plain before mirrored)."""
    if item.sha256 in known.by_sha:
        return DuplicateDecision(Reason.EXACT_DUPLICATE, known.by_sha[item.sha256], 0, 1.0)
    best: tuple[tuple[bool, float, int], DuplicateDecision] | None = None
    for mirrored in (False, True):
        chosen = [(c, at) for c in cands if c.mirrored is mirrored
                  for at in [accepted.get(-c.target - 1) if c.target < 0 else c.target]
                  if at is not None]  # None: that earlier row of the window was rejected
        if not chosen:
            continue
        targets = thumbs_array([known.thumbs[at] for _, at in chosen])
        keep = coarse_similarities(item.thumb, targets, mirror_query=mirrored) >= COARSE_FLOOR
        if not keep.any():
            continue
        chosen = [x for x, k in zip(chosen, keep) if k]
        passed, similarity = _confirmed(item.thumb, targets[keep], mirrored=mirrored,
                                        settings=known.settings)
        for (c, at), ok, sim in zip(chosen, passed.tolist(), similarity.tolist()):
            if not ok:
                continue
            reason = Reason.MIRRORED_DUPLICATE if mirrored else Reason.NEAR_DUPLICATE
            rank = (not mirrored, sim, -c.distance)
            if best is None or rank > best[0]:
                best = (rank, DuplicateDecision(reason, known.ids[at], c.distance, round(sim, 4)))
    return None if best is None else best[1]


def _confirmed(query: bytes, targets: np.ndarray, *, mirrored: bool,
               settings: DedupSettings) -> tuple[np.ndarray, np.ndarray]:
    """The confirming check of each target: (passed, similarity).

    The crop search of up to ~5% per side first; with the crop path, the targets it did not
    confirm but found close enough (``crop_gate_similarity``) get the wide search (up to
    ~7.5% per side, refined), held to stricter thresholds (or, when it correlates very
    closely, to a looser local residual: ``DedupSettings``).
    """
    match = thumb_similarities(query, targets, mirror_query=mirrored)
    passed = _passes(match, settings.min_similarity, settings.max_local_residual)
    similarity = match.similarity.copy()
    if settings.crop_path:
        redo = np.flatnonzero(~passed & (match.similarity >= settings.crop_gate_similarity))
        wide = thumb_similarities(query, targets[redo], mirror_query=mirrored, wide_crops=True)
        wide_ok = _passes(wide, settings.crop_min_similarity, settings.crop_max_local_residual) \
            | _passes(wide, settings.crop_close_similarity,
                      settings.crop_close_max_local_residual)
        passed[redo] = wide_ok
        similarity[redo] = np.where(wide_ok, wide.similarity, similarity[redo])
    return passed, similarity


def _passes(match: ThumbMatch, min_similarity: float, max_local_residual: float) -> np.ndarray:
    return (match.similarity >= min_similarity) & (match.local_residual <= max_local_residual)
