"""Exact top-k over document-major rows (a write buffer), one document at a time.

A write buffer appends each new document's terms and weights to growable arrays, so adding a
document costs its own terms and nothing else; searching it scores every allowed row against
a dense copy of the query. Scores are summed in ascending term order, as the term-at-a-time
kernels sum a canonical (ascending) query, so a document scores bit-identically in the buffer
and, after a flush to float32 postings, in a segment; ties rank the earlier row first.
"""

import numba as nb
import numpy as np

from lsr.kernels.topk import batch_outputs, heap_offer, heap_sort


@nb.njit(cache=True, nogil=True)
def forward_topk(
    indptr, terms, weights, n_rows, allowed, q_indptr, q_terms, q_weights, k, n_terms
):  # fmt: skip
    """Top-``k`` rows of ``0:n_rows`` whose ``allowed`` entry is non-zero, for every query of
    a CSR batch; ``(rows, scores, counts)`` padded with -1 and 0 like the other kernels."""
    n_queries = q_indptr.shape[0] - 1
    out_rows, out_scores, counts = batch_outputs(n_queries, k)
    q_dense = np.zeros(n_terms, dtype=np.float32)
    for q in range(n_queries):
        a, b = q_indptr[q], q_indptr[q + 1]
        for j in range(a, b):
            q_dense[q_terms[j]] = q_weights[j]
        size = 0
        for r in range(n_rows):
            if allowed[r] == 0:
                continue
            s = np.float32(0.0)
            for p in range(indptr[r], indptr[r + 1]):
                w = q_dense[terms[p]]
                if w != 0.0:
                    s += w * weights[p]
            if s > 0.0 and (size < k or s > out_scores[q, 0]):
                size = heap_offer(out_scores[q], out_rows[q], size, k, s, np.int64(r))
        heap_sort(out_scores[q], out_rows[q], size)
        counts[q] = size
        for j in range(a, b):
            q_dense[q_terms[j]] = 0.0
    return out_rows, out_scores, counts
