"""Term-at-a-time MaxScore: accumulate only the essential terms, then refine a few candidates.

A threshold that the final k-th score cannot fall below is known before any posting is
read: ``k`` blocks of one list whose maxima reach ``b`` hold ``k`` distinct documents that
each score at least ``w * b``. The lightest query terms whose summed upper bounds stay
under it are "non-essential" (lazy): a document found only in their lists cannot enter the
top k. The essential lists are accumulated densely, heaviest first, and the threshold is
raised from the accumulator (k-th largest block maximum) as they go, which can make more
terms lazy. A doc range (``lsr.kernels.doc_ranges``) stays a candidate when its best partial
score plus what the lazy terms can add to it reaches the threshold; the lazy lists are then
read in the candidate ranges only, through the long lists' range starts. A few survivors
within rounding of the k-th full score are rescored in query-term order, so scores are
bit-identical to the exhaustive kernel's and ties rank the lower doc number first.

Reading the lazy lists range by range replaced a lookup of each candidate document in each
lazy list: on a corpus fitted to SciFact's SPLADE vectors (50-100 query terms, 1-14% of the
documents candidates) those lookups made the search 4x slower than exhaustive; range by range
it is 2.2x slower there, which is why exact ``auto`` measures before it picks
(``lsr.index.auto_exact``; the figures: ``docs/performance.md``).
"""

import numba as nb
import numpy as np

from lsr.kernels.doc_ranges import add_in_ranges, range_bounds
from lsr.kernels.layout import doc_at, impact_at
from lsr.kernels.pruned import MARGIN, bound_order, live_terms, seek
from lsr.kernels.scoring import search_sparse
from lsr.kernels.topk import (
    SCAN_BLOCK,
    allows,
    block_maxima,
    heap_offer,
    heap_sort,
    kth_largest,
    mask_accumulator,
)

SPARSE_FRACTION = 4  # queries reading fewer than n_docs / 4 postings go to ``search_sparse``


@nb.njit(cache=True, nogil=True)
def reads_few(starts, ends, n_docs):
    """Whether the live lists ``starts:ends`` hold too few postings (under ``n_docs /
    SPARSE_FRACTION``, or none) for pruning to pay: ``search_sparse`` scores them instead."""
    total = 0
    for j in range(starts.shape[0]):
        total += ends[j] - starts[j]
    return starts.shape[0] == 0 or total * SPARSE_FRACTION < n_docs


@nb.njit(cache=True, nogil=True)
def list_threshold(block_offsets, block_max, terms, w, ubs, order, k, heap, heap_ids):
    """The best single-list lower bound on the final k-th score (0.0 if no list has k blocks)."""
    best = 0.0
    for i in range(order.shape[0] - 1, -1, -1):
        j = order[i]
        if ubs[j] <= best:
            break  # lists are visited by falling upper bound: none left can do better
        lo, hi = block_offsets[terms[j]], block_offsets[terms[j] + 1]
        if hi - lo < k:
            continue
        kth = kth_largest(block_max[lo:hi], hi - lo, k, heap, heap_ids)
        bound = np.float64(w[j]) * np.float64(kth)
        if bound > best:
            best = bound
    return best


@nb.njit(cache=True, nogil=True)
def _accumulator_floor(acc, maxima, k, heap, heap_ids):
    """``(n_blocks, floor)``: the accumulator's block maxima (into ``maxima``) and the k-th
    largest of them, less the rounding margin: ``k`` documents score at least that much."""
    n_blocks = block_maxima(acc, maxima)
    return n_blocks, np.float64(kth_largest(maxima, n_blocks, k, heap, heap_ids)) / (1.0 + MARGIN)


@nb.njit(cache=True, nogil=True)
def _lookup(docs, impacts, start, end, b0, b1, block_last, block_size, wj, acc, cand, n_cand):
    """Add one list's contributions to the (sorted) candidates' ``acc``: gallop over the
    list's block table (``b0:b1``, 64x smaller than the list, so mostly cached), then scan
    the one block that can hold the candidate."""
    b = b0
    for c in range(n_cand):
        d = cand[c]
        b = seek(block_last, block_last, b, b1, d)  # the block table read as a doc list
        if b == b1:
            return
        lo = start + (b - b0) * block_size
        for p in range(lo, min(end, lo + block_size)):
            doc = doc_at(docs, impacts, p)
            if doc >= d:
                if doc == d:
                    acc[d] += wj * impact_at(docs, impacts, p)
                break


@nb.njit(cache=True, nogil=True)
def _clear_outside(acc, chosen):
    """Zero ``acc`` everywhere but the ranges ``chosen`` (ascending)."""
    done = 0
    for r in chosen:
        acc[done : r * SCAN_BLOCK] = 0.0
        done = (r + 1) * SCAN_BLOCK
    acc[done:] = 0.0


