"""Approximate search over clustered postings blocks with summaries (in the style of Seismic).

Each term's postings list is (optionally) pruned to its highest impacts and split into blocks
of similar documents; each block has a summary, a sparse vector of per-term maximum impacts
cut to a fraction of its mass, stored per list transposed and quantized (see
:mod:`lsr.kernels.cluster_build`). A query visits, for each of its heaviest terms, the blocks
whose summary scores reach ``heap_factor`` x the current k-th score, and scores those
documents exactly through a forward (document-major) index. Scores are summed in ascending
term order, as term-at-a-time scoring does, so a document's score is bit-identical to the
exact one; with full summaries, no static pruning, all query terms and ``heap_factor`` 1 the
top-k is exact (summary values are rounded up, and block bounds are compared with a small
relative margin that covers float rounding).
"""

from typing import NamedTuple

import numba as nb
import numpy as np

from lsr.kernels.prefetch import LINE, prefetch
from lsr.kernels.pruned import MARGIN
from lsr.kernels.topk import allows, batch_outputs, heap_offer, heap_sort

AHEAD = 2  # documents prefetched ahead of the one being scored


class ClusterArrays(NamedTuple):
    """The arrays of a clustered index, passed to the kernels as one value (Numba unpacks
    named tuples like plain ones): blocks per term, documents per block, each list's block
    summaries (transposed: summary term -> the list's blocks holding it) and the forward
    (document-major) index."""

    term_blocks: np.ndarray  # int64 (vocab + 1): term t's blocks are term_blocks[t]:[t+1]
    block_offsets: np.ndarray  # int64 (blocks + 1): block b's documents in block_docs
    block_docs: np.ndarray  # doc numbers, block by block
    list_comps: np.ndarray  # int64 (vocab + 1): list t's summary terms in comp_terms
    list_entries: np.ndarray  # int64 (vocab + 1): list t's first entry
    comp_terms: np.ndarray  # summary term ids, ascending within a list (uint16 or uint32)
    comp_ends: np.ndarray  # uint32: where a summary term's entries end, from its list's first
    entry_blocks: np.ndarray  # block numbers within the list (uint16 or uint32)
    entry_values: np.ndarray  # uint8: the block's maximum impact of the term / its scale
    block_scale: np.ndarray  # float32 per block
    fwd_offsets: np.ndarray  # int64 (docs + 1): document d's terms
    fwd_terms: np.ndarray  # term ids per document, ascending
    fwd_impacts: np.ndarray  # stored impacts per document and term


@nb.njit(cache=True, nogil=True)
def _summary_scores(arrays, t, q_terms, q_weights, bounds):
    """Every block of list ``t``: its summary's dot product with the query, into
    ``bounds[:n_blocks]``, by a merge join of the query's terms (ascending) with the list's
    summary terms (a binary search from the last match on)."""
    term_blocks, list_comps, comp_terms, comp_ends = (
        arrays.term_blocks,
        arrays.list_comps,
        arrays.comp_terms,
        arrays.comp_ends,
    )
    entry_blocks, entry_values, block_scale = (
        arrays.entry_blocks,
        arrays.entry_values,
        arrays.block_scale,
    )
    b_lo = term_blocks[t]
    n_b = term_blocks[t + 1] - b_lo
    for r in range(n_b):
        bounds[r] = 0.0
    p, c_lo, c_hi = list_comps[t], list_comps[t], list_comps[t + 1]
    base = arrays.list_entries[t]
    for j in range(q_terms.shape[0]):
        if p >= c_hi:
            break
        qt = q_terms[j]
        if comp_terms[p] < qt:
            lo, hi = p + 1, c_hi
            while lo < hi:
                mid = (lo + hi) >> 1
                if comp_terms[mid] < qt:
                    lo = mid + 1
                else:
                    hi = mid
            p = lo
            if p >= c_hi:
                break
        if comp_terms[p] == qt:
            w = q_weights[j]
            e_lo = base + (np.int64(comp_ends[p - 1]) if p > c_lo else 0)
            for e in range(e_lo, base + np.int64(comp_ends[p])):
                bounds[entry_blocks[e]] += w * np.float32(entry_values[e])
            p += 1
    for r in range(n_b):
        bounds[r] *= block_scale[b_lo + r]
    return n_b


