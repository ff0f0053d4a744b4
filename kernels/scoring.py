"""Exhaustive term-at-a-time scoring over term-major postings, single query and batched."""

import numba as nb
import numpy as np

from lsr.kernels.dense import add_row
from lsr.kernels.layout import doc_at, impact_at
from lsr.kernels.topk import SCAN_BLOCK, allows, dense_topk, mask_accumulator, select_topk

# The dense path (vectorized rows and top-k scan) beats tracking touched documents once a
# query reads more than n_docs / 16 postings (measured: docs/performance.md).
DENSE_FRACTION = 16


@nb.njit(cache=True, nogil=True)
def scratch(n_docs):
    """Per-thread scratch of the term-at-a-time kernels: a zeroed float32 accumulator and an
    int64 candidate list with room for one block maximum per ``SCAN_BLOCK`` documents."""
    acc = np.zeros(n_docs, dtype=np.float32)
    return acc, np.empty(n_docs + n_docs // SCAN_BLOCK + 1, dtype=np.int64)


@nb.njit(cache=True, nogil=True)
def search_one(
    offsets, docs, impacts, dense_rows, dense_table, q_terms, q_weights, scale, k, allowed, acc,
    candidates, out_docs, out_scores,
):  # fmt: skip
    """Score one query term at a time and keep its top ``k``; returns the number of hits.

    ``acc`` (float32, one slot per document, all zero on entry and exit) and ``candidates``
    (int64: the candidate list, then room for block maxima) are caller-owned scratch
    from ``scratch``, reused across queries. A query that reads many postings scans the
    accumulator densely (branch-light, bounded by block maxima) and adds the terms that have
    a row in ``dense_table`` (see ``lsr.kernels.dense``; ``dense_rows[t]`` is -1 for the others)
    row-wise; one that reads few goes to ``search_sparse``. Query weights must be positive.
    Only documents that ``allowed`` allows are returned (see ``lsr.kernels.topk``).
    """
    n_docs = acc.shape[0]
    total = 0
    for j in range(q_terms.shape[0]):
        total += offsets[q_terms[j] + 1] - offsets[q_terms[j]]
    if total * DENSE_FRACTION < n_docs:
        return search_sparse(
            offsets, docs, impacts, q_terms, q_weights, scale, k, allowed, acc, candidates,
            out_docs, out_scores,
        )  # fmt: skip
    for j in range(q_terms.shape[0]):
        w = q_weights[j]
        t = q_terms[j]
        if dense_rows[t] >= 0:
            add_row(acc, dense_table[dense_rows[t]], w)
            continue
        # unsigned indices spare Numba's negative-index check (5% of a SciFact BM25 query)
        for i in range(np.uint64(offsets[t]), np.uint64(offsets[t + 1])):
            acc[doc_at(docs, impacts, i)] += w * impact_at(docs, impacts, i)
    mask_accumulator(acc, allowed)
    size = dense_topk(acc, k, candidates, out_docs, out_scores)
    for j in range(size):
        out_scores[j] *= scale
    return size


@nb.njit(cache=True, nogil=True)
def search_sparse(
    offsets, docs, impacts, q_terms, q_weights, scale, k, allowed, acc, candidates, out_docs,
    out_scores,
):  # fmt: skip
    """``search_one`` for a query that reads few postings: it tracks the documents it touches
    and costs O(postings). Keeps exactly the allowed documents with a positive score."""
    n_candidates = 0
    for j in range(q_terms.shape[0]):
        w = q_weights[j]
        t = q_terms[j]
        for i in range(offsets[t], offsets[t + 1]):
            c = w * impact_at(docs, impacts, i)
            if c > 0.0:  # an underflowed contribution must not make a doc a candidate twice
                d = doc_at(docs, impacts, i)
                if acc[d] == 0.0:
                    candidates[n_candidates] = d
                    n_candidates += 1
                acc[d] += c
    size = sparse_topk(acc, candidates, n_candidates, k, allowed, out_docs, out_scores)
    for j in range(size):
        out_scores[j] *= scale
    return size


@nb.njit(cache=True, nogil=True)
def sparse_topk(acc, candidates, n_candidates, k, allowed, out_docs, out_scores):
    """The best ``k`` allowed documents of ``candidates[:n_candidates]`` (scores in ``acc``)
    in rank order; clears their slots of ``acc``. Returns the count."""
    if allowed.shape[0] > 0:  # drop excluded candidates (their slots are cleared here)
        kept = 0
        for j in range(n_candidates):
            d = candidates[j]
            if allows(allowed, d):
                candidates[kept] = d
                kept += 1
            else:
                acc[d] = 0.0
        n_candidates = kept
    size = select_topk(acc, candidates, n_candidates, k, out_docs, out_scores)
    for j in range(n_candidates):
        acc[candidates[j]] = 0.0
    return size
