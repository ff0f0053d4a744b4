"""Point lookups in term-major postings: where a document stands in given terms' lists.

For ``GET /documents/{id}`` and for explaining hits: a binary search per (document, term) in
compiled code instead of Python, so explaining k hits over q query terms costs k x q
searches, and reading back one document's vector one search per non-empty term.
"""

import numpy as np
from numba import njit

from lsr.kernels.layout import doc_at


@njit(cache=True, nogil=True)
def _position(offsets, docs, impacts, term, doc):
    """Index of ``doc``'s posting in ``term``'s list (doc numbers ascending), or -1.

    A plain binary search, not ``lsr.kernels.pruned.seek``: that one gallops forward from a
    cursor, which suits the pruned kernels' forward scans but not random point lookups
    (measured: ``docs/performance.md``)."""
    lo, hi = offsets[term], offsets[term + 1]
    while lo < hi:
        mid = (lo + hi) >> 1
        if doc_at(docs, impacts, mid) < doc:
            lo = mid + 1
        else:
            hi = mid
    if lo < offsets[term + 1] and doc_at(docs, impacts, lo) == doc:
        return lo
    return -1


@njit(cache=True, nogil=True)
def posting_positions(offsets, docs, impacts, doc_numbers, terms):
    """(len(doc_numbers), len(terms)) positions of each document in each term's postings,
    -1 where the document does not contain the term."""
    out = np.full((doc_numbers.shape[0], terms.shape[0]), -1, dtype=np.int64)
    for i in range(doc_numbers.shape[0]):
        for j in range(terms.shape[0]):
            out[i, j] = _position(offsets, docs, impacts, terms[j], doc_numbers[i])
    return out


@njit(cache=True, nogil=True)
def document_postings(offsets, docs, impacts, doc):
    """Term ids (ascending) of document ``doc`` and the positions of its postings."""
    n_terms = offsets.shape[0] - 1
    terms = np.empty(n_terms, dtype=np.int64)
    positions = np.empty(n_terms, dtype=np.int64)
    n = 0
    for t in range(n_terms):
        if offsets[t + 1] > offsets[t]:
            p = _position(offsets, docs, impacts, t, doc)
            if p >= 0:
                terms[n] = t
                positions[n] = p
                n += 1
    return terms[:n], positions[:n]
