"""Approximate search over clustered postings blocks with summaries (in the style of Seismic).

Each term's postings list is (optionally) cut to its highest impacts, then split into blocks
of similar documents; a block's summary is a sparse vector of per-term maximum impacts (kept
to a fraction of its mass). A query visits, for each of its heaviest terms, the blocks whose
summary scores reach ``heap_factor`` x the current k-th score, and scores those documents
exactly through a forward (document-major) index. Scores are summed in ascending term order,
as term-at-a-time scoring does, so a document's score is bit-identical to the exact one; with
full summaries, no static pruning, all query terms and ``heap_factor`` 1 the top-k is exact
(block bounds are compared with a small relative margin that covers float rounding).
"""

from typing import NamedTuple

import numba as nb
import numpy as np

from lsr.kernels.pruned import MARGIN
from lsr.kernels.topk import allows, batch_outputs, heap_offer, heap_sort


class ClusterArrays(NamedTuple):
    """The arrays of a clustered index, passed to the kernels as one value (Numba unpacks
    named tuples like plain ones): blocks per term, documents per block, block summaries
    and the forward (document-major) index."""

    term_blocks: np.ndarray  # int64 (vocab + 1): term t's blocks are term_blocks[t]:[t+1]
    block_offsets: np.ndarray  # int64 (blocks + 1): block b's documents in block_docs
    block_docs: np.ndarray  # doc numbers, block by block
    sum_offsets: np.ndarray  # int64 (blocks + 1): block b's summary entries
    sum_terms: np.ndarray  # summary term ids (uint16 or uint32)
    sum_values: np.ndarray  # summary maximum impacts
    fwd_offsets: np.ndarray  # int64 (docs + 1): document d's terms
    fwd_terms: np.ndarray  # term ids per document, ascending
    fwd_impacts: np.ndarray  # stored impacts per document and term


@nb.njit(cache=True, nogil=True)
def prune_postings(offsets, docs, impacts, keep):
    """Each term's ``keep`` highest-impact postings (ties: lower doc first), in doc order.

    Returns ``(offsets, docs, impacts)`` of the pruned lists; ``keep`` <= 0 keeps everything.
    """
    n_terms = offsets.shape[0] - 1
    out_offsets = np.zeros(n_terms + 1, dtype=np.int64)
    for t in range(n_terms):
        n = offsets[t + 1] - offsets[t]
        out_offsets[t + 1] = out_offsets[t] + (min(n, keep) if keep > 0 else n)
    out_docs = np.empty(out_offsets[n_terms], dtype=docs.dtype)
    out_impacts = np.empty(out_offsets[n_terms], dtype=impacts.dtype)
    for t in range(n_terms):
        lo, hi, at = offsets[t], offsets[t + 1], out_offsets[t]
        n = out_offsets[t + 1] - at
        if n == hi - lo:
            out_docs[at : at + n] = docs[lo:hi]
            out_impacts[at : at + n] = impacts[lo:hi]
            continue
        order = np.argsort(-impacts[lo:hi].astype(np.float64), kind="mergesort")[:n]
        order.sort()
        for j in range(n):
            out_docs[at + j] = docs[lo + order[j]]
            out_impacts[at + j] = impacts[lo + order[j]]
    return out_offsets, out_docs, out_impacts


