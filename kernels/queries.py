"""Query-side approximation: keep each query's heaviest terms."""

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def top_terms(indptr, indices, data, m):
    """Each CSR row cut to its ``m`` largest weights (ties: lower position first), in the
    row's original term order; returns ``(indptr, indices, data)``."""
    n_rows = indptr.shape[0] - 1
    out_indptr = np.zeros(n_rows + 1, dtype=np.int64)
    for r in range(n_rows):
        out_indptr[r + 1] = out_indptr[r] + min(m, indptr[r + 1] - indptr[r])
    out_indices = np.empty(out_indptr[n_rows], dtype=indices.dtype)
    out_data = np.empty(out_indptr[n_rows], dtype=data.dtype)
    for r in range(n_rows):
        lo, hi, at = indptr[r], indptr[r + 1], out_indptr[r]
        if hi - lo <= m:
            keep = np.arange(hi - lo)
        else:
            keep = np.sort(np.argsort(-data[lo:hi], kind="mergesort")[:m])
        for j in range(keep.shape[0]):
            out_indices[at + j] = indices[lo + keep[j]]
            out_data[at + j] = data[lo + keep[j]]
    return out_indptr, out_indices, out_data


WEIGHTS_OK, WEIGHTS_NON_FINITE, WEIGHTS_NEGATIVE, WEIGHTS_ZERO = 0, 1, 2, 3


@nb.njit(cache=True, nogil=True)
def weights_status(data):
    """One pass over sparse weights: OK, or the first problem found (non-finite, negative, or
    an explicit zero); non-finite and negative take precedence over zeros."""
    zero = False
    for i in range(data.shape[0]):
        v = data[i]
        if not np.isfinite(v):
            return WEIGHTS_NON_FINITE
        if v < 0:
            return WEIGHTS_NEGATIVE
        if v == 0:
            zero = True
    return WEIGHTS_ZERO if zero else WEIGHTS_OK
