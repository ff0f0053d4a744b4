"""A bounded binary heap for top-k selection; ties broken by the lower doc number.

Also the one convention for which documents a search may return: ``allowed`` is a uint8
array over the doc numbers (non-zero: may be returned), or an empty array for "all". Deleted
documents and filters become one such mask, applied by every kernel while it scores, so a
search returns k hits in one pass however many documents are excluded.
"""

import numba as nb
import numpy as np

ALL_DOCS = np.zeros(0, dtype=np.uint8)  # the ``allowed`` mask that excludes nothing


@nb.njit(cache=True, nogil=True, inline="always")
def allows(allowed, d):
    """Whether document ``d`` may be returned under the mask ``allowed`` (empty: all may)."""
    return allowed.shape[0] == 0 or allowed[d] != 0


@nb.njit(cache=True, nogil=True)
def mask_accumulator(acc, allowed):
    """Zero the scores of the documents ``allowed`` excludes (none when it is empty), so a
    dense accumulator holds only documents that may be returned; branch-free, vectorized."""
    if allowed.shape[0] == 0:
        return
    for d in range(acc.shape[0]):
        acc[d] = acc[d] if allowed[d] != 0 else np.float32(0.0)


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


SCAN_BLOCK = 64  # documents per block when bounding the k-th score of a dense accumulator
SMALLEST_POSITIVE = np.float32(1e-45)  # the smallest positive float32 (a denormal)


@nb.njit(cache=True, nogil=True)
def block_maxima(acc, out):
    """``out[b]`` = the largest score in documents ``b*SCAN_BLOCK`` onwards; returns the count.

    Scores must be >= 0 (and ``acc``, ``out`` contiguous): the maxima are taken on the float
    bit patterns as int32, which order like the scores and, unlike float max, LLVM vectorizes
    (``docs/performance.md``). The inner bound stays a run-time value so the
    block is not unrolled, which would stop the vectorizer.
    """
    bits = acc.view(np.int32)
    out_bits = out.view(np.int32)
    n = bits.shape[0]
    b = 0
    for lo in range(0, n, SCAN_BLOCK):
        m = np.int32(0)
        for d in range(lo, min(n, lo + SCAN_BLOCK)):
            v = bits[d]
            m = v if v > m else m
        out_bits[b] = m
        b += 1
    return b


INSERTION_MAX_K = 32  # up to this k a sorted buffer beats the heap


@nb.njit(cache=True, nogil=True)
def largest_values(values, n, top):
    """Fill ``top`` with the largest values of ``values[:n]`` in descending order (0 where
    fewer than ``top.shape[0]`` are positive); returns the last, the k-th largest.

    A value that beats the last slot goes through a branch-free insertion network (one min
    and one max per slot), faster than a branching insertion (``docs/performance.md``).
    """
    k = top.shape[0]
    top[:] = 0
    for b in range(n):
        v = values[b]
        if v <= top[k - 1]:
            continue
        for i in range(k - 1, 0, -1):
            above = top[i - 1]
            moved = v if v < above else above
            top[i] = moved if moved > top[i] else top[i]
        top[0] = v if v > top[0] else top[0]
    return top[k - 1]


@nb.njit(cache=True, nogil=True)
def kth_largest(values, n, k, heap, heap_ids):
    """The ``k``-th largest positive value of ``values[:n]``, kept in a descending buffer for
    small ``k`` and in a top-k heap otherwise (``heap``, ``heap_ids``: ``k`` slots of scratch
    each). Returns the smallest positive float when fewer than ``k`` values are positive.
    """
    if k <= INSERTION_MAX_K:
        kth = largest_values(values, n, heap[:k])
        return kth if kth > 0 else SMALLEST_POSITIVE
    size = 0
    for b in range(n):
        m = values[b]
        if m > 0.0 and (size < k or m > heap[0]):
            size = heap_offer(heap, heap_ids, size, k, m, b)
    return heap[0] if size == k else SMALLEST_POSITIVE


@nb.njit(cache=True, nogil=True)
def _scan_into_buffer(bits, maxima, n_blocks, bound, k, out_docs, top):
    """The best ``k`` documents scoring at least ``bound`` (int32 score bits), in rank order,
    by one pass over the blocks whose maximum reaches it into a sorted buffer (``top``,
    ``out_docs``); documents come in ascending order, so an equal score never moves ahead,
    and the bound rises to just above the k-th score once the buffer is full. Unsigned
    indices spare Numba's negative-index check (5% of a SciFact BM25 query)."""
    n = bits.shape[0]
    size = 0
    for b in range(n_blocks):
        if maxima[b] < bound:
            continue
        for d in range(np.uint64(b * SCAN_BLOCK), np.uint64(min(n, (b + 1) * SCAN_BLOCK))):
            v = bits[d]
            if v < bound:
                continue
            if size < k:
                i = size
                size += 1
            else:
                i = k - 1
            while i > 0 and top[i - 1] < v:
                top[i] = top[i - 1]
                out_docs[i] = out_docs[i - 1]
                i -= 1
            top[i] = v
            out_docs[i] = d
            if size == k:
                bound = top[k - 1] + 1
    return size


@nb.njit(cache=True, nogil=True)
def dense_topk(acc, k, candidates, out_docs, out_scores):
    """The best ``k`` documents of a dense accumulator (scores >= 0), in rank order; zeroes
    ``acc``. ``out_scores`` must be contiguous.

    The ``k``-th largest block maximum bounds the ``k``-th score from below (``k`` blocks each
    hold a document at least that good), so only blocks reaching the bound are scanned; ties
    on the bound are kept, so the doc-number tie break stays exact. Small ``k`` works on the
    scores' int32 bit patterns throughout; larger ``k`` lists the documents reaching the
    bound without a branch for ``select_topk``. ``candidates`` is the scratch of
    ``lsr.kernels.scoring.scratch`` (documents first, then one slot per ``SCAN_BLOCK`` documents
    for the block maxima). Returns the count.
    """
    n = acc.shape[0]
    maxima = candidates[n:].view(np.float32)
    n_blocks = block_maxima(acc, maxima)
    if k <= INSERTION_MAX_K:
        top, maxima_bits = out_scores.view(np.int32)[:k], maxima.view(np.int32)
        bound = max(largest_values(maxima_bits, n_blocks, top), np.int32(1))
        size = _scan_into_buffer(acc.view(np.int32), maxima_bits, n_blocks, bound, k, out_docs, top)
        acc[:] = 0.0
        return size
    bound = kth_largest(maxima, n_blocks, k, out_scores, out_docs)
    count = 0
    for b in range(n_blocks):
        if maxima[b] < bound:
            continue
        for d in range(b * SCAN_BLOCK, min(n, (b + 1) * SCAN_BLOCK)):
            candidates[count] = d
            count += acc[d] >= bound
    size = select_topk(acc, candidates, count, k, out_docs, out_scores)
    acc[:] = 0.0
    return size


@nb.njit(cache=True, nogil=True)
def batch_outputs(n_queries, k):
    """Result arrays of a batch: doc numbers padded with -1, scores with 0, hit counts."""
    docs = np.full((n_queries, k), -1, dtype=np.int64)
    return docs, np.zeros((n_queries, k), dtype=np.float32), np.zeros(n_queries, dtype=np.int64)
