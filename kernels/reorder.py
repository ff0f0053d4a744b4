"""Document reordering by recursive graph bisection (Dhulipala et al., KDD 2016).

Documents that share terms should get nearby numbers: postings lists then hold runs of close
numbers (small gaps, tight block maxima), which is what block-max pruning and compression
feed on. The corpus is split in two halves, documents are swapped between them while a swap
lowers the estimated cost of storing the gaps of every postings list (a term in ``d`` of the
``n`` documents of a half costs about ``d * log2(n / (d + 1))`` bits), and each half is
split again, down to ranges of ``leaf`` documents. The ranges of one level are independent
and run in parallel.
"""

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, inline="always")
def _cost(a, b, log_left, log_right, log2):
    return a * (log_left - log2[a + 1]) + b * (log_right - log2[b + 1])


@nb.njit(cache=True, nogil=True)
def _bisect(order, lo, hi, indptr, terms, iterations, log2, deg_left, deg_right, touched, gains):
    """Swap documents between ``order[lo:mid]`` and ``order[mid:hi]`` until no swap gains."""
    mid = (lo + hi) // 2
    log_left = log2[mid - lo]
    log_right = log2[hi - mid]
    swaps_total = 0
    for _ in range(iterations):
        n_touched = 0
        for p in range(lo, hi):
            d = order[p]
            for j in range(indptr[d], indptr[d + 1]):
                t = terms[j]
                if deg_left[t] == 0 and deg_right[t] == 0:
                    touched[n_touched] = t
                    n_touched += 1
                if p < mid:
                    deg_left[t] += 1
                else:
                    deg_right[t] += 1
        for p in range(lo, hi):
            d = order[p]
            g = 0.0
            for j in range(indptr[d], indptr[d + 1]):
                t = terms[j]
                a = deg_left[t]
                b = deg_right[t]
                now = _cost(a, b, log_left, log_right, log2)
                if p < mid:
                    g += now - _cost(a - 1, b + 1, log_left, log_right, log2)
                else:
                    g += now - _cost(a + 1, b - 1, log_left, log_right, log2)
            gains[p] = g
        for i in range(n_touched):
            deg_left[touched[i]] = 0
            deg_right[touched[i]] = 0
        left = np.argsort(-gains[lo:mid])
        right = np.argsort(-gains[mid:hi])
        swaps = 0
        for i in range(min(left.shape[0], right.shape[0])):
            x = lo + left[i]
            y = mid + right[i]
            if gains[x] + gains[y] <= 0.0:
                break
            order[x], order[y] = order[y], order[x]
            swaps += 1
        swaps_total += swaps
        if swaps == 0:
            break
    return swaps_total


@nb.njit(cache=True, nogil=True, parallel=True)
def bisection_order(indptr, terms, n_terms, iterations, leaf, n_blocks):
    """The new order of the documents of a forward index (``indptr``/``terms``: each
    document's term ids): ``order[new] = old``. Ranges of one level go to ``n_blocks``
    parallel blocks, each with its own scratch. Returns the order and the swaps made."""
    n = indptr.shape[0] - 1
    order = np.arange(n).astype(np.int64)
    gains = np.zeros(n, dtype=np.float64)
    log2 = np.zeros(n + 2, dtype=np.float64)
    for x in range(1, n + 2):
        log2[x] = np.log2(x)
    swaps = np.zeros(n_blocks, dtype=np.int64)
    size = n
    ranges = 1
    while size > leaf:
        for b in nb.prange(n_blocks):
            deg_left = np.zeros(n_terms, dtype=np.int32)
            deg_right = np.zeros(n_terms, dtype=np.int32)
            touched = np.empty(n_terms, dtype=np.int32)
            for r in range(b, ranges, n_blocks):
                lo = r * n // ranges
                hi = (r + 1) * n // ranges
                if hi - lo >= 2:
                    swaps[b] += _bisect(order, lo, hi, indptr, terms, iterations, log2,
                                        deg_left, deg_right, touched, gains)  # fmt: skip
        ranges *= 2
        size = (n + ranges - 1) // ranges
    return order, swaps.sum()


@nb.njit(cache=True, nogil=True)
def log_gap_bits(offsets, docs):
    """``log2`` of every gap between consecutive doc numbers of each postings list (the
    first counted from -1), summed: about the bits a gap code needs, what reordering lowers."""
    total = 0.0
    for t in range(offsets.shape[0] - 1):
        previous = -1
        for i in range(offsets[t], offsets[t + 1]):
            d = np.int64(docs[i])
            total += np.log2(d - previous)
            previous = d
    return total
