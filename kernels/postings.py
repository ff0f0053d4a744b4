"""Turn document-major CSR batches into term-major postings lists."""

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def csr_to_postings(indptr, indices, data, n_terms, doc_offset):
    """Transpose one CSR batch (docs x terms) into postings grouped by term.

    Returns ``(term_offsets, docs, weights)``: postings of term ``t`` are
    ``docs[term_offsets[t]:term_offsets[t + 1]]`` (global doc numbers, ascending, shifted by
    ``doc_offset``) with their weights. Explicit zeros are dropped. A counting sort: O(nnz + V).
    """
    n_docs = indptr.shape[0] - 1
    counts = np.zeros(n_terms + 1, dtype=np.int64)
    for i in range(indptr[-1]):
        if data[i] != 0.0:
            counts[indices[i] + 1] += 1
    for t in range(n_terms):
        counts[t + 1] += counts[t]
    term_offsets = counts.copy()
    total = counts[n_terms]
    docs = np.empty(total, dtype=np.uint32)
    weights = np.empty(total, dtype=np.float32)
    cursor = counts[:n_terms].copy()
    for d in range(n_docs):
        for i in range(indptr[d], indptr[d + 1]):
            w = data[i]
            if w != 0.0:
                t = indices[i]
                pos = cursor[t]
                docs[pos] = d + doc_offset
                weights[pos] = w
                cursor[t] = pos + 1
    return term_offsets, docs, weights


@nb.njit(cache=True, nogil=True)
def merge_runs(run_offsets, run_docs, run_weights, out_offsets, out_docs, out_weights):
    """Concatenate per-batch postings runs term by term into one term-major list.

    ``run_offsets`` is (n_runs, V + 1); runs hold increasing doc numbers, so appending each
    run's postings of a term in run order keeps every postings list sorted by doc number.
    ``run_docs``/``run_weights`` are the runs concatenated, run ``r`` starting at
    ``run_offsets[r, 0]`` shifted by the sizes of the runs before it (see ``lsr.index.builder``).
    """
    n_runs = run_offsets.shape[0]
    n_terms = run_offsets.shape[1] - 1
    bases = np.zeros(n_runs, dtype=np.int64)
    for r in range(1, n_runs):
        bases[r] = bases[r - 1] + run_offsets[r - 1, n_terms]
    pos = 0
    out_offsets[0] = 0
    for t in range(n_terms):
        for r in range(n_runs):
            start = bases[r] + run_offsets[r, t]
            end = bases[r] + run_offsets[r, t + 1]
            for i in range(start, end):
                out_docs[pos] = run_docs[i]
                out_weights[pos] = run_weights[i]
                pos += 1
        out_offsets[t + 1] = pos
    return pos