@nb.njit(cache=True, nogil=True)
def _prefetch_doc(fwd_offsets, fwd_terms, fwd_impacts, d):
    """Ask for document ``d``'s forward-index cache lines ahead of scoring it."""
    lo, hi = fwd_offsets[d], fwd_offsets[d + 1]
    for i in range(lo, hi, LINE // fwd_terms.itemsize):
        prefetch(fwd_terms, i)
    for i in range(lo, hi, LINE // fwd_impacts.itemsize):
        prefetch(fwd_impacts, i)


@nb.njit(cache=True, nogil=True)
def _score_block(arrays, b, q_dense, allowed, seen, k, size, out_docs, out_scores):
    """Score block ``b``'s documents not seen yet into the heap; the new heap size. The
    document after next is prefetched while one is scored (see :mod:`lsr.kernels.prefetch`)."""
    block_offsets, block_docs = arrays.block_offsets, arrays.block_docs
    fwd_offsets, fwd_terms, fwd_impacts = arrays.fwd_offsets, arrays.fwd_terms, arrays.fwd_impacts
    lo, hi = block_offsets[b], block_offsets[b + 1]
    for jd in range(lo, min(lo + AHEAD, hi)):
        _prefetch_doc(fwd_offsets, fwd_terms, fwd_impacts, block_docs[jd])
    for jd in range(lo, hi):
        if jd + AHEAD < hi:
            _prefetch_doc(fwd_offsets, fwd_terms, fwd_impacts, block_docs[jd + AHEAD])
        d = block_docs[jd]
        bit = np.uint8(1 << (d & 7))
        if seen[d >> 3] & bit:
            continue
        seen[d >> 3] |= bit
        if not allows(allowed, d):
            continue
        s = np.float32(0.0)
        for i in range(fwd_offsets[d], fwd_offsets[d + 1]):
            s += q_dense[fwd_terms[i]] * np.float32(fwd_impacts[i])
        if s > 0.0 and (size < k or s >= out_scores[0]):
            size = heap_offer(out_scores, out_docs, size, k, s, np.int64(d))
    return size


@nb.njit(cache=True, nogil=True)
def clustered_one(
    arrays,
    q_terms,
    q_weights,
    n_probe_terms,
    heap_factor,
    scale,
    k,
    allowed,
    q_dense,
    seen,
    bounds,
    keys,
    out_docs,
    out_scores,
):
    """Top-``k`` of one query (terms ascending) over clustered blocks; returns the hit count.

    ``arrays``: the :class:`ClusterArrays` of the clustered index. ``n_probe_terms``: how many
    of the heaviest query terms have their blocks visited (all terms still count in the
    scores). The first probed list visits its blocks best summary score first, so the k-th
    score rises fast; later lists visit theirs in stored order, skipping those whose score
    cannot reach ``heap_factor`` x the k-th score (no sort: a pass over the scores costs
    less). Caller-owned scratch: ``q_dense`` (float32, vocabulary size, all zero); ``seen``
    (uint8, a bit per document: cleared here, so documents are scored once; n_docs / 8
    bytes stay in cache where one int per document would not); ``bounds`` (float32) and
    ``keys`` (uint64) with room for the most blocks a list has. Documents ``allowed``
    excludes are never scored (see ``lsr.kernels.topk``), so the k-th score that bounds
    the blocks is an allowed one's.
    """
    term_blocks = arrays.term_blocks
    seen[:] = 0
    n_q = q_terms.shape[0]
    for j in range(n_q):
        q_dense[q_terms[j]] = q_weights[j]
    order = np.argsort(-q_weights, kind="mergesort")[: min(n_probe_terms, n_q)]
    size = 0
    first = True
    for j in order:
        t = q_terms[j]
        n_b = _summary_scores(arrays, t, q_terms, q_weights, bounds)
        if n_b == 0:
            continue
        b_lo = term_blocks[t]
        if first:
            bits = bounds.view(np.uint32)
            for r in range(n_b):  # bound bits (>= 0: ordered as the floats), ties lower first
                keys[r] = (np.uint64(bits[r]) << np.uint64(32)) | np.uint64(0xFFFFFFFF - r)
            keys[:n_b].sort()
            for i in range(n_b - 1, -1, -1):
                r = np.int64(np.uint64(0xFFFFFFFF) - (keys[i] & np.uint64(0xFFFFFFFF)))
                if size == k and bounds[r] < heap_factor * out_scores[0] * (1.0 - MARGIN):
                    break  # blocks come best first: no later one reaches the bound either
                size = _score_block(
                    arrays, b_lo + r, q_dense, allowed, seen, k, size, out_docs, out_scores
                )
            first = False
            continue
        for r in range(n_b):
            if size == k and bounds[r] < heap_factor * out_scores[0] * (1.0 - MARGIN):
                continue
            size = _score_block(
                arrays, b_lo + r, q_dense, allowed, seen, k, size, out_docs, out_scores
            )
    for j in range(n_q):
        q_dense[q_terms[j]] = 0.0
    heap_sort(out_scores, out_docs, size)
    for j in range(size):
        out_scores[j] *= scale
    return size


@nb.njit(cache=True, nogil=True)
def _clustered_slice(
    arrays,
    q_indptr,
    q_terms,
    q_weights,
    n_probe,
    heap_factor,
    scale,
    k,
    allowed,
    n_terms,
    n_docs,
    max_blocks,
    lo,
    hi,
    out_docs,
    out_scores,
    counts,
):
    """Queries ``lo:hi`` of a batch on one thread, with their own scratch."""
    q_dense = np.zeros(n_terms, dtype=np.float32)
    seen = np.zeros((n_docs >> 3) + 1, dtype=np.uint8)
    bounds = np.zeros(max_blocks, dtype=np.float32)
    keys = np.empty(max_blocks, dtype=np.uint64)
    for q in range(lo, hi):
        a, b = q_indptr[q], q_indptr[q + 1]
        counts[q] = clustered_one(
            arrays, q_terms[a:b], q_weights[a:b], n_probe, heap_factor, scale, k, allowed,
            q_dense, seen, bounds, keys, out_docs[q], out_scores[q],
        )  # fmt: skip


@nb.njit(cache=True, nogil=True, parallel=True)
def clustered_many(
    arrays,
    q_indptr,
    q_terms,
    q_weights,
    n_probe,
    heap_factor,
    scale,
    k,
    allowed,
    n_terms,
    n_docs,
    max_blocks,
    n_workers,
):
    """Every row of a query CSR in ``n_workers`` parallel slices; ``(docs, scores, counts)``.

    ``arrays``: the clustered-index arrays, as ``clustered_one`` takes them.
    """
    n_queries = q_indptr.shape[0] - 1
    out_docs, out_scores, counts = batch_outputs(n_queries, k)
    n_workers = max(1, min(n_workers, n_queries))
    for w in nb.prange(n_workers):
        _clustered_slice(
            arrays, q_indptr, q_terms, q_weights, n_probe, heap_factor, scale, k, allowed,
            n_terms, n_docs, max_blocks, w * n_queries // n_workers,
            (w + 1) * n_queries // n_workers, out_docs, out_scores, counts,
        )  # fmt: skip
    return out_docs, out_scores, counts
