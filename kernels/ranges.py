"""Block-max pruning over document ranges, in the manner of BMP (Mallia et al., SIGIR 2024).

The documents are cut into ranges of ``SCAN_BLOCK`` consecutive doc numbers. A query's upper
bound on every range is the weighted sum of its terms' range maxima (``doc_range_maxima``
for the long lists, the postings themselves for the short ones). Ranges are then visited
best bound first, in chunks that double in size: each chunk is scored term at a time, in
query-term order, reading only the chunk's postings, and its documents go to a top-k heap. The
search stops at the first range whose bound cannot reach the k-th score. That is early where
bounds are tight: for short queries (5-term inference-free queries over 1M synthetic
documents: 2.2x the exhaustive kernel and 1.5x term-at-a-time MaxScore) and on collections
whose ranges are topical (``--reorder bp``). With 50-100 query terms of similar weight (a
corpus fitted to SciFact's SPLADE vectors) a range's bound is 4x its best score even after
reordering and nearly every range reaches the k-th score, so the search falls back to the
exhaustive kernel (``FALLBACK``; the figures: ``docs/performance.md``).

Exact by default: scores are summed in query-term order as the exhaustive kernel sums them
(bit-identical), the heap breaks ties by the lower doc number, and a range is skipped only
when its bound, with a margin for float rounding, is below the k-th score. ``theta`` > 1
skips ranges whose bound is below ``theta`` x the k-th score (BMP's approximate mode).
"""

import numba as nb
import numpy as np

from lsr.kernels.doc_ranges import add_in_ranges, range_bounds
from lsr.kernels.maxscore_taat import list_threshold, reads_few
from lsr.kernels.pruned import MARGIN, bound_order, live_terms
from lsr.kernels.scoring import search_one, search_sparse
from lsr.kernels.topk import SCAN_BLOCK, allows, heap_offer, heap_sort, largest_values

FIRST_CHUNK = 8  # the best-bounded ranges, scored before the threshold is first taken
# Give up on ranges when more than 1 / FALLBACK of them remain above that threshold: scoring
# range by range costs about 5x the exhaustive kernel per range (docs/performance.md), so the
# exhaustive kernel, run from the start, is then faster.
FALLBACK = 5


@nb.njit(cache=True, nogil=True)
def _best_ranges(bounds, n, out):
    """Up to ``n`` ranges whose bounds are among the ``n`` largest positive ones, ascending,
    as a copy of ``out``'s first entries (with ties at the n-th bound, the first ones)."""
    nth = largest_values(bounds, bounds.shape[0], np.zeros(n, dtype=np.float32))
    count = 0
    for r in range(bounds.shape[0]):
        if count < n and bounds[r] > 0.0 and bounds[r] >= nth:
            out[count] = r
            count += 1
    return out[:count].copy()


@nb.njit(cache=True, nogil=True)
def _collect(acc, chunk, allowed, k, size, out_docs, out_scores):
    """Offer the chunk's scored documents to the heap and clear their slots; the new size."""
    n_docs = acc.shape[0]
    for r in chunk:
        for d in range(r * SCAN_BLOCK, min(n_docs, (r + 1) * SCAN_BLOCK)):
            s = acc[d]
            if s > 0.0:
                acc[d] = 0.0
                if allows(allowed, d) and (size < k or s >= out_scores[0]):
                    size = heap_offer(out_scores, out_docs, size, k, s, d)
    return size


