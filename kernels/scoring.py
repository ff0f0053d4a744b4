"""Exhaustive term-at-a-time scoring over term-major postings, single query and batched."""

import numba as nb
import numpy as np

from kernels.topk import select_topk


@nb.njit(cache=True, nogil=True)
def search_one(
    offsets, docs, impacts, q_terms, q_weights, scale, k, acc, candidates, out_docs, out_scores
):
    """Score one query term at a time and keep its top ``k``; returns the number of hits.

    ``acc`` (float32, one slot per document, all zero on entry) and ``candidates`` (int64, same
    length) are caller-owned scratch reused across queries: only the touched slots are reset
    on exit, so a query costs O(postings scored), not O(collection). Query weights must be
    positive; a document enters ``candidates`` the first time its score becomes non-zero.
    """
    n_candidates = 0
    for j in range(q_terms.shape[0]):
        w = q_weights[j]
        t = q_terms[j]
        for i in range(offsets[t], offsets[t + 1]):
            d = docs[i]
            if acc[d] == 0.0:
                candidates[n_candidates] = d
                n_candidates += 1
            acc[d] += w * np.float32(impacts[i])
    n = select_topk(acc, candidates, n_candidates, k, out_docs, out_scores)
    for j in range(n):
        out_scores[j] *= scale
    for j in range(n_candidates):
        acc[candidates[j]] = 0.0
    return n


@nb.njit(cache=True, nogil=True, parallel=True)
def search_batch(offsets, docs, impacts, q_indptr, q_terms, q_weights, scale, k, n_docs, n_workers):
    """Search every row of a query CSR in parallel; returns ``(docs, scores, counts)``.

    Queries are split into ``n_workers`` contiguous slices; each slice allocates one
    accumulator and reuses it for all its queries. Rows of ``docs`` are padded with -1.
    """
    n_queries = q_indptr.shape[0] - 1
    out_docs = np.full((n_queries, k), -1, dtype=np.int64)
    out_scores = np.zeros((n_queries, k), dtype=np.float32)
    counts = np.zeros(n_queries, dtype=np.int64)
    n_workers = max(1, min(n_workers, n_queries))
    for w in nb.prange(n_workers):
        lo = w * n_queries // n_workers
        hi = (w + 1) * n_queries // n_workers
        acc = np.zeros(n_docs, dtype=np.float32)
        candidates = np.empty(n_docs, dtype=np.int64)
        for q in range(lo, hi):
            a, b = q_indptr[q], q_indptr[q + 1]
            counts[q] = search_one(
                offsets,
                docs,
                impacts,
                q_terms[a:b],
                q_weights[a:b],
                scale,
                k,
                acc,
                candidates,
                out_docs[q],
                out_scores[q],
            )
    return out_docs, out_scores, counts
