"""Dense impact rows for the most frequent terms of a collection of up to a few million documents.

A term found in at least one document in ``DENSE_ROW_FRACTION`` gets a row of ``n_docs``
stored impacts (0 where absent). Adding such a row to the accumulator is one contiguous,
vectorized pass instead of a scatter of its postings, which pays when such terms hold most
of the postings a query reads (the figures: ``docs/performance.md``). Each row add streams the
whole accumulator, which must stay in the L3 cache for this to pay, so rows are built only on
collections up to ``lsr.index.inverted.DENSE_ROWS_MAX_DOCS`` documents.
"""

import numba as nb
import numpy as np

from lsr.kernels.layout import doc_at, impact_at

DENSE_ROW_FRACTION = 8  # a row for each term found in at least 1/8 of the documents


@nb.njit(cache=True, nogil=True)
def dense_rows(offsets, docs, impacts, n_docs, like, max_rows):
    """Rows of stored impacts (dtype of ``like``) for at most ``max_rows`` terms, the most
    frequent first among those in at least ``n_docs / DENSE_ROW_FRACTION`` documents.

    Returns ``(rows, table)``: ``rows[t]`` is term ``t``'s row of ``table`` (shape
    ``(n_rows, n_docs)``), -1 for a term without one.
    """
    n_terms = offsets.shape[0] - 1
    df = offsets[1:] - offsets[:-1]
    rows = np.full(n_terms, -1, dtype=np.int32)
    n_rows = 0
    if n_docs > 0:
        for t in np.argsort(-df, kind="mergesort"):
            if n_rows >= max_rows or df[t] * DENSE_ROW_FRACTION < n_docs:
                break
            rows[t] = n_rows
            n_rows += 1
    table = np.zeros((n_rows, n_docs), dtype=like.dtype)
    for t in range(n_terms):
        r = rows[t]
        if r >= 0:
            for p in range(offsets[t], offsets[t + 1]):
                table[r, doc_at(docs, impacts, p)] = impact_at(docs, impacts, p)
    return rows, table


@nb.njit(cache=True, nogil=True, inline="always")
def add_row(acc, row, w):
    """``acc += w * row``, document by document (the same float operations as a scatter of
    the row's postings, so scores are bit-identical)."""
    for d in range(acc.shape[0]):
        acc[d] += w * np.float32(row[d])