@nb.njit(cache=True, nogil=True)
def maxscore_taat_one(
    offsets, docs, impacts, max_impact, block_offsets, block_max, block_last, block_size,
    range_rows, range_max, range_base, range_rel, q_terms, q_weights, scale, k, allowed, acc,
    candidates, out_docs, out_scores,
):  # fmt: skip
    """Top ``k`` of one query by term-at-a-time MaxScore; returns the hit count.

    ``acc`` and ``candidates`` are the exhaustive kernel's scratch (see ``scratch``). Queries
    that read fewer than ``n_docs / SPARSE_FRACTION`` postings are scored by ``search_sparse``.
    Only documents ``allowed`` allows are returned: with a mask, the accumulator is masked
    before each floor is taken from it, and the list-based first estimate (whose k documents
    may be excluded) is skipped, so every floor counts allowed documents only.
    """
    n_docs = acc.shape[0]
    m, starts, ends, w, ubs, terms = live_terms(offsets, max_impact, q_terms, q_weights)
    if reads_few(starts, ends, n_docs):
        return search_sparse(
            offsets, docs, impacts, q_terms, q_weights, scale, k, allowed, acc, candidates,
            out_docs, out_scores,
        )  # fmt: skip
    order, prefix = bound_order(ubs)
    floor = 0.0
    if allowed.shape[0] == 0:
        floor = list_threshold(
            block_offsets, block_max, terms, w, ubs, order, k, out_scores, out_docs
        )
    n_lazy = 0
    while n_lazy < m and prefix[n_lazy] * (1.0 + MARGIN) <= floor:
        n_lazy += 1
    tail = candidates[n_docs:].view(np.float32)
    cap = n_docs // SCAN_BLOCK + 1
    maxima = tail[:cap]
    n_blocks = 0
    since = 0  # postings accumulated since the maxima were last taken (live lists are not empty)
    i = m - 1
    while i >= n_lazy:  # heaviest first, re-estimating the floor every n_docs / 2 postings
        j = order[i]
        wj = w[j]
        for p in range(starts[j], ends[j]):
            acc[doc_at(docs, impacts, p)] += wj * impact_at(docs, impacts, p)
        since += ends[j] - starts[j]
        i -= 1
        if since * 2 >= n_docs and i >= n_lazy:
            mask_accumulator(acc, allowed)
            n_blocks, kth = _accumulator_floor(acc, maxima, k, out_scores, out_docs)
            floor = max(floor, kth)
            since = 0
            while n_lazy <= i and prefix[n_lazy] * (1.0 + MARGIN) <= floor:
                n_lazy += 1
    mask_accumulator(acc, allowed)  # candidates below come from allowed documents only
    if since > 0:
        n_blocks, kth = _accumulator_floor(acc, maxima, k, out_scores, out_docs)
        floor = max(floor, kth)
    lazy = order[:n_lazy][::-1].copy()  # heaviest first
    bounds = tail[cap : cap + n_blocks]
    range_bounds(
        docs, impacts, starts, ends, terms, w, lazy, range_rows, range_max, SCAN_BLOCK, bounds
    )  # fmt: skip
    cut = np.float32(floor / (1.0 + MARGIN))
    n_chosen = 0
    for b in range(n_blocks):  # the ranges where some document may still reach the floor
        candidates[n_chosen] = b
        n_chosen += np.int64(maxima[b] + bounds[b] >= cut)
    chosen = candidates[:n_chosen].copy()
    _clear_outside(acc, chosen)
    add_in_ranges(
        docs, impacts, starts, ends, w, terms, lazy, range_rows, range_base, range_rel, chosen,
        SCAN_BLOCK, acc,
    )  # fmt: skip
    # the full scores, summed out of query-term order: the k-th best raises the floor, and
    # the documents within rounding of it are rescored exactly below
    size = 0
    for r in chosen:
        for d in range(r * SCAN_BLOCK, min(n_docs, (r + 1) * SCAN_BLOCK)):
            s = acc[d]
            if s > 0.0 and allows(allowed, d) and (size < k or s > out_scores[0]):
                size = heap_offer(out_scores, out_docs, size, k, s, d)
    if size == k:
        floor = max(floor, np.float64(out_scores[0]))
    cut = np.float32(floor / (1.0 + MARGIN) ** 2)
    n_cand = 0
    for r in chosen:
        for d in range(r * SCAN_BLOCK, min(n_docs, (r + 1) * SCAN_BLOCK)):
            s = acc[d]
            acc[d] = 0.0
            candidates[n_cand] = d
            n_cand += np.int64((s > 0.0) & (s >= cut) & allows(allowed, d))
    for j in range(m):  # rescore the survivors in query-term order: bit-identical scores
        _lookup(
            docs, impacts, starts[j], ends[j], block_offsets[terms[j]], block_offsets[terms[j] + 1],
            block_last, block_size, w[j], acc, candidates, n_cand,
        )  # fmt: skip
    size = 0
    for c in range(n_cand):
        d = candidates[c]
        size = heap_offer(out_scores, out_docs, size, k, acc[d], d)
        acc[d] = 0.0
    heap_sort(out_scores, out_docs, size)
    for i in range(size):
        out_scores[i] *= scale
    return size
