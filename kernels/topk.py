"""A bounded binary heap for top-k selection; ties broken by the lower doc number."""

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, inline="always")
def _worse(s1, d1, s2, d2):
    """True when hit (s1, d1) ranks below hit (s2, d2): lower score, or equal score, higher doc."""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@nb.njit(cache=True, nogil=True)
def _sift_down(heap_s, heap_d, size, i):
    while True:
        left = 2 * i + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _worse(heap_s[right], heap_d[right], heap_s[left], heap_d[left]):
            child = right
        if _worse(heap_s[child], heap_d[child], heap_s[i], heap_d[i]):
            heap_s[i], heap_s[child] = heap_s[child], heap_s[i]
            heap_d[i], heap_d[child] = heap_d[child], heap_d[i]
            i = child
        else:
            return


@nb.njit(cache=True, nogil=True)
def _sift_up(heap_s, heap_d, i):
    while i > 0:
        parent = (i - 1) // 2
        if _worse(heap_s[i], heap_d[i], heap_s[parent], heap_d[parent]):
            heap_s[i], heap_s[parent] = heap_s[parent], heap_s[i]
            heap_d[i], heap_d[parent] = heap_d[parent], heap_d[i]
            i = parent
        else:
            return


@nb.njit(cache=True, nogil=True)
def heap_offer(heap_s, heap_d, size, k, s, d):
    """Offer hit (s, d) to a heap of at most ``k`` hits (root = worst); returns the new size."""
    if size < k:
        heap_s[size] = s
        heap_d[size] = d
        _sift_up(heap_s, heap_d, size)
        return size + 1
    if _worse(heap_s[0], heap_d[0], s, d):
        heap_s[0] = s
        heap_d[0] = d
        _sift_down(heap_s, heap_d, size, 0)
    return size


@nb.njit(cache=True, nogil=True)
def heap_sort(heap_s, heap_d, size):
    """Turn the heap into rank order in place (best first)."""
    end = size
    while end > 1:
        end -= 1
        heap_s[0], heap_s[end] = heap_s[end], heap_s[0]
        heap_d[0], heap_d[end] = heap_d[end], heap_d[0]
        _sift_down(heap_s, heap_d, end, 0)


@nb.njit(cache=True, nogil=True)
def select_topk(acc, candidates, n_candidates, k, out_docs, out_scores):
    """Write the best ``k`` of ``candidates[:n_candidates]`` (scores in ``acc``) in rank order.

    ``out_docs``/``out_scores`` must hold at least ``k`` slots; returns how many were filled
    (fewer than ``k`` when fewer candidates exist). Order: score descending, doc ascending.
    """
    size = 0
    for j in range(n_candidates):
        d = candidates[j]
        s = acc[d]
        if size == k and s < out_scores[0]:
            continue  # the common case once the heap is full: cheaper than a heap call
        size = heap_offer(out_scores, out_docs, size, k, s, d)
    heap_sort(out_scores, out_docs, size)
    return size


def empty_topk(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Output buffers for ``select_topk``: doc numbers padded with -1, scores with 0."""
    return np.full(k, -1, dtype=np.int64), np.zeros(k, dtype=np.float32)
