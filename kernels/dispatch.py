"""One entry point per query and per batch that picks and runs a search algorithm in Numba.

Choosing inside compiled code keeps the per-query Python overhead to a single call.
Algorithm codes: 0 auto, 1 MaxScore, 2 block-max WAND, 3 exhaustive term-at-a-time.
"""

import numba as nb
import numpy as np

from kernels.pruned import bmw_one, maxscore_one
from kernels.scoring import search_one

AUTO, MAXSCORE, BMW, EXHAUSTIVE = 0, 1, 2, 3


@nb.njit(cache=True, nogil=True)
def resolve(algorithm, theta):
    """The algorithm ``auto`` stands for (others are returned unchanged).

    Measured with ``lsr bench`` (SciFact with BM25 and splade-tiny, 1M synthetic SPLADE-like
    documents): exhaustive term-at-a-time beats our document-at-a-time MaxScore and BMW on
    every exact workload so far, so exact ``auto`` is exhaustive; with ``theta`` > 1 it is
    BMW, the faster of the two at equal recall.
    """
    if algorithm != AUTO:
        return algorithm
    return EXHAUSTIVE if theta == 1.0 else BMW


@nb.njit(cache=True, nogil=True)
def search_query(
    algorithm,
    offsets,
    docs,
    impacts,
    max_impact,
    block_offsets,
    block_max,
    block_last,
    block_size,
    q_terms,
    q_weights,
    scale,
    k,
    theta,
    acc,
    candidates,
    out_docs,
    out_scores,
):
    """Run one query with the given (or automatically chosen) algorithm; returns the hit count."""
    algo = resolve(algorithm, theta)
    if algo == EXHAUSTIVE:
        return search_one(
            offsets,
            docs,
            impacts,
            q_terms,
            q_weights,
            scale,
            k,
            acc,
            candidates,
            out_docs,
            out_scores,
        )
    if algo == MAXSCORE:
        return maxscore_one(
            offsets,
            docs,
            impacts,
            max_impact,
            q_terms,
            q_weights,
            scale,
            k,
            theta,
            out_docs,
            out_scores,
        )
    return bmw_one(
        offsets,
        docs,
        impacts,
        max_impact,
        block_offsets,
        block_max,
        block_last,
        block_size,
        q_terms,
        q_weights,
        scale,
        k,
        theta,
        out_docs,
        out_scores,
    )


@nb.njit(cache=True, nogil=True, parallel=True)
def search_many(
    algorithm,
    offsets,
    docs,
    impacts,
    max_impact,
    block_offsets,
    block_max,
    block_last,
    block_size,
    q_indptr,
    q_terms,
    q_weights,
    scale,
    k,
    theta,
    n_docs,
    n_workers,
):
    """Every row of a query CSR, in ``n_workers`` parallel slices; ``(docs, scores, counts)``.

    Each slice allocates its accumulator only if one of its queries runs exhaustively, so
    pruned batches over large collections allocate nothing collection-sized.
    """
    n_queries = q_indptr.shape[0] - 1
    out_docs = np.full((n_queries, k), -1, dtype=np.int64)
    out_scores = np.zeros((n_queries, k), dtype=np.float32)
    counts = np.zeros(n_queries, dtype=np.int64)
    n_workers = max(1, min(n_workers, n_queries))
    for w in nb.prange(n_workers):
        lo = w * n_queries // n_workers
        hi = (w + 1) * n_queries // n_workers
        acc = np.zeros(0, dtype=np.float32)
        candidates = np.zeros(0, dtype=np.int64)
        for q in range(lo, hi):
            a, b = q_indptr[q], q_indptr[q + 1]
            algo = resolve(algorithm, theta)
            if algo == EXHAUSTIVE and acc.shape[0] != n_docs:
                acc = np.zeros(n_docs, dtype=np.float32)
                candidates = np.empty(n_docs, dtype=np.int64)
            counts[q] = search_query(
                algo,
                offsets,
                docs,
                impacts,
                max_impact,
                block_offsets,
                block_max,
                block_last,
                block_size,
                q_terms[a:b],
                q_weights[a:b],
                scale,
                k,
                theta,
                acc,
                candidates,
                out_docs[q],
                out_scores[q],
            )
    return out_docs, out_scores, counts
