"""Duplicate decisions: exact (sha256) and near (perceptual), against the catalog and the batch.

A near-duplicate decision needs two independent agreements: the 64-bit DCT hashes lie within
a Hamming radius (found with a multi-index, never all-pairs), and the shift-tolerant
correlation of the 16x16 grey thumbnails confirms it. A loose radius alone would flag
distinct photos of similar rooms, at a rate that grows with N squared.

First arrival in table order wins: an input is compared with accepted images only (the
catalog, and earlier accepted rows of this run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from schemas.reasons import Reason
from schemas.settings import DedupSettings
from tasks.ingest.hash_index import HammingIndex
from tasks.ingest.inspection import coarse_similarities, thumb_similarities, thumbs_array

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
    phash: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    n_base: int = 0
    base_index: HammingIndex | None = None

    @classmethod
    def from_catalog(cls, *, ids: Sequence[str], shas: Sequence[str], phash: np.ndarray,
                     thumbs: Sequence[bytes], settings: DedupSettings) -> KnownImages:
        """Index the catalog's accepted images once."""
        known = cls(settings=settings, ids=list(ids), thumbs=list(thumbs),
                    by_sha=dict(zip(shas, ids)), phash=np.asarray(phash, np.uint64))
        known.n_base = len(known.ids)
        known.base_index = HammingIndex(known.phash, radius=settings.radius)
        return known

    def add(self, image_id: str, item: DedupItem) -> None:
        """Remember an image accepted during this run."""
        self.ids.append(image_id)
        self.thumbs.append(item.thumb)
        self.by_sha[item.sha256] = image_id
        self.phash = np.append(self.phash, np.uint64(item.phash))


@dataclass(frozen=True)
class _Candidate:
    query: int  # position in the window
    target: int  # < 0: window position -(t+1); >= 0: position in known
    distance: int
    mirrored: bool


def _candidates(items: Sequence[DedupItem], known: KnownImages) -> list[_Candidate]:
    """Every (window item, earlier image) pair within the hash radius, normal or mirrored."""
    radius = known.settings.radius
    normal = np.array([i.phash for i in items], dtype=np.uint64)
    mirror = np.array([i.phash_mirror for i in items], dtype=np.uint64)
    recent = known.phash[known.n_base:]
    local = HammingIndex(np.concatenate([recent, normal]), radius=radius)
    out: list[_Candidate] = []
    for codes, mirrored in ((normal, False), (mirror, True)):
        if known.base_index is not None and known.n_base:
            res = known.base_index.query(codes, radius=radius)
            out += [_Candidate(int(q), int(t), int(d), mirrored)
                    for q, t, d in zip(res.left, res.right, res.distance)]
        res = local.query(codes, radius=radius)
        for q, t, d in zip(res.left.tolist(), res.right.tolist(), res.distance.tolist()):
            if t < len(recent):
                out.append(_Candidate(q, known.n_base + t, d, mirrored))
            elif t - len(recent) < q:  # an earlier row of this window
                out.append(_Candidate(q, -(t - len(recent)) - 1, d, mirrored))
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
        match = thumb_similarities(item.thumb, targets[keep], mirror_query=mirrored)
        scores = zip(chosen, match.similarity.tolist(), match.local_residual.tolist())
        for (c, at), sim, local in scores:
            if sim < known.settings.min_similarity or local > known.settings.max_local_residual:
                continue
            reason = Reason.MIRRORED_DUPLICATE if mirrored else Reason.NEAR_DUPLICATE
            rank = (not mirrored, sim, -c.distance)
            if best is None or rank > best[0]:
                best = (rank, DuplicateDecision(reason, known.ids[at], c.distance, round(sim, 4)))
    return None if best is None else best[1]