@nb.njit(cache=True, nogil=True)
def block_summaries(
    block_offsets, block_docs, block_term, fwd_offsets, fwd_terms, fwd_impacts, n_terms, mass
):
    """Per block, the per-term maximum impact over its documents, keeping its largest entries
    until they hold at least ``mass`` (0-1] of the summary's total, and always the entry of
    the term whose list holds the block (``block_term``), which every document in it has;
    ``(offsets, terms, values)``. Linear time per block: entries are ranked by a 256-bin
    histogram of values.
    """
    n_blocks = block_offsets.shape[0] - 1
    top = np.float64(0.0)
    for i in range(fwd_impacts.shape[0]):
        top = max(top, np.float64(fwd_impacts[i]))
    bin_width = top / 255.0 if top > 0 else 1.0
    best = np.zeros(n_terms, dtype=fwd_impacts.dtype)
    touched = np.empty(n_terms, dtype=np.int64)
    hist = np.zeros(256, dtype=np.float64)
    counts = np.zeros(n_blocks + 1, dtype=np.int64)
    cap = 1024
    terms = np.empty(cap, dtype=np.int32)
    values = np.empty(cap, dtype=fwd_impacts.dtype)
    size = 0
    for b in range(n_blocks):
        n_touched = 0
        for j in range(block_offsets[b], block_offsets[b + 1]):
            d = block_docs[j]
            for i in range(fwd_offsets[d], fwd_offsets[d + 1]):
                t = fwd_terms[i]
                v = fwd_impacts[i]
                if best[t] == 0 and v > 0:
                    touched[n_touched] = t
                    n_touched += 1
                if v > best[t]:
                    best[t] = v
        total = 0.0
        for j in range(n_touched):
            v = np.float64(best[touched[j]])
            hist[min(255, int(v / bin_width))] += v
            total += v
        cut = 255  # keep the bins from the top down until they hold ``mass`` of the total
        running = hist[255]
        while cut > 0 and running < mass * total:
            cut -= 1
            running += hist[cut]
        hist[:] = 0.0
        while size + n_touched > cap:
            cap *= 2
            terms = np.concatenate((terms, np.empty(cap - terms.shape[0], dtype=np.int32)))
            values = np.concatenate((values, np.empty(cap - values.shape[0], dtype=values.dtype)))
        for j in range(n_touched):
            t = touched[j]
            v = best[t]
            if t == block_term[b] or min(255, int(np.float64(v) / bin_width)) >= cut:
                terms[size] = t
                values[size] = v
                size += 1
            best[t] = 0
        counts[b + 1] = size
    return counts, terms[:size].copy(), values[:size].copy()


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
    stamp,
    out_docs,
    out_scores,
):
    """Top-``k`` of one query (terms ascending) over clustered blocks; returns the hit count.

    ``arrays``: the :class:`ClusterArrays` of the clustered index. ``n_probe_terms``: how many
    of the heaviest query terms have their blocks visited (all terms still count in the
    scores). ``q_dense`` (float32, vocabulary size, all zero) and ``seen`` (int64, one per
    document) are caller-owned scratch; ``stamp`` must differ from every value ``seen`` held
    before, so documents are scored once without clearing it. Documents ``allowed``
    excludes are never scored (see ``lsr.kernels.topk``), so the k-th score that bounds
    the blocks is an allowed document's.
    """
    (
        term_blocks, block_offsets, block_docs, sum_offsets, sum_terms, sum_values, fwd_offsets,
        fwd_terms, fwd_impacts,
    ) = arrays  # fmt: skip
    n_q = q_terms.shape[0]
    for j in range(n_q):
        q_dense[q_terms[j]] = q_weights[j]
    order = np.argsort(-q_weights, kind="mergesort")[: min(n_probe_terms, n_q)]
    size = 0
    for j in order:
        t = q_terms[j]
        b_lo, b_hi = term_blocks[t], term_blocks[t + 1]
        bounds = np.empty(b_hi - b_lo, dtype=np.float32)
        for b in range(b_lo, b_hi):
            s = np.float32(0.0)
            for i in range(sum_offsets[b], sum_offsets[b + 1]):
                s += q_dense[sum_terms[i]] * np.float32(sum_values[i])
            bounds[b - b_lo] = s
        for r in np.argsort(-bounds, kind="mergesort"):
            if size == k and bounds[r] < heap_factor * out_scores[0] * (1.0 - MARGIN):
                break  # blocks come best first: no later one reaches the bound either
            b = b_lo + r
            for jd in range(block_offsets[b], block_offsets[b + 1]):
                d = block_docs[jd]
                if seen[d] == stamp:
                    continue
                seen[d] = stamp
                if not allows(allowed, d):
                    continue
                s = np.float32(0.0)
                for i in range(fwd_offsets[d], fwd_offsets[d + 1]):
                    s += q_dense[fwd_terms[i]] * np.float32(fwd_impacts[i])
                if s > 0.0 and (size < k or s >= out_scores[0]):
                    size = heap_offer(out_scores, out_docs, size, k, s, np.int64(d))
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
    lo,
    hi,
    out_docs,
    out_scores,
    counts,
):
    """Queries ``lo:hi`` of a batch on one thread, with their own scratch."""
    q_dense = np.zeros(n_terms, dtype=np.float32)
    seen = np.full(n_docs, -1, dtype=np.int64)
    for q in range(lo, hi):
        a, b = q_indptr[q], q_indptr[q + 1]
        counts[q] = clustered_one(
            arrays, q_terms[a:b], q_weights[a:b], n_probe, heap_factor, scale, k, allowed,
            q_dense, seen, q, out_docs[q], out_scores[q],
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
            n_terms, n_docs, w * n_queries // n_workers, (w + 1) * n_queries // n_workers, out_docs,
            out_scores, counts,
        )  # fmt: skip
    return out_docs, out_scores, counts
