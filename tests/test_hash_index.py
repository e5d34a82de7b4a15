"""The multi-index Hamming search is exact: it equals brute force on skewed, clustered codes."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.hash_index import HammingIndex, all_pairs


def _codes(n: int, seed: int) -> np.ndarray:
    """Biased, correlated bits plus near-copies: harder than uniform codes."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 6)) @ rng.normal(size=(6, 64)) + rng.normal(size=(n, 64))
    bits = latent > rng.uniform(-1, 1, 64)
    codes = (bits.astype(np.uint64) << np.arange(64, dtype=np.uint64)).sum(axis=1)
    copies = codes[rng.integers(0, n, n // 10)]
    flips = np.uint64(1) << rng.integers(0, 64, len(copies)).astype(np.uint64)
    return np.concatenate([codes, copies ^ flips, codes[:3]]).astype(np.uint64)


def _brute(a: np.ndarray, b: np.ndarray, radius: int) -> set[tuple[int, int, int]]:
    d = np.bitwise_count(a[:, None] ^ b[None, :])
    i, j = np.nonzero(d <= radius)
    return {(int(x), int(y), int(d[x, y])) for x, y in zip(i, j)}


@pytest.mark.parametrize("radius", [0, 1, 4, 8, 10, 12, 16])
def test_query_equals_brute_force(radius):
    items, queries = _codes(1500, 1), _codes(200, 2)
    res = HammingIndex(items, radius=radius).query(queries, radius=radius)
    got = set(zip(res.left.tolist(), res.right.tolist(), res.distance.tolist()))
    assert got == _brute(queries, items, radius)
    assert len(got) == len(res.left), "no pair reported twice"


@pytest.mark.parametrize("radius", [0, 4, 10, 12])
def test_all_pairs_equals_brute_force_each_pair_once(radius):
    codes = _codes(1200, 3)
    res = all_pairs(codes, radius=radius)
    got = list(zip(res.left.tolist(), res.right.tolist(), res.distance.tolist()))
    want = {(i, j, d) for i, j, d in _brute(codes, codes, radius) if i < j}
    assert sorted(got) == sorted(want) and len(set(got)) == len(got)


def test_empty_inputs():
    empty = np.empty(0, np.uint64)
    assert len(all_pairs(empty, radius=10)) == 0
    assert len(HammingIndex(empty, radius=10).query(_codes(5, 4), radius=10)) == 0
    assert len(HammingIndex(_codes(5, 4), radius=10).query(empty, radius=10)) == 0
