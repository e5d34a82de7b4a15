"""Exactness of the Hamming index against numpy brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.ingest.hash_index import HammingIndex, PairsResult, all_pairs, hamming_distance

RADII = (0, 1, 4, 8, 10, 12, 16)


def _flip_bits(codes: np.ndarray, n_flips: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip up to ``n_flips[i]`` random bits of each code (repeats may cancel out)."""
    out = codes.copy()
    for k in range(int(n_flips.max(initial=0))):
        bits = np.uint64(1) << rng.integers(0, 64, codes.shape[0]).astype(np.uint64)
        out ^= np.where(n_flips > k, bits, np.uint64(0))
    return out


def _uniform(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, n, dtype=np.uint64, endpoint=False)


def _biased(n: int, seed: int) -> np.ndarray:
    """Biased, correlated bits: thresholded projections of a 6-d Gaussian latent."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 6))
    weights = rng.standard_normal((6, 64))
    thresholds = rng.uniform(-1.5, 1.5, 64)
    bits = (latent @ weights + 0.5 * rng.standard_normal((n, 64))) > thresholds
    return (bits.astype(np.uint64) << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


def _clustered(n: int, seed: int) -> np.ndarray:
    """A few hundred centres, each copied with 0-6 random bit flips (near-duplicates)."""
    rng = np.random.default_rng(seed)
    centres = _biased(max(n // 8, 1), seed + 1)
    copies = centres[rng.integers(0, centres.shape[0], n)]
    return _flip_bits(copies, rng.integers(0, 7, n), rng)


def _with_duplicates(n: int, seed: int) -> np.ndarray:
    """Many exactly identical codes (one code repeated 50 times, plus repeated pairs)."""
    rng = np.random.default_rng(seed)
    codes = _uniform(n, seed)
    codes[: min(50, n)] = codes[0]
    repeats = rng.integers(0, n, n // 4)
    codes[rng.integers(0, n, n // 4)] = codes[repeats]
    return codes


DATASETS = {
    "uniform": _uniform,
    "biased": _biased,
    "clustered": _clustered,
    "duplicates": _with_duplicates,
}


def _brute_all_pairs(codes: np.ndarray, radius: int, dist: np.ndarray | None = None) -> PairsResult:
    if dist is None:
        dist = np.bitwise_count(codes[:, None] ^ codes[None, :])
    left, right = np.nonzero(np.triu(dist <= radius, k=1))
    return PairsResult(left, right, dist[left, right].astype(np.uint8))


def _brute_query(items: np.ndarray, queries: np.ndarray, radius: int) -> PairsResult:
    dist = np.bitwise_count(queries[:, None] ^ items[None, :])
    left, right = np.nonzero(dist <= radius)
    return PairsResult(left, right, dist[left, right].astype(np.uint8))


def _assert_same(got: PairsResult, expected: PairsResult) -> None:
    assert got.left.dtype == np.int64 and got.right.dtype == np.int64
    assert got.distance.dtype == np.uint8
    np.testing.assert_array_equal(got.left, expected.left)
    np.testing.assert_array_equal(got.right, expected.right)
    np.testing.assert_array_equal(got.distance, expected.distance)


@pytest.fixture(scope="module", params=sorted(DATASETS))
def dataset(request: pytest.FixtureRequest) -> np.ndarray:
    return DATASETS[request.param](2000, seed=7)


@pytest.fixture(scope="module")
def dataset_distances(dataset: np.ndarray) -> np.ndarray:
    return np.bitwise_count(dataset[:, None] ^ dataset[None, :])


@pytest.mark.parametrize("radius", RADII)
@pytest.mark.parametrize("blocks", [None, 4, 7])
def test_all_pairs_matches_brute_force(
    dataset: np.ndarray, dataset_distances: np.ndarray, radius: int, blocks: int | None
) -> None:
    expected = _brute_all_pairs(dataset, radius, dataset_distances)
    _assert_same(all_pairs(dataset, radius=radius, blocks=blocks), expected)


@pytest.mark.parametrize("radius", RADII)
def test_query_matches_brute_force(dataset: np.ndarray, radius: int) -> None:
    rng = np.random.default_rng(radius)
    queries = _flip_bits(dataset[rng.integers(0, dataset.shape[0], 400)], np.full(400, 3), rng)
    queries = np.concatenate([queries, _uniform(100, seed=radius)])
    index = HammingIndex(dataset, radius=radius, blocks=5)
    _assert_same(index.query(queries), _brute_query(dataset, queries, radius))


@pytest.mark.parametrize("query_radius", [0, 3, 6, 9, 14, 20])
def test_query_radius_other_than_build_radius(query_radius: int) -> None:
    codes = _clustered(4000, seed=3)
    index = HammingIndex.build(codes, radius=6, blocks=4)
    queries = codes[::7]
    got = index.query(queries, radius=query_radius)
    _assert_same(got, _brute_query(codes, queries, query_radius))


def test_batch_and_per_query_paths_agree() -> None:
    """Large batches are answered bucket-major, small ones per query: same answers."""
    codes = _clustered(20_000, seed=11)
    index = HammingIndex(codes, radius=10, blocks=4)
    queries = _flip_bits(codes[:6000], np.full(6000, 2), np.random.default_rng(0))
    whole = index.query(queries)
    expected = _brute_query(codes, queries[:300], 10)
    _assert_same(index.query(queries[:300]), expected)
    head = whole.left < 300
    _assert_same(PairsResult(whole.left[head], whole.right[head], whole.distance[head]), expected)


def test_planned_layout_on_larger_input() -> None:
    """At 30k codes the planner picks a multi-block layout by itself; still exact."""
    codes = _clustered(30_000, seed=5)
    index = HammingIndex(codes, radius=8)
    assert len(index.block_widths) >= 3 and sum(index.block_widths) == 64
    queries = codes[:500]
    _assert_same(index.query(queries), _brute_query(codes, queries, 8))
    got = all_pairs(codes, radius=8)
    brute = HammingIndex(codes, radius=8).query(codes)
    keep = brute.left < brute.right
    _assert_same(got, PairsResult(brute.left[keep], brute.right[keep], brute.distance[keep]))


def test_empty_inputs() -> None:
    empty = np.empty(0, np.uint64)
    for result in (
        all_pairs(empty, radius=8),
        all_pairs(empty, radius=8, blocks=4),
        HammingIndex(empty, radius=8).query(_uniform(5, seed=1)),
        HammingIndex(_uniform(100, seed=1), radius=8).query(empty),
    ):
        assert len(result) == 0
        assert result.left.dtype == np.int64 and result.distance.dtype == np.uint8


def test_single_code() -> None:
    one = np.array([0xDEADBEEF], np.uint64)
    assert len(all_pairs(one, radius=64)) == 0
    assert len(all_pairs(one, radius=64, blocks=4)) == 0
    got = HammingIndex(one, radius=4, blocks=4).query(
        np.array([0xDEADBEEF, 0xDEADBEEE, 0], np.uint64)
    )
    _assert_same(got, PairsResult(np.array([0, 1]), np.array([0, 0]), np.array([0, 1], np.uint8)))


def test_identical_codes_pair_each_once() -> None:
    codes = np.full(200, 12345, np.uint64)
    got = all_pairs(codes, radius=0, blocks=4)
    assert len(got) == 200 * 199 // 2
    assert np.all(got.left < got.right) and not np.any(got.distance)


def test_hamming_distance() -> None:
    a = np.array([0, 0, 2**64 - 1, 0b1011], np.uint64)
    b = np.array([0, 1, 0, 0b0110], np.uint64)
    np.testing.assert_array_equal(hamming_distance(a, b), np.array([0, 1, 64, 3], np.uint8))
    table = hamming_distance(a[:, None], b[None, :])  # broadcasts like any ufunc
    assert table.shape == (4, 4) and table[2, 0] == 64
    assert hamming_distance(np.array([-1]), np.array([0]))[0] == 64


def test_signed_input_is_reinterpreted() -> None:
    codes = np.array([-1, 2**63 - 1, 0], np.int64)
    got = all_pairs(codes, radius=1)
    _assert_same(got, _brute_all_pairs(codes.view(np.uint64), 1))


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        all_pairs(np.zeros((2, 2), np.uint64), radius=1)
    with pytest.raises(TypeError):
        all_pairs(np.zeros(3, np.float64), radius=1)
    with pytest.raises(ValueError):
        all_pairs(np.zeros(3, np.uint64), radius=65)
    with pytest.raises(ValueError):
        HammingIndex(np.zeros(3, np.uint64), radius=4, blocks=2)


@settings(max_examples=60, deadline=None)
@given(
    codes=st.lists(st.integers(0, 2**64 - 1), max_size=40),
    near=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 63)), max_size=40),
    radius=st.integers(0, 16),
    blocks=st.sampled_from([None, 3, 4, 5, 8]),
)
def test_all_pairs_property(
    codes: list[int], near: list[tuple[int, int]], radius: int, blocks: int | None
) -> None:
    """Equal to brute force, every pair i < j exactly once, sorted."""
    arr = np.array(codes, np.uint64)
    if arr.size:  # add near-duplicates: copies of existing codes with one bit flipped
        extra = [arr[i % arr.size] ^ np.uint64(1 << bit) for i, bit in near]
        arr = np.concatenate([arr, np.array(extra, np.uint64)])
    got = all_pairs(arr, radius=radius, blocks=blocks)
    _assert_same(got, _brute_all_pairs(arr, radius))
    assert np.all(got.left < got.right)
    packed = got.left * max(arr.size, 1) + got.right
    assert np.all(np.diff(packed) > 0)