@nb.njit(cache=True, nogil=True)
def ranges_one(
    offsets, docs, impacts, max_impact, block_offsets, block_max, range_rows, range_max,
    range_base, range_rel, dense_rows, dense_table, q_terms, q_weights, scale, k, theta, allowed,
    acc, candidates, out_docs, out_scores,
):  # fmt: skip
    """Top ``k`` of one query by range block-max pruning; returns the hit count.

    ``acc`` and ``candidates`` are the exhaustive kernel's scratch (``scratch``): the range
    order, the chunk and the range bounds live in ``candidates``. Queries that read few
    postings (``reads_few``) are scored by ``search_sparse``, and those whose bounds leave
    more than ``1 / FALLBACK`` of the ranges to score once the ``FIRST_CHUNK`` best-bounded
    ranges have set a threshold, by the exhaustive kernel (the same results either way).
    """
    n_docs = acc.shape[0]
    m, starts, ends, w, ubs, terms = live_terms(offsets, max_impact, q_terms, q_weights)
    if reads_few(starts, ends, n_docs):
        return search_sparse(
            offsets, docs, impacts, q_terms, q_weights, scale, k, allowed, acc, candidates,
            out_docs, out_scores,
        )  # fmt: skip
    n_ranges = (n_docs + SCAN_BLOCK - 1) // SCAN_BLOCK
    space = candidates
    if 2 * space.shape[0] < 5 * n_ranges:  # only a one-document index lacks the room
        space = np.empty(3 * n_ranges, dtype=np.int64)
    selected = space[:n_ranges]
    chunk_space = space[n_ranges : 2 * n_ranges]
    bounds = space[2 * n_ranges :].view(np.float32)[:n_ranges]
    every = np.arange(m)
    range_bounds(
        docs, impacts, starts, ends, terms, w, every, range_rows, range_max, SCAN_BLOCK, bounds
    )  # fmt: skip
    floor = 0.0
    if allowed.shape[0] == 0:
        order, _ = bound_order(ubs)
        floor = list_threshold(
            block_offsets, block_max, terms, w, ubs, order, k, out_scores, out_docs
        )
    # the best-bounded ranges first, without sorting them all: their k-th score decides
    # whether ranges can prune this query at all
    first = _best_ranges(bounds, FIRST_CHUNK, chunk_space)
    add_in_ranges(
        docs, impacts, starts, ends, w, terms, every, range_rows, range_base, range_rel, first,
        SCAN_BLOCK, acc,
    )  # fmt: skip
    size = _collect(acc, first, allowed, k, 0, out_docs, out_scores)
    for r in first:
        bounds[r] = -1.0  # scored
    cut = floor * theta
    if size == k:
        cut = max(floor, np.float64(out_scores[0])) * theta
    n_sel = 0
    for r in range(n_ranges):
        if bounds[r] > 0.0 and np.float64(bounds[r]) * (1.0 + MARGIN) >= cut:
            selected[n_sel] = r
            n_sel += 1
    if n_sel * FALLBACK > n_ranges:
        return search_one(
            offsets, docs, impacts, dense_rows, dense_table, q_terms, q_weights, scale, k,
            allowed, acc, candidates, out_docs, out_scores,
        )  # fmt: skip
    by_bound = np.argsort(-bounds[selected[:n_sel]], kind="mergesort")
    pos = 0
    width = 2 * FIRST_CHUNK
    while pos < n_sel:
        if size == k:
            cut = max(floor, np.float64(out_scores[0])) * theta
        n_chunk = 0
        for i in range(pos, min(n_sel, pos + width)):
            r = selected[by_bound[i]]
            if np.float64(bounds[r]) * (1.0 + MARGIN) >= cut:
                chunk_space[n_chunk] = r
                n_chunk += 1
        if n_chunk == 0:
            break  # ranges come by falling bound: none after these can reach the cut either
        chunk = np.sort(chunk_space[:n_chunk])
        add_in_ranges(
            docs, impacts, starts, ends, w, terms, every, range_rows, range_base, range_rel,
            chunk, SCAN_BLOCK, acc,
        )  # fmt: skip
        size = _collect(acc, chunk, allowed, k, size, out_docs, out_scores)
        pos += width
        width *= 2
    heap_sort(out_scores, out_docs, size)
    for i in range(size):
        out_scores[i] *= scale
    return size
