"""Term-at-a-time MaxScore: accumulate only the essential terms, then refine a few candidates.

A threshold that the final k-th score cannot fall below is known before any posting is
read: ``k`` blocks of one list whose maxima reach ``b`` hold ``k`` distinct documents that
each score at least ``w * b``. The lightest query terms whose summed upper bounds stay
under it are "non-essential" (lazy): a document found only in their lists cannot enter the
top k. The essential lists are accumulated densely, heaviest first, and the threshold is
raised from the accumulator (k-th largest block maximum) as they go, which can make more
terms lazy. A document becomes a candidate when its partial score plus what the lazy terms
can add to its 64-document range (``doc_range_maxima`` for long lists, the postings for
short ones) reaches the threshold; candidates are looked up in the lazy lists, heaviest
first, through the lists' block tables, and dropped once their bound falls under it.
Survivors are rescored in query-term order, so scores are bit-identical to the exhaustive
kernel's and ties rank the lower doc number first.
"""

import numba as nb
import numpy as np

from lsr.kernels.layout import doc_at, impact_at
from lsr.kernels.pruned import MARGIN, bound_order, live_terms, seek
from lsr.kernels.scoring import search_sparse
from lsr.kernels.topk import (
    SCAN_BLOCK,
    block_maxima,
    heap_offer,
    heap_sort,
    kth_largest,
    mask_accumulator,
)

SPARSE_FRACTION = 4  # queries reading fewer than n_docs / 4 postings go to ``search_sparse``


@nb.njit(cache=True, nogil=True)
def _threshold_estimate(block_offsets, block_max, terms, w, ubs, order, k, heap, heap_ids):
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
def _kth_partial(acc, cand, n_cand, k, heap, heap_ids):
    """The k-th largest ``acc`` value among the candidates (0.0 if there are fewer than k)."""
    size = 0
    for c in range(n_cand):
        s = acc[cand[c]]
        if size < k or s > heap[0]:
            size = heap_offer(heap, heap_ids, size, k, s, c)
    return np.float64(heap[0]) if size == k else 0.0


@nb.njit(cache=True, nogil=True, inline="always")
def _raise_to(bounds, s, v, cur_s, cur_v):
    """Make one term's contribution to ``bounds[s]`` at least ``v`` (a term adds its largest
    value per scan block once); returns the new ``(cur_s, cur_v)``."""
    if s == cur_s:
        if v > cur_v:
            bounds[s] += v - cur_v
            return s, v
        return cur_s, cur_v
    bounds[s] += v
    return s, v


@nb.njit(cache=True, nogil=True)
def _lazy_bounds(docs, impacts, starts, ends, terms, w, lazy, range_rows, range_max, bounds):
    """``bounds[s]``: what the lazy terms can add to any document of scan block ``s``.

    A long list adds its weighted per-range maxima (``doc_range_maxima``); a short one adds
    each posting to its scan block, only its largest one there.
    """
    bounds[:] = 0.0
    for j in lazy:
        wj = w[j]
        row = range_rows[terms[j]]
        if row >= 0:
            maxima = range_max[row]
            for s in range(bounds.shape[0]):
                bounds[s] += wj * np.float32(maxima[s])
            continue
        cur_s, cur_v = -1, np.float32(0.0)
        for p in range(starts[j], ends[j]):
            cur_s, cur_v = _raise_to(
                bounds, doc_at(docs, impacts, p) // SCAN_BLOCK, wj * impact_at(docs, impacts, p),
                cur_s, cur_v,
            )  # fmt: skip


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
def maxscore_taat_one(
    offsets, docs, impacts, max_impact, block_offsets, block_max, block_last, block_size,
    range_rows, range_max, q_terms, q_weights, scale, k, allowed, acc, candidates, out_docs,
    out_scores,
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
    total = 0
    for j in range(m):
        total += ends[j] - starts[j]
    if m == 0 or total * SPARSE_FRACTION < n_docs:
        return search_sparse(
            offsets, docs, impacts, q_terms, q_weights, scale, k, allowed, acc, candidates,
            out_docs, out_scores,
        )  # fmt: skip
    order, prefix = bound_order(ubs)
    floor = 0.0
    if allowed.shape[0] == 0:
        floor = _threshold_estimate(
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
    rest = prefix[n_lazy - 1] if n_lazy > 0 else 0.0
    bounds = tail[cap : cap + n_blocks]
    _lazy_bounds(
        docs, impacts, starts, ends, terms, w, order[:n_lazy], range_rows, range_max, bounds
    )
    cut = np.float32(floor / (1.0 + MARGIN))
    n_cand = 0
    for b in range(n_blocks):
        extra = bounds[b]
        if maxima[b] + extra < cut:
            continue
        for d in range(b * SCAN_BLOCK, min(n_docs, (b + 1) * SCAN_BLOCK)):
            partial = acc[d]  # branch-free append: the test is unpredictable
            candidates[n_cand] = d
            n_cand += np.int64((partial > 0.0) & (partial + extra >= cut))
    partials = np.empty(n_cand, dtype=np.float32)  # clear the accumulator in one sweep
    for c in range(n_cand):
        partials[c] = acc[candidates[c]]
    acc[:] = 0.0
    for c in range(n_cand):
        acc[candidates[c]] = partials[c]
    for x in range(n_lazy - 1, -1, -1):
        j = order[x]
        rest -= ubs[j]
        _lookup(
            docs, impacts, starts[j], ends[j], block_offsets[terms[j]], block_offsets[terms[j] + 1],
            block_last, block_size, w[j], acc, candidates, n_cand,
        )  # fmt: skip
        floor = max(floor, _kth_partial(acc, candidates, n_cand, k, out_scores, out_docs))
        kept = 0
        for c in range(n_cand):
            d = candidates[c]
            if (np.float64(acc[d]) + rest) * (1.0 + MARGIN) > floor:
                candidates[kept] = d
                kept += 1
            else:
                acc[d] = 0.0
        n_cand = kept
    for c in range(n_cand):
        acc[candidates[c]] = 0.0
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
