"""Efficiency figures measured on an index and a query set (after a Numba warm-up)."""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from lsr.index import Index


def warm_up(index: Index, queries: sp.csr_array, k: int = 10) -> float:
    """Run the search kernels once (single and batched) so JIT compilation is not timed."""
    t = time.perf_counter()
    index.search(queries[:1], k)
    index.search(queries[:2], k)
    return time.perf_counter() - t


def latency(index: Index, queries: sp.csr_array, k: int = 10) -> dict:
    """Single-query latency percentiles and QPS, and batched QPS, for search alone."""
    times = np.empty(queries.shape[0])
    for i in range(queries.shape[0]):
        row = queries[[i]]
        t = time.perf_counter()
        index.search(row, k)
        times[i] = time.perf_counter() - t
    t = time.perf_counter()
    index.search(queries, k)
    batch = time.perf_counter() - t
    n = queries.shape[0]
    return {
        "latency_ms_p50": float(np.percentile(times, 50) * 1e3),
        "latency_ms_p99": float(np.percentile(times, 99) * 1e3),
        "qps_single": float(n / times.sum()) if times.sum() > 0 else 0.0,
        "qps_batch": float(n / batch) if batch > 0 else 0.0,
    }


def sparsity(index: Index, queries: sp.csr_array) -> dict:
    """Average non-zeros, FLOPS and postings scored per query.

    FLOPS is SPLADE's expected number of multiplications per query-document pair,
    sum_j p_q(j) p_d(j), with p the fraction of queries / documents that use term j.
    Postings per query is the work exhaustive scoring does: sum of df over query terms.
    """
    df = np.diff(index.offsets).astype(np.float64)
    n_docs = max(index.n_docs, 1)
    q = sp.csr_array(queries)
    q_presence = np.bincount(q.indices, minlength=index.vocab_size) / max(q.shape[0], 1)
    cumulative = np.concatenate([[0.0], np.cumsum(df[q.indices])])
    per_query_postings = cumulative[q.indptr[1:]] - cumulative[q.indptr[:-1]]
    return {
        "avg_nnz_query": float(np.diff(q.indptr).mean()) if q.shape[0] else 0.0,
        "avg_nnz_doc": float(index.doc_terms.mean()) if index.n_docs else 0.0,
        "flops": float((q_presence * df / n_docs).sum()),
        "postings_per_query": float(per_query_postings.mean()) if q.shape[0] else 0.0,
    }
