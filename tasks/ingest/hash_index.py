"""Exact Hamming-radius search over 64-bit perceptual hashes (multi-index hashing).

The 64 bits are permuted and cut into ``m`` contiguous blocks.  Block ``k`` is probed at
radius ``s_k`` (``-1`` = not probed).  If ``sum(s_k + 1) >= r + 1`` then any two codes within
distance ``r`` differ in at most ``s_k`` bits of some block ``k`` (generalised pigeonhole), so
probing every block key within ``s_k`` of the query's key and verifying each candidate with a
full popcount finds every pair: no false negatives.  A block probed at its full width covers
everything by itself (that is the brute-force plan).  A pair is reported only by the first
block that can find it, so it is never reported twice and no set is needed.

Each block is a CSR bucket table with direct addressing: the codes sorted by block key
(a counting sort) and ``starts`` of length ``2**width + 1``.  The bit permutation is chosen
greedily on a sample so that biased or correlated bits do not pile into one block (which
would make some buckets huge), and the number of blocks and the per-block radii are chosen
by a cost model whose candidate counts are measured on the data itself.

All-pairs search walks buckets instead of items: each non-empty bucket and its neighbour
buckets with larger keys are copied into one contiguous buffer, and every item of the bucket
is compared against it in L1-sized tiles (vectorised popcount, AVX-512 where available), so
each pair is met once per block and probe costs are shared by the bucket's items.  Large
query batches are answered the same way round: (query, probed bucket) lists are counting-
sorted by bucket, so each bucket is read once for all the queries that probe it.

Kernels are numba ``parallel=True`` loops over tasks; each task writes packed
``a << 31 | b`` keys into its own slice of an output buffer sized from a sampled estimate (the
rare task that overflows is rerun with exact room), and one radix-sort pass plus in-cache
sorts of its partitions produce the sorted (left, right, distance) arrays.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from math import comb

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

__all__ = ["HammingIndex", "PairsResult", "all_pairs", "hamming_distance"]

_CODE_BITS = 64
_MAX_BLOCK_BITS = 22
_MIN_BLOCKS = 3
_MAX_BLOCKS = 32
_SCAN_MAX_ITEMS = 4096
_PLAN_SAMPLE = 16_384
_PLAN_QUERIES = 256
_ESTIMATE_QUERIES = 2048
_BATCH_MIN_PROBES_PER_BUCKET = 0.25
_BATCH_MAX_PROBES = 1 << 25
_PLAN_MAX_MASKS = 4_096
_TASKS_PER_THREAD = 32
_PROBE_COST_QUERY = 300.0
_PROBE_COST_SELF_JOIN = 225.0
_PAIR_OVERSIZE = 1.5
_SCAN_CHUNK = 64
_SCAN_TILE = 2048
_ID_MASK = (1 << 31) - 1
_RADIX_BITS = 11
_BYTES_PER_PAIR = 8 * _PAIR_OVERSIZE + 17  # found keys (sized with slack) + the result


@dataclass(frozen=True)
class PairsResult:
    """Pairs within a Hamming radius, sorted by ``left`` then ``right``.

    ``left`` is the query index (or the smaller item index for all-pairs), ``right`` the
    item index and ``distance`` the Hamming distance between the two codes.
    """

    left: np.ndarray
    right: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return int(self.left.shape[0])


def hamming_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise (broadcasting) Hamming distance, popcount of xor, of 64-bit codes; uint8."""
    xor = np.bitwise_xor(_as_uint64(a), _as_uint64(b))
    return np.bitwise_count(xor).astype(np.uint8)


# --------------------------------------------------------------------------- numba kernels


@intrinsic
def _popcount(typingctx, x):  # type: ignore[no-untyped-def]
    """LLVM ``ctpop`` on a uint64 (vpopcntq where the CPU has it)."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@njit(cache=True)
def _masks_up_to(width, max_weight):  # type: ignore[no-untyped-def]
    """All ``width``-bit masks of weight <= ``max_weight``, ordered by weight (Gosper's hack)."""
    total = 0
    for w in range(max_weight + 1):
        c = 1
        for i in range(w):
            c = c * (width - i) // (i + 1)
        total += c
    out = np.empty(total, np.uint64)
    out[0] = np.uint64(0)
    pos = 1
    limit = np.uint64(1) << np.uint64(width)
    for w in range(1, max_weight + 1):
        v = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
        while v < limit:
            out[pos] = v
            pos += 1
            low = v & (~v + np.uint64(1))
            ripple = v + low
            v = (((ripple ^ v) >> np.uint64(2)) // low) | ripple
    return out


@njit(cache=True)
def _permute_bits(codes, bit_order):  # type: ignore[no-untyped-def]
    """Bit ``p`` of each output code is bit ``bit_order[p]`` of the input code."""
    out = np.zeros(codes.shape[0], np.uint64)
    for p in range(bit_order.shape[0]):
        src = np.uint64(bit_order[p])
        dst = np.uint64(p)
        for i in range(codes.shape[0]):
            out[i] |= ((codes[i] >> src) & np.uint64(1)) << dst
    return out


@njit(cache=True)
def _bucket_block(pcodes, shift, width, sorted_codes, ids):  # type: ignore[no-untyped-def]
    """Counting sort of codes by one block key into ``sorted_codes`` and their ``ids``.

    Returns the bucket ``starts`` (length ``2**width + 1``).
    """
    n = pcodes.shape[0]
    key_mask = (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    starts = np.zeros((1 << width) + 1, np.int32)
    for i in range(n):
        starts[np.int64((pcodes[i] >> shift) & key_mask) + 1] += 1
    for b in range(1 << width):
        starts[b + 1] += starts[b]
    fill = starts[:-1].copy()
    for i in range(n):
        key = np.int64((pcodes[i] >> shift) & key_mask)
        slot = fill[key]
        fill[key] = slot + 1
        sorted_codes[slot] = pcodes[i]
        ids[slot] = i
    return starts


@intrinsic
def _trailing_zeros(typingctx, x):  # type: ignore[no-untyped-def]
    """LLVM ``cttz`` on a non-zero uint64."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return types.uint64(types.uint64), codegen


@njit(cache=True, inline="always")
def _first_finder(xor, block, shifts, key_masks, radii):  # type: ignore[no-untyped-def]
    """1 if no block before ``block`` finds this pair (so ``block`` reports it), else 0.

    Branch-free: the outcome is unpredictable, so it is computed, not branched on.
    """
    first = np.uint64(1)
    for k in range(block):
        block_distance = np.int64(_popcount((xor >> shifts[k]) & key_masks[k]))
        first &= np.uint64((radii[k] < 0) | (block_distance > radii[k]))
    return first


@njit(cache=True, inline="always")
def _count_within(x, codes, lo, hi, radius):  # type: ignore[no-untyped-def]
    """Branch-free (vectorised) count of ``codes[lo:hi]`` within ``radius`` of ``x``."""
    hits = 0
    for j in range(np.uint64(lo), np.uint64(hi)):  # unsigned index: no wraparound, vectorises
        hits += _popcount(x ^ codes[j]) <= radius
    return hits


@njit(cache=True, inline="always")
def _hit_mask(x, codes, lo, hi, radius):  # type: ignore[no-untyped-def]
    """Bit ``j`` set where ``codes[lo + j]`` is within ``radius`` of ``x`` (hi - lo <= 64)."""
    mask = np.uint64(0)
    for j in range(np.uint64(0), np.uint64(hi - lo)):
        mask |= np.uint64(_popcount(x ^ codes[np.uint64(lo) + j]) <= radius) << j
    return mask


@njit(cache=True, inline="always")
def _hit_mask64(x, codes, lo, radius):  # type: ignore[no-untyped-def]
    """``_hit_mask`` for a full chunk of 64: the fixed trip count vectorises fully."""
    mask = np.uint64(0)
    for j in range(np.uint64(0), np.uint64(64)):
        mask |= np.uint64(_popcount(x ^ codes[np.uint64(lo) + j]) <= radius) << j
    return mask


@njit(cache=True, inline="always")
def _record_hits(
    hits, x, u, c0, codes_k, ids_k, k, shifts, key_masks, radii, ordered, keys, pos, cap, cnt
):  # type: ignore[no-untyped-def]
    """Record the pairs (u, item) for the set bits of ``hits`` (items ``c0 + bit``)."""
    while hits:
        j = c0 + np.int64(_trailing_zeros(hits))
        hits &= hits - np.uint64(1)
        v = np.int64(ids_k[j])
        a, b = (min(u, v), max(u, v)) if ordered else (u, v)
        # Written unconditionally (the slot is simply reused when the pair is not reported);
        # a task owns cap + 1 slots, the last one scratch: past ``cap`` it is overwritten and
        # the task is rerun with exact room.
        keys[pos + min(cnt, cap)] = (np.uint64(a) << np.uint64(31)) | np.uint64(b)
        cnt += np.int64(_first_finder(x ^ codes_k[j], k, shifts, key_masks, radii))
    return cnt


@njit(cache=True, inline="always")
def _scan_range(
    x, u, codes_k, ids_k, lo, hi, k, shifts, key_masks, radii, radius, ordered, keys, pos, cap, cnt
):  # type: ignore[no-untyped-def]
    """Record every code of ``codes_k[lo:hi]`` within ``radius`` of ``x`` as a pair with ``u``.

    Full chunks of 64 get a vectorised hit bit mask; the tail is screened with a vectorised
    count first.  Only set bits are then visited.  A pair is packed as ``a << 31 | b`` with
    (a, b) = (u, item), or (min, max) of the two ids when ``ordered``.
    """
    c0 = lo
    while c0 + _SCAN_CHUNK <= hi:
        hits = _hit_mask64(x, codes_k, c0, radius)
        if hits:
            cnt = _record_hits(
                hits,
                x,
                u,
                c0,
                codes_k,
                ids_k,
                k,
                shifts,
                key_masks,
                radii,
                ordered,
                keys,
                pos,
                cap,
                cnt,
            )
        c0 += _SCAN_CHUNK
    if c0 < hi and _count_within(x, codes_k, c0, hi, radius):
        hits = _hit_mask(x, codes_k, c0, hi, radius)
        cnt = _record_hits(
            hits,
            x,
            u,
            c0,
            codes_k,
            ids_k,
            k,
            shifts,
            key_masks,
            radii,
            ordered,
            keys,
            pos,
            cap,
            cnt,
        )
    return cnt


@njit(cache=True)
def _query_one(
    x,
    q,
    codes,
    ids,
    starts,
    start_off,
    shifts,
    key_masks,
    masks,
    mask_off,
    radii,
    radius,
    keys,
    pos,
    cap,
    cnt,
):  # type: ignore[no-untyped-def]
    """Probe every block for one (permuted) query code; record hits, return the new count."""
    r = np.uint64(radius)
    for k in range(shifts.shape[0]):
        if radii[k] < 0:
            continue
        key = (x >> shifts[k]) & key_masks[k]
        for mi in range(mask_off[k], mask_off[k + 1]):
            b = start_off[k] + np.int64(key ^ masks[mi])
            lo, hi = np.int64(starts[b]), np.int64(starts[b + 1])
            cnt = _scan_range(
                x,
                q,
                codes[k],
                ids[k],
                lo,
                hi,
                k,
                shifts,
                key_masks,
                radii,
                r,
                False,
                keys,
                pos,
                cap,
                cnt,
            )
    return cnt


@njit(parallel=True, cache=True)
def _query_kernel(
    queries,
    bounds,
    tasks,
    codes,
    ids,
    starts,
    start_off,
    shifts,
    key_masks,
    masks,
    mask_off,
    radii,
    radius,
    caps,
    slot_off,
    keys,
    counts,
):  # type: ignore[no-untyped-def]
    """Run query chunks ``tasks`` in parallel; each chunk owns ``caps[i]`` output slots."""
    for ti in prange(tasks.shape[0]):
        t = tasks[ti]
        cnt = np.int64(0)
        for q in range(bounds[t], bounds[t + 1]):
            cnt = _query_one(
                queries[q],
                q,
                codes,
                ids,
                starts,
                start_off,
                shifts,
                key_masks,
                masks,
                mask_off,
                radii,
                radius,
                keys,
                slot_off[ti],
                caps[ti],
                cnt,
            )
        counts[ti] = cnt


@njit(parallel=True, cache=True)
def _probe_lists(
    pqueries, shifts, key_masks, masks, mask_off, radii, qstart_off, qlist_off, qstarts, qlist
):  # type: ignore[no-untyped-def]
    """For every block, which queries probe each bucket: a CSR list built by counting sort.

    Block ``k`` fills ``qstarts[qstart_off[k]:]`` (one slot per bucket, plus one) and
    ``qlist[qlist_off[k]:]``; the stored ``qstarts`` values are absolute ``qlist`` positions.
    """
    for k in prange(shifts.shape[0]):
        if radii[k] < 0:
            continue
        base = qstart_off[k]
        n_buckets = np.int64(key_masks[k]) + 1
        qstarts[base] = qlist_off[k]
        for q in range(pqueries.shape[0]):
            key = (pqueries[q] >> shifts[k]) & key_masks[k]
            for mi in range(mask_off[k], mask_off[k + 1]):
                qstarts[base + 1 + np.int64(key ^ masks[mi])] += 1
        for b in range(n_buckets):
            qstarts[base + b + 1] += qstarts[base + b]
        fill = qstarts[base : base + n_buckets].copy()
        for q in range(pqueries.shape[0]):
            key = (pqueries[q] >> shifts[k]) & key_masks[k]
            for mi in range(mask_off[k], mask_off[k + 1]):
                b = np.int64(key ^ masks[mi])
                qlist[fill[b]] = q
                fill[b] += 1


@njit(cache=True)
def _batch_task(
    k,
    buckets,
    pqueries,
    qstarts,
    qstart_off,
    qlist,
    codes,
    ids,
    starts,
    start_off,
    shifts,
    key_masks,
    radii,
    radius,
    keys,
    pos,
    cap,
):  # type: ignore[no-untyped-def]
    """Scan each bucket of ``buckets`` (block ``k``) once for all the queries that probe it."""
    cnt, r = np.int64(0), np.uint64(radius)
    codes_k, ids_k = codes[k], ids[k]
    for key in buckets:
        b = start_off[k] + key
        lo, hi = np.int64(starts[b]), np.int64(starts[b + 1])
        qb = qstart_off[k] + key
        for qi in range(qstarts[qb], qstarts[qb + 1]):
            q = np.int64(qlist[qi])
            cnt = _scan_range(
                pqueries[q],
                q,
                codes_k,
                ids_k,
                lo,
                hi,
                k,
                shifts,
                key_masks,
                radii,
                r,
                False,
                keys,
                pos,
                cap,
                cnt,
            )
    return cnt


@njit(parallel=True, cache=True)
def _batch_kernel(
    tasks,
    task_block,
    task_buckets,
    task_off,
    pqueries,
    qstarts,
    qstart_off,
    qlist,
    codes,
    ids,
    starts,
    start_off,
    shifts,
    key_masks,
    radii,
    radius,
    caps,
    slot_off,
    keys,
    counts,
):  # type: ignore[no-untyped-def]
    """Run batch-query ``tasks`` in parallel; each owns ``caps[i]`` output slots."""
    for ti in prange(tasks.shape[0]):
        t = tasks[ti]
        buckets = task_buckets[task_off[t] : task_off[t + 1]]
        counts[ti] = _batch_task(
            task_block[t],
            buckets,
            pqueries,
            qstarts,
            qstart_off,
            qlist,
            codes,
            ids,
            starts,
            start_off,
            shifts,
            key_masks,
            radii,
            radius,
            keys,
            slot_off[ti],
            caps[ti],
        )


@njit(cache=True, inline="always")
def _append_range(buf_codes, buf_ids, filled, codes_k, ids_k, lo, hi):  # type: ignore[no-untyped-def]
    """Copy ``codes_k[lo:hi]`` (and ids) to the end of the buffers, growing them if needed."""
    n = hi - lo
    if filled + n > buf_codes.shape[0]:
        size = max(2 * buf_codes.shape[0], filled + n)
        grown_codes = np.empty(size, np.uint64)
        grown_ids = np.empty(size, np.int32)
        for i in range(filled):  # explicit loops: slice copies compile a costly error path
            grown_codes[i] = buf_codes[i]
            grown_ids[i] = buf_ids[i]
        buf_codes, buf_ids = grown_codes, grown_ids
    for i in range(n):
        buf_codes[filled + i] = codes_k[lo + i]
        buf_ids[filled + i] = ids_k[lo + i]
    return buf_codes, buf_ids, filled + n


@njit(cache=True)
def _all_pairs_task(
    k,
    buckets,
    codes,
    ids,
    starts,
    start_off,
    shifts,
    key_masks,
    masks,
    mask_off,
    radii,
    radius,
    keys,
    pos,
    cap,
):  # type: ignore[no-untyped-def]
    """All pairs first found by block ``k`` whose smaller bucket key is in ``buckets``.

    A bucket and its neighbours with larger keys are copied into one contiguous buffer, which
    is then swept in L1-sized tiles, each tile compared against all of the bucket's items.
    """
    cnt, r = np.int64(0), np.uint64(radius)
    codes_k, ids_k = codes[k], ids[k]
    buf_codes = np.empty(4096, np.uint64)
    buf_ids = np.empty(4096, np.int32)
    for key in buckets:
        b = start_off[k] + key
        buf_codes, buf_ids, filled = _append_range(
            buf_codes, buf_ids, 0, codes_k, ids_k, starts[b], starts[b + 1]
        )
        own = filled
        for mi in range(mask_off[k] + 1, mask_off[k + 1]):  # masks[mask_off[k]] is 0: own key
            other = np.int64(np.uint64(key) ^ masks[mi])
            if other > key:
                c = start_off[k] + other
                buf_codes, buf_ids, filled = _append_range(
                    buf_codes, buf_ids, filled, codes_k, ids_k, starts[c], starts[c + 1]
                )
        for t0 in range(0, filled, _SCAN_TILE):
            t1 = min(t0 + _SCAN_TILE, filled)
            for i in range(min(own, t1 - 1)):
                cnt = _scan_range(
                    buf_codes[i],
                    np.int64(buf_ids[i]),
                    buf_codes,
                    buf_ids,
                    max(i + 1, t0),
                    t1,
                    k,
                    shifts,
                    key_masks,
                    radii,
                    r,
                    True,
                    keys,
                    pos,
                    cap,
                    cnt,
                )
    return cnt


@njit(parallel=True, cache=True)
def _all_pairs_kernel(
    tasks,
    task_block,
    task_buckets,
    task_off,
    codes,
    ids,
    starts,
    start_off,
    shifts,
    key_masks,
    masks,
    mask_off,
    radii,
    radius,
    caps,
    slot_off,
    keys,
    counts,
):  # type: ignore[no-untyped-def]
    """Run all-pairs ``tasks`` in parallel; each owns ``caps[i]`` output slots."""
    for ti in prange(tasks.shape[0]):
        t = tasks[ti]
        buckets = task_buckets[task_off[t] : task_off[t + 1]]
        counts[ti] = _all_pairs_task(
            task_block[t],
            buckets,
            codes,
            ids,
            starts,
            start_off,
            shifts,
            key_masks,
            masks,
            mask_off,
            radii,
            radius,
            keys,
            slot_off[ti],
            caps[ti],
        )


@njit(cache=True)
def _compact_slots(keys, slot_off, counts, keep):  # type: ignore[no-untyped-def]
    """Move the filled prefix of every kept task slice to the front, in order; return length."""
    write = 0
    for t in range(counts.shape[0]):
        if keep[t]:
            lo = slot_off[t]
            for i in range(counts[t]):
                keys[write + i] = keys[lo + i]
            write += counts[t]
    return write


@njit(cache=True)
def _radix_sort_range(src, tmp, lo, hi, shifts):  # type: ignore[no-untyped-def]
    """Sort ``src[lo:hi]`` by the digits at ``shifts`` (LSD), ``tmp[lo:hi]`` as scratch.

    Returns True when the sorted run ended up in ``tmp``.
    """
    if hi - lo <= 48:  # insertion sort (numba's np.sort would add seconds of compile time)
        for i in range(lo + 1, hi):
            key, j = src[i], i - 1
            while j >= lo and src[j] > key:
                src[j + 1] = src[j]
                j -= 1
            src[j + 1] = key
        return False
    n_digits = 1 << _RADIX_BITS
    digit_mask = np.uint64(n_digits - 1)
    counts = np.empty(n_digits, np.int64)
    a, b, flipped = src, tmp, False
    for shift in shifts:
        counts[:] = 0
        for i in range(lo, hi):
            counts[np.int64((a[i] >> shift) & digit_mask)] += 1
        total = lo
        for d in range(n_digits):
            counts[d], total = total, total + counts[d]
        for i in range(lo, hi):
            d = np.int64((a[i] >> shift) & digit_mask)
            b[counts[d]] = a[i]
            counts[d] += 1
        a, b, flipped = b, a, not flipped
    return flipped


@njit(parallel=True, cache=True)
def _sort_decode(
    keys, starts, ends, top_shift, low_shifts, left_codes, right_codes, part, left, right, dist
):  # type: ignore[no-untyped-def]
    """Sort the packed keys in ``keys[starts[c]:ends[c]]`` and decode them into pairs.

    One parallel radix pass on the top digit of ``a`` splits the keys into cache-sized
    partitions in ``part`` (also packing the task slices together); each partition is then
    radix sorted on its ``low_shifts`` digits in cache, with ``keys`` reused as scratch, and
    decoded to (a, b, popcount(left_codes[a] ^ right_codes[b])) in ``left, right, dist``.
    ``part`` may share memory with ``left`` (each slot is read before it is overwritten);
    fresh memory is costly to fault in, so big arrays come from numpy (huge pages) and are
    reused where possible.
    """
    n_chunks, n_digits = starts.shape[0], 1 << _RADIX_BITS
    digit_mask = np.uint64(n_digits - 1)
    hist = np.zeros((n_chunks, n_digits), np.int64)
    for c in prange(n_chunks):
        for i in range(starts[c], ends[c]):
            hist[c, np.int64((keys[i] >> top_shift) & digit_mask)] += 1
    offsets = np.empty((n_chunks, n_digits), np.int64)
    bounds = np.empty(n_digits + 1, np.int64)
    total = 0
    for d in range(n_digits):
        bounds[d] = total
        for c in range(n_chunks):
            offsets[c, d] = total
            total += hist[c, d]
    bounds[n_digits] = total
    for c in prange(n_chunks):
        fill = offsets[c]
        for i in range(starts[c], ends[c]):
            d = np.int64((keys[i] >> top_shift) & digit_mask)
            part[fill[d]] = keys[i]
            fill[d] += 1
    for t in prange(n_digits):
        d = (t * 1021) & (n_digits - 1)  # spread: low ids hold more pairs (a = min id)
        lo, hi = bounds[d], bounds[d + 1]
        done = keys if _radix_sort_range(part, keys, lo, hi, low_shifts) else part
        for i in range(lo, hi):
            a = np.int64(done[i] >> np.uint64(31))
            b = np.int64(done[i] & np.uint64(_ID_MASK))
            left[i], right[i] = a, b
            dist[i] = np.uint8(_popcount(left_codes[a] ^ right_codes[b]))


# ------------------------------------------------------------------ planning (numba parts)


@njit(cache=True)
def _split_collisions(group, sizes, n_groups, bits):  # type: ignore[no-untyped-def]
    """Colliding sample pairs after splitting every group by ``bits`` (0/1 per item)."""
    ones = np.zeros(n_groups, np.int64)
    for i in range(group.shape[0]):
        ones[group[i]] += bits[i]
    total = 0
    for g in range(n_groups):
        zeros = sizes[g] - ones[g]
        total += ones[g] * (ones[g] - 1) + zeros * (zeros - 1)
    return total


@njit(cache=True)
def _split_groups(group, sizes, n_groups, bits):  # type: ignore[no-untyped-def]
    """Refine the grouping by ``bits`` in place (compact new ids and sizes); new group count."""
    new_id = np.full(2 * n_groups, -1, np.int64)
    new_sizes = np.zeros(2 * n_groups, np.int64)
    count = 0
    for i in range(group.shape[0]):
        slot = 2 * group[i] + bits[i]
        if new_id[slot] < 0:
            new_id[slot] = count
            count += 1
        group[i] = new_id[slot]
        new_sizes[new_id[slot]] += 1
    for g in range(count):
        sizes[g] = new_sizes[g]
    return count


@njit(cache=True)
def _greedy_bit_order(bit_matrix, widths):  # type: ignore[no-untyped-def]
    """Assign bits to blocks so that every block's key collides as rarely as possible.

    Water-filling: the block whose key currently collides most (on the sample) takes the
    remaining bit that splits its groups best, which accounts for bias and correlation.
    """
    m, n = widths.shape[0], bit_matrix.shape[1]
    groups = np.zeros((m, n), np.int64)
    sizes = np.zeros((m, n), np.int64)
    for k in range(m):
        sizes[k, 0] = n
    n_groups = np.ones(m, np.int64)
    coll = np.full(m, n * (n - 1), np.int64)
    filled = np.zeros(m, np.int64)
    used = np.zeros(_CODE_BITS, np.bool_)
    assigned = np.empty((m, _CODE_BITS), np.int64)
    for _ in range(_CODE_BITS):
        k, worst = -1, -1
        for kk in range(m):
            if filled[kk] < widths[kk] and coll[kk] > worst:
                k, worst = kk, coll[kk]
        best_bit, best = -1, np.iinfo(np.int64).max
        for bit in range(_CODE_BITS):
            if not used[bit]:
                c = _split_collisions(groups[k], sizes[k], n_groups[k], bit_matrix[bit])
                if c < best:
                    best_bit, best = bit, c
        n_groups[k] = _split_groups(groups[k], sizes[k], n_groups[k], bit_matrix[best_bit])
        coll[k] = best
        used[best_bit] = True
        assigned[k, filled[k]] = best_bit
        filled[k] += 1
    order = np.empty(_CODE_BITS, np.int64)
    pos = 0
    for k in range(m):
        for i in range(widths[k]):
            order[pos + i] = assigned[k, i]
        pos += widths[k]
    return order


@njit(cache=True)
def _candidates_by_weight(item_keys, query_keys, width, masks, max_weight):  # type: ignore[no-untyped-def]
    """Mean bucket size met per query at each probe weight, and the non-empty bucket count.

    ``query_keys`` are drawn from the items, so each query's own slot is not counted.
    """
    counts = np.zeros(1 << width, np.int64)
    for key in item_keys:
        counts[key] += 1
    nonempty = 0
    for c in counts:
        nonempty += c > 0
    per_weight = np.zeros(max_weight + 1, np.float64)
    for key in query_keys:
        for mask in masks:
            per_weight[_popcount(mask)] += counts[np.int64(np.uint64(key) ^ mask)]
        per_weight[0] -= 1
    return per_weight / max(query_keys.shape[0], 1), nonempty


# ---------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _BlockProfile:
    """Measured cost inputs of one block: bucket items met per query by probe weight."""

    width: int
    candidates: np.ndarray
    nonempty: float


@dataclass(frozen=True)
class _Layout:
    """A bit permutation cut into contiguous blocks, with per-block cost profiles."""

    bit_order: np.ndarray
    widths: tuple[int, ...]
    profiles: tuple[_BlockProfile, ...]

    @property
    def shifts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.widths)[:-1]]).astype(np.uint64)

    @property
    def key_masks(self) -> np.ndarray:
        return np.array([(1 << w) - 1 for w in self.widths], dtype=np.uint64)


def _probe_cost(width: int, *, self_join: bool) -> float:
    """Cost of one bucket probe in candidate checks (measured: ~0.14 ns per candidate check,
    ~35-40 ns per probe with 16-bit tables, more once a block's tables outgrow the caches)."""
    base = _PROBE_COST_SELF_JOIN if self_join else _PROBE_COST_QUERY
    return base * (1.0 if width <= 16 else 2.0 if width <= 20 else 4.0)


def _block_cost(profile: _BlockProfile, radius: int, *, n_items: int, self_join: bool) -> float:
    """Expected work per query (or per item for all-pairs) of probing one block at ``radius``."""
    if radius < 0:
        return 0.0
    b = profile.width
    probes = sum(comb(b, w) for w in range(radius + 1))
    measured = float(profile.candidates[: radius + 1].sum())
    unmeasured = sum(comb(b, w) for w in range(profile.candidates.shape[0], radius + 1))
    candidates = min(float(n_items), measured + n_items * unmeasured / 2.0**b)
    if not self_join:
        return probes * _probe_cost(b, self_join=False) + candidates
    probes_per_item = probes * profile.nonempty / max(n_items, 1)
    return 0.5 * (probes_per_item * _probe_cost(b, self_join=True) + candidates)


def _allocate_radii(
    layout: _Layout, radius: int, *, n_items: int, self_join: bool
) -> tuple[np.ndarray, float]:
    """Cheapest exact per-block radii and their cost.

    Exact when ``sum(s_k + 1) >= radius + 1`` (dynamic programme over blocks) or when a single
    block is probed at its full width (a scan), whichever is cheaper.
    """
    need, m = radius + 1, len(layout.profiles)
    best = np.full((m + 1, need + 1), np.inf)
    best[0, 0] = 0.0
    pick = np.zeros((m, need + 1, 2), np.int64)  # (radius chosen, coverage before)
    for k, p in enumerate(layout.profiles):
        for s in range(-1, min(p.width, radius) + 1):
            c = _block_cost(p, s, n_items=n_items, self_join=self_join)
            for have in range(need + 1):
                reach = min(need, have + s + 1)
                if best[k, have] + c < best[k + 1, reach]:
                    best[k + 1, reach] = best[k, have] + c
                    pick[k, reach] = (s, have)
    radii, cost = np.full(m, -1, np.int64), float(best[m, need])
    if np.isfinite(cost):
        have = need
        for k in range(m - 1, -1, -1):
            radii[k], have = pick[k, have]
    for k, p in enumerate(layout.profiles):
        c = _block_cost(p, p.width, n_items=n_items, self_join=self_join)
        if c < cost:
            radii, cost = np.full(m, -1, np.int64), c
            radii[k] = p.width
    return radii, cost


def _near_equal_widths(m: int) -> tuple[int, ...]:
    q, rem = divmod(_CODE_BITS, m)
    return (q + 1,) * rem + (q,) * (m - rem)


def _sample(codes: np.ndarray, size: int) -> np.ndarray:
    """A deterministic random sample of ``size`` codes (all of them if there are fewer)."""
    if codes.shape[0] <= size:
        return codes
    rng = np.random.default_rng(0x5EED)
    return codes[np.sort(rng.choice(codes.shape[0], size, replace=False))]


def _profile_layout(
    sample: np.ndarray, bit_order: np.ndarray, widths: tuple[int, ...], *, n_items: int
) -> _Layout:
    """Measure, on the sample, the bucket items each block meets per query by probe weight."""
    pcodes = _permute_bits(sample, bit_order)
    queries = _sample(pcodes, _PLAN_QUERIES)
    scale = (n_items - 1) / max(pcodes.shape[0] - 1, 1)
    profiles, shift = [], 0
    for w in widths:
        max_weight = 0
        while max_weight < w and sum(comb(w, i) for i in range(max_weight + 2)) <= _PLAN_MAX_MASKS:
            max_weight += 1
        mask = np.uint64((1 << w) - 1)
        item_keys = ((pcodes >> np.uint64(shift)) & mask).astype(np.int64)
        query_keys = ((queries >> np.uint64(shift)) & mask).astype(np.int64)
        masks = _masks_up_to(w, max_weight)
        per_weight, nonempty = _candidates_by_weight(item_keys, query_keys, w, masks, max_weight)
        growth = min(2.0**w, nonempty * n_items / pcodes.shape[0])
        profiles.append(_BlockProfile(w, np.maximum(per_weight * scale, 0.0), growth))
        shift += w
    return _Layout(bit_order, widths, tuple(profiles))


def _bit_matrix(sample: np.ndarray) -> np.ndarray:
    """(64, n) matrix of the sample's bits, as int64 0/1."""
    shifts = np.arange(_CODE_BITS, dtype=np.uint64)[:, None]
    return ((sample[None, :] >> shifts) & np.uint64(1)).astype(np.int64)


def _scan_layout(n_items: int) -> _Layout:
    """One zero-width block: a plain scan over all items (used for tiny inputs)."""
    profile = _BlockProfile(0, np.array([float(max(n_items - 1, 0))]), 1.0)
    return _Layout(np.arange(_CODE_BITS, dtype=np.int64), (0,), (profile,))


def _block_counts(n_items: int, blocks: int | None) -> list[int]:
    """Numbers of blocks worth planning for: ``blocks`` if forced, else those whose blocks are
    narrow enough for direct addressing at this size."""
    if blocks is not None:
        if not _MIN_BLOCKS <= blocks <= _MAX_BLOCKS:
            raise ValueError(f"blocks must be in {_MIN_BLOCKS}..{_MAX_BLOCKS}, got {blocks}")
        return [blocks]
    if n_items < _SCAN_MAX_ITEMS:
        return []
    max_bits = min(_MAX_BLOCK_BITS, max(8, n_items.bit_length() + 2))
    return [m for m in range(3, 9) if _near_equal_widths(m)[0] <= max_bits]


def _plan_layout(
    codes: np.ndarray, radius: int, *, self_join: bool, blocks: int | None = None
) -> tuple[_Layout, np.ndarray]:
    """Pick the block layout and per-block radii with the least expected work.

    With ``blocks`` the number of blocks is fixed (the bit order and radii are still planned);
    otherwise a plain scan competes too, and wins for small inputs.
    """
    n = codes.shape[0]
    best, best_radii, best_cost = None, np.zeros(0, np.int64), np.inf
    if blocks is None or n == 0:
        best = _scan_layout(n)
        best_radii, best_cost = _allocate_radii(best, radius, n_items=n, self_join=self_join)
    counts = _block_counts(n, blocks) if n > 0 else []
    if counts:
        sample = _sample(codes, 1 << 18)
        bits = _bit_matrix(_sample(sample, _PLAN_SAMPLE))
    for m in counts:
        widths = _near_equal_widths(m)
        order = _greedy_bit_order(bits, np.array(widths, dtype=np.int64))
        layout = _profile_layout(sample, order, widths, n_items=n)
        radii, cost = _allocate_radii(layout, radius, n_items=n, self_join=self_join)
        if best is None or cost < best_cost:
            best, best_radii, best_cost = layout, radii, cost
    assert best is not None
    return best, best_radii


# ------------------------------------------------------------------------ tables and runs


@dataclass(frozen=True)
class _Tables:
    """Per-block CSR bucket tables over the permuted codes."""

    codes: np.ndarray  # (m, n) uint64, permuted codes sorted by block key
    ids: np.ndarray  # (m, n) int32, original item index of each sorted code
    starts: np.ndarray  # int32, the blocks' bucket starts (2**width + 1 each) concatenated
    start_off: np.ndarray  # int64 (m,), where each block's starts begin


@dataclass(frozen=True)
class _Probes:
    """The probe masks of every block for one choice of per-block radii."""

    radii: np.ndarray
    masks: np.ndarray
    mask_off: np.ndarray


def _build_tables(pcodes: np.ndarray, layout: _Layout) -> _Tables:
    m, n = len(layout.widths), pcodes.shape[0]
    codes = np.empty((m, n), np.uint64)
    ids = np.empty((m, n), np.int32)
    starts = []
    for k, (shift, width) in enumerate(zip(layout.shifts, layout.widths, strict=True)):
        starts.append(_bucket_block(pcodes, shift, width, codes[k], ids[k]))
    start_off = np.concatenate([[0], np.cumsum([s.shape[0] for s in starts])[:-1]])
    return _Tables(codes, ids, np.concatenate(starts), start_off.astype(np.int64))


def _probes(layout: _Layout, radii: np.ndarray) -> _Probes:
    masks = [
        _masks_up_to(w, int(s)) if s >= 0 else np.empty(0, np.uint64)
        for w, s in zip(layout.widths, radii, strict=True)
    ]
    mask_off = np.concatenate([[0], np.cumsum([x.shape[0] for x in masks])]).astype(np.int64)
    return _Probes(radii.astype(np.int64), np.concatenate(masks), mask_off)


def _fill_slots(
    run: Callable[..., None], tasks: np.ndarray, caps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``tasks``, each into its own slice of ``caps[i]`` slots: (keys, counts, offsets).

    Each slice has one more slot, which the kernels use as scratch.
    """
    slot_off = np.concatenate([[0], np.cumsum(caps + 1)]).astype(np.int64)
    keys = np.empty(slot_off[-1], np.uint64)
    counts = np.zeros(tasks.shape[0], np.int64)
    run(tasks, caps.astype(np.int64), slot_off, keys, counts)
    return keys, counts, slot_off


@dataclass(frozen=True)
class _Found:
    """Unsorted packed ``a << 31 | b`` pair keys, held in ``keys[starts[c]:ends[c]]``."""

    keys: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def _run_tasks(run: Callable[..., None], caps: np.ndarray) -> _Found:
    """Run every task with a guessed capacity; rerun the overflowed ones with exact room."""
    tasks = np.arange(caps.shape[0], dtype=np.int64)
    keys, counts, slot_off = _fill_slots(run, tasks, caps)
    over = counts > caps
    if not over.any():
        return _Found(keys, slot_off[:-1], slot_off[:-1] + counts)
    filled = _compact_slots(keys, slot_off, counts, ~over)
    more, more_counts, more_off = _fill_slots(run, tasks[over], counts[over])
    more_filled = _compact_slots(more, more_off, more_counts, np.ones(over.sum(), np.bool_))
    keys = np.concatenate([keys[:filled], more[:more_filled]])
    return _Found(keys, np.zeros(1, np.int64), np.full(1, keys.shape[0], np.int64))


def _decode(found: _Found, left_codes: np.ndarray, right_codes: np.ndarray) -> PairsResult:
    """Sorted (a, b, distance) of the found keys; a indexes ``left_codes``, b ``right_codes``."""
    left_bits = max(left_codes.shape[0] - 1, 1).bit_length()
    right_bits = max(right_codes.shape[0] - 1, 1).bit_length()
    top_shift = 31 + max(left_bits - _RADIX_BITS, 0)
    low_shifts = [*range(0, right_bits, _RADIX_BITS), *range(31, top_shift, _RADIX_BITS)]
    total = int((found.ends - found.starts).sum())
    out = PairsResult(
        np.empty(total, np.int64), np.empty(total, np.int64), np.empty(total, np.uint8)
    )
    _sort_decode(
        found.keys,
        found.starts.astype(np.int64),
        found.ends.astype(np.int64),
        np.uint64(top_shift),
        np.array(low_shifts, np.uint64),
        left_codes,
        right_codes,
        out.left.view(np.uint64),
        out.left,
        out.right,
        out.distance,
    )
    return out


def _query_tables(
    pqueries: np.ndarray,
    tables: _Tables,
    layout: _Layout,
    probes: _Probes,
    radius: int,
    *,
    hits_per_query: float,
) -> _Found:
    """Every (query, item) pair within ``radius``, probing per query (for small batches)."""
    run, bounds = _query_runner(pqueries, tables, layout, probes, radius)
    caps = np.ceil(np.diff(bounds) * hits_per_query * _PAIR_OVERSIZE).astype(np.int64) + 64
    return _run_tasks(run, caps)


def _query_runner(
    pqueries: np.ndarray, tables: _Tables, layout: _Layout, probes: _Probes, radius: int
) -> tuple[Callable[..., None], np.ndarray]:
    """The per-query kernel over chunks of queries, as ``run(tasks, caps, *buffers)``."""
    n_queries = pqueries.shape[0]
    n_tasks = max(1, min(n_queries, numba.get_num_threads() * _TASKS_PER_THREAD))
    bounds = np.linspace(0, n_queries, n_tasks + 1).round().astype(np.int64)
    shifts, key_masks = layout.shifts, layout.key_masks

    def run(tasks: np.ndarray, caps: np.ndarray, *buffers: np.ndarray) -> None:
        _query_kernel(
            pqueries,
            bounds,
            tasks,
            tables.codes,
            tables.ids,
            tables.starts,
            tables.start_off,
            shifts,
            key_masks,
            probes.masks,
            probes.mask_off,
            probes.radii,
            radius,
            caps,
            *buffers,
        )

    return run, bounds


def _hits_per_block(
    pqueries: np.ndarray, tables: _Tables, layout: _Layout, probes: _Probes, radius: int
) -> np.ndarray:
    """Mean hits per query reported by each block, counted without storing any pair.

    A block's reports depend only on the blocks before it, so probing blocks ``0..k`` alone
    counts the reports of blocks up to ``k``; differences give each block's share.
    """
    cumulative = []
    for k in range(len(layout.widths)):
        radii = np.where(np.arange(len(layout.widths)) > k, -1, probes.radii)
        prefix = _Probes(radii, probes.masks, probes.mask_off)
        run, bounds = _query_runner(pqueries, tables, layout, prefix, radius)
        counts = _fill_slots(
            run, np.arange(bounds.shape[0] - 1), np.zeros(bounds.shape[0] - 1, np.int64)
        )[1]
        cumulative.append(int(counts.sum()))
    return np.diff(np.array([0, *cumulative])) / max(pqueries.shape[0], 1)


def _batch_query_tables(
    pqueries: np.ndarray,
    tables: _Tables,
    layout: _Layout,
    probes: _Probes,
    radius: int,
    *,
    hits_per_block: np.ndarray,
) -> _Found:
    """Same result as ``_query_tables``, bucket-major: every probed bucket is read once.

    The (query, probed bucket) lists are counting-sorted by bucket, so each bucket's codes are
    loaded once and compared with all the queries probing it (no random access per probe).
    """
    widths = np.array(layout.widths, np.int64)
    active = probes.radii >= 0
    n_masks = np.diff(probes.mask_off) * active
    qstart_off = np.concatenate([[0], np.cumsum((1 << widths) + 1)[:-1]]).astype(np.int64)
    qlist_off = np.concatenate([[0], np.cumsum(n_masks * pqueries.shape[0])]).astype(np.int64)
    qstarts = np.zeros(int(((1 << widths) + 1).sum()), np.int64)
    qlist = np.empty(int(qlist_off[-1]), np.int32)
    _probe_lists(
        pqueries,
        layout.shifts,
        layout.key_masks,
        probes.masks,
        probes.mask_off,
        probes.radii,
        qstart_off,
        qlist_off,
        qstarts,
        qlist,
    )
    blocks = [int(k) for k in np.flatnonzero(active)]
    keys = []
    for k in blocks:
        probed = _bucket_counts(qstarts, qstart_off[k], layout.widths[k]) > 0
        filled = _bucket_counts(tables.starts, tables.start_off[k], layout.widths[k]) > 0
        keys.append(np.flatnonzero(probed & filled))
    task_block, task_buckets, task_off = _interleaved_tasks(
        blocks, keys, per_thread=_TASKS_PER_THREAD
    )
    phases = task_block.shape[0] // max(len(blocks), 1)
    expected = pqueries.shape[0] * hits_per_block[task_block] * _PAIR_OVERSIZE / max(phases, 1)
    caps = np.ceil(expected).astype(np.int64) + 64

    def run(tasks: np.ndarray, caps: np.ndarray, *buffers: np.ndarray) -> None:
        _batch_kernel(
            tasks,
            task_block,
            task_buckets,
            task_off,
            pqueries,
            qstarts,
            qstart_off,
            qlist,
            tables.codes,
            tables.ids,
            tables.starts,
            tables.start_off,
            layout.shifts,
            layout.key_masks,
            probes.radii,
            radius,
            caps,
            *buffers,
        )

    return _run_tasks(run, caps)


def _search(
    queries: np.ndarray,
    codes: np.ndarray,
    tables: _Tables,
    layout: _Layout,
    probes: _Probes,
    radius: int,
    *,
    hits_per_block: np.ndarray,
) -> PairsResult:
    """Sorted pairs (query, item, distance); bucket-major in batches when that pays off.

    ``queries`` and ``codes`` are the original codes (for the distances), in the same bit
    order as each other.
    """
    pqueries = _permute_bits(queries, layout.bit_order)
    active = probes.radii >= 0
    n_masks = int(np.diff(probes.mask_off)[active].sum())
    n_buckets = sum(1 << w for w, a in zip(layout.widths, active, strict=True) if a)
    n_queries = pqueries.shape[0]
    if n_queries * n_masks < _BATCH_MIN_PROBES_PER_BUCKET * n_buckets:
        found = _query_tables(
            pqueries, tables, layout, probes, radius, hits_per_query=float(hits_per_block.sum())
        )
        return _decode(found, queries, codes)
    batch = max(1, _BATCH_MAX_PROBES // max(n_masks, 1))
    parts = []
    for lo in range(0, n_queries, batch):
        found = _batch_query_tables(
            pqueries[lo : lo + batch], tables, layout, probes, radius, hits_per_block=hits_per_block
        )
        part = _decode(found, queries[lo : lo + batch], codes)
        parts.append(PairsResult(part.left + lo, part.right, part.distance))
    if len(parts) == 1:
        return parts[0]
    return PairsResult(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in ("left", "right", "distance"))
    )


def _estimate_size(n_items: int) -> int:
    """Items sampled as queries to size output buffers: enough for a stable mean."""
    return min(_ESTIMATE_QUERIES, max(256, n_items // 16))


def _pairs_per_block(
    pcodes: np.ndarray, tables: _Tables, layout: _Layout, probes: _Probes, radius: int
) -> np.ndarray:
    """Estimated all-pairs output of each block, from a sample of items run as queries.

    Each sampled item also finds itself, in the first probed block: that is not a pair.
    """
    n = pcodes.shape[0]
    sample = _sample(pcodes, _estimate_size(pcodes.shape[0]))
    hits = _hits_per_block(sample, tables, layout, probes, radius)
    hits[np.argmax(probes.radii >= 0)] -= 1.0
    return np.maximum(hits, 0.0) * n / 2.0


def _bucket_counts(starts: np.ndarray, offset: int, width: int) -> np.ndarray:
    """Items per bucket of one block, from the concatenated CSR ``starts``."""
    return np.diff(starts[offset : offset + (1 << width) + 1])


def _interleaved_tasks(
    blocks: list[int], keys: list[np.ndarray], *, per_thread: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tasks (block, strided slice of its bucket keys), interleaved across blocks.

    Interleaving keeps both halves of the task list (numba splits a prange statically)
    equally heavy; striding spreads dense regions of the key space over many tasks.
    """
    phases = max(1, numba.get_num_threads() * per_thread // max(len(blocks), 1))
    task_block, buckets = [], []
    for p in range(phases):
        for k, block_keys in zip(blocks, keys, strict=True):
            task_block.append(k)
            buckets.append(block_keys[p::phases])
    task_off = np.concatenate([[0], np.cumsum([b.shape[0] for b in buckets])]).astype(np.int64)
    flat = np.concatenate(buckets) if buckets else np.empty(0, np.int64)
    return np.array(task_block, np.int64), flat.astype(np.int64), task_off


def _all_pairs_tasks(
    tables: _Tables, layout: _Layout, probes: _Probes
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All-pairs tasks over the non-empty buckets of every probed block."""
    blocks = [k for k in range(len(layout.widths)) if probes.radii[k] >= 0]
    keys = [
        np.flatnonzero(_bucket_counts(tables.starts, tables.start_off[k], layout.widths[k]))
        for k in blocks
    ]
    return _interleaved_tasks(blocks, keys, per_thread=_TASKS_PER_THREAD)


def _check_room(expected_pairs: float, *, radius: int) -> None:
    """Fail early, not by the OOM killer, when the pairs cannot fit in physical memory."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: do not guess
        return
    needed = expected_pairs * _BYTES_PER_PAIR
    if needed > available:
        raise MemoryError(
            f"about {expected_pairs:.3g} pairs lie within radius {radius}; holding them needs "
            f"~{needed / 2**30:.1f} GiB but {available / 2**30:.1f} GiB is free. "
            "Use a smaller radius or de-duplicate identical codes first."
        )


def _self_join(pcodes: np.ndarray, layout: _Layout, radii: np.ndarray, radius: int) -> _Found:
    """Packed ``i << 31 | j`` keys (i < j) of all pairs within ``radius`` (unsorted)."""
    tables = _build_tables(pcodes, layout)
    probes = _probes(layout, radii)
    expected = _pairs_per_block(pcodes, tables, layout, probes, radius)
    _check_room(float(expected.sum()), radius=radius)
    task_block, task_buckets, task_off = _all_pairs_tasks(tables, layout, probes)
    phases = task_block.shape[0] // max(1, int((probes.radii >= 0).sum()))
    caps = np.ceil(expected[task_block] * _PAIR_OVERSIZE / phases).astype(np.int64) + 256
    shifts, key_masks = layout.shifts, layout.key_masks

    def run(tasks: np.ndarray, caps: np.ndarray, *buffers: np.ndarray) -> None:
        _all_pairs_kernel(
            tasks,
            task_block,
            task_buckets,
            task_off,
            tables.codes,
            tables.ids,
            tables.starts,
            tables.start_off,
            shifts,
            key_masks,
            probes.masks,
            probes.mask_off,
            probes.radii,
            radius,
            caps,
            *buffers,
        )

    return _run_tasks(run, caps)


# ------------------------------------------------------------------------------ public API


def _as_uint64(codes: np.ndarray) -> np.ndarray:
    """Codes as uint64; signed integers are reinterpreted bit for bit (-1 is all ones)."""
    arr = np.asarray(codes)
    if arr.dtype == np.uint64:
        return arr
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"codes must be 64-bit integers, got {arr.dtype}")
    if arr.dtype.kind == "i":
        return arr.astype(np.int64).view(np.uint64)
    return arr.astype(np.uint64)


def _as_codes(codes: np.ndarray) -> np.ndarray:
    """Validate a 1-D array of 64-bit codes (contiguous uint64)."""
    arr = _as_uint64(codes)
    if arr.ndim != 1:
        raise ValueError(f"codes must be a 1-D array, got shape {arr.shape}")
    if arr.shape[0] > _ID_MASK:
        raise ValueError(f"at most {_ID_MASK:,} codes are supported")
    return np.ascontiguousarray(arr)


def _check_radius(radius: int) -> int:
    if not 0 <= int(radius) <= _CODE_BITS:
        raise ValueError(f"radius must be in 0..{_CODE_BITS}, got {radius}")
    return int(radius)


def _empty_pairs() -> PairsResult:
    return PairsResult(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8))


class HammingIndex:
    """Multi-index hashing over 64-bit codes: exact (no false negatives) radius search.

    The layout (bit permutation, number of blocks) is planned for ``radius`` from the codes
    themselves; queries at any other radius (0..64) are still exact, only the per-block probe
    radii are re-planned for them.  ``blocks`` forces the number of blocks (3..32).  Building
    (planning and bucketing) happens in the constructor; ``build`` is an alias.
    """

    def __init__(self, codes: np.ndarray, *, radius: int, blocks: int | None = None) -> None:
        self._codes = _as_codes(codes).copy()  # kept for distances; callers may reuse theirs
        self.radius = _check_radius(radius)
        self.n_items = int(self._codes.shape[0])
        self._layout, radii = _plan_layout(self._codes, self.radius, self_join=False, blocks=blocks)
        pcodes = _permute_bits(self._codes, self._layout.bit_order)
        self._tables = _build_tables(pcodes, self._layout)
        self._probes = {self.radius: _probes(self._layout, radii)}
        self._hits_per_block = self._sample_hits(pcodes)

    @classmethod
    def build(cls, codes: np.ndarray, *, radius: int, blocks: int | None = None) -> HammingIndex:
        """Bucket ``codes`` for search at ``radius`` (same as the constructor)."""
        return cls(codes, radius=radius, blocks=blocks)

    @property
    def block_widths(self) -> tuple[int, ...]:
        """Bits per block of the chosen layout."""
        return self._layout.widths

    def block_radii(self, radius: int | None = None) -> tuple[int, ...]:
        """Probe radius of each block for a query radius (-1: block not probed)."""
        return tuple(int(s) for s in self._probes_for(radius).radii)

    def query(self, queries: np.ndarray, *, radius: int | None = None) -> PairsResult:
        """Every (query index, item index, distance) with distance <= radius.

        ``radius`` defaults to the build radius; any radius in 0..64 gives exact results.
        Sorted by query index, then item index.
        """
        queries = _as_codes(queries)
        r = self.radius if radius is None else _check_radius(radius)
        if queries.shape[0] == 0 or self.n_items == 0:
            return _empty_pairs()
        return _search(
            queries,
            self._codes,
            self._tables,
            self._layout,
            self._probes_for(r),
            r,
            hits_per_block=self._hits_per_block,
        )

    def _probes_for(self, radius: int | None) -> _Probes:
        r = self.radius if radius is None else _check_radius(radius)
        if r not in self._probes:
            radii, _ = _allocate_radii(self._layout, r, n_items=self.n_items, self_join=False)
            self._probes[r] = _probes(self._layout, radii)
        return self._probes[r]

    def _sample_hits(self, pcodes: np.ndarray) -> np.ndarray:
        """Mean hits per query reported by each block at the build radius (item sample)."""
        if self.n_items == 0:
            return np.zeros(len(self._layout.widths))
        sample = _sample(pcodes, _estimate_size(pcodes.shape[0]))
        return _hits_per_block(
            sample, self._tables, self._layout, self._probes[self.radius], self.radius
        )


def all_pairs(codes: np.ndarray, *, radius: int, blocks: int | None = None) -> PairsResult:
    """Every pair ``i < j`` with ``popcount(codes[i] ^ codes[j]) <= radius``, each exactly once.

    Sorted by ``left`` (= i), then ``right`` (= j).  ``blocks`` forces the number of hash
    blocks (3..32); by default it is planned from the data, and tiny inputs are scanned.
    """
    codes = _as_codes(codes)
    radius = _check_radius(radius)
    if codes.shape[0] < 2:
        return _empty_pairs()
    layout, radii = _plan_layout(codes, radius, self_join=True, blocks=blocks)
    found = _self_join(_permute_bits(codes, layout.bit_order), layout, radii, radius)
    return _decode(found, codes, codes)
