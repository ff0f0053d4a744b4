"""Exact document-at-a-time top-k with dynamic pruning: MaxScore and block-max WAND.

Both return exactly the exhaustive top-k: a document's score is always summed in query-term
order, as the term-at-a-time kernel does, so scores are bit-identical, and ties rank the lower
doc number first. Pruning decisions compare upper bounds (with a relative safety margin for
float rounding) against the current k-th score; a document enters only with a strictly
higher score, which in doc order is the same tie rule. ``theta`` > 1 multiplies the
threshold for an approximate search that trades recall for speed ("aggressive" pruning).
Documents the ``allowed`` mask excludes are skipped before they are scored, so the threshold
comes from allowed documents only and the top-k stays exact over them.
"""

import numba as nb
import numpy as np

from lsr.kernels.layout import doc_at, impact_at
from lsr.kernels.topk import allows, heap_offer, heap_sort

NO_DOC = np.int64(1) << 40
MARGIN = 1e-4
WINDOW = 4096


@nb.njit(cache=True, nogil=True, inline="always")
def seek(docs, impacts, lo, hi, target):
    """First position in ``lo:hi`` (docs sorted) whose doc is >= target (``hi`` if none)."""
    if lo >= hi or doc_at(docs, impacts, lo) >= target:
        return lo
    step = 1
    prev = lo
    while lo + step < hi and doc_at(docs, impacts, lo + step) < target:
        prev = lo + step
        step *= 2
    left, right = prev + 1, min(lo + step, hi)
    while left < right:
        mid = (left + right) // 2
        if doc_at(docs, impacts, mid) < target:
            left = mid + 1
        else:
            right = mid
    return left


@nb.njit(cache=True, nogil=True)
def live_terms(offsets, max_impact, q_terms, q_weights):
    """Query terms that have postings: their list bounds, weights and score upper bounds."""
    n = q_terms.shape[0]
    starts = np.empty(n, dtype=np.int64)
    ends = np.empty(n, dtype=np.int64)
    weights = np.empty(n, dtype=np.float32)
    ubs = np.empty(n, dtype=np.float64)
    terms = np.empty(n, dtype=np.int64)
    m = 0
    for j in range(n):
        t = q_terms[j]
        if offsets[t + 1] > offsets[t] and q_weights[j] > 0:
            starts[m] = offsets[t]
            ends[m] = offsets[t + 1]
            weights[m] = q_weights[j]
            ubs[m] = np.float64(q_weights[j]) * np.float64(max_impact[t])
            terms[m] = t
            m += 1
    return m, starts[:m], ends[:m], weights[:m], ubs[:m], terms[:m]


@nb.njit(cache=True, nogil=True)
def bound_order(ubs):
    """Terms by rising upper bound, and the running sums of those bounds (MaxScore's split:
    the terms before the first sum reaching the threshold are non-essential)."""
    order = np.argsort(ubs)
    prefix = np.empty(ubs.shape[0], dtype=np.float64)
    total = 0.0
    for i in range(ubs.shape[0]):
        total += ubs[order[i]]
        prefix[i] = total
    return order, prefix


@nb.njit(cache=True, nogil=True, inline="always")
def _canonical_score(contrib, m):
    s = np.float32(0.0)
    for j in range(m):
        s += contrib[j]
        contrib[j] = np.float32(0.0)
    return s


@nb.njit(cache=True, nogil=True)
def maxscore_one(
    offsets, docs, impacts, max_impact, q_terms, q_weights, scale, k, theta, allowed, out_docs,
    out_scores,
):  # fmt: skip
    """MaxScore over windows of documents; returns the hit count.

    Terms are sorted by score upper bound; once the k-th score exceeds the summed bounds of
    the lightest terms, those become "non-essential": a document matching only them cannot
    enter the top k. For each window of ``WINDOW`` documents the essential postings are
    accumulated term at a time into a small buffer; each document found there (in doc order)
    is then refined with the non-essential terms, heaviest first, and dropped as soon as its
    bound falls to the threshold. Survivors are scored exactly, in query-term order.
    """
    m, starts, ends, w, ubs, _ = live_terms(offsets, max_impact, q_terms, q_weights)
    if m == 0:
        return 0
    order, prefix = bound_order(ubs)
    pos = starts.copy()
    probe = starts.copy()
    last_doc = 0
    for j in range(m):
        if np.int64(doc_at(docs, impacts, ends[j] - 1)) > last_doc:
            last_doc = np.int64(doc_at(docs, impacts, ends[j] - 1))
    window = np.zeros(WINDOW, dtype=np.float32)
    size = 0
    threshold = -1.0
    first = 0
    lo = 0
    while lo <= last_doc and first < m:
        hi = lo + WINDOW
        touched = 0
        for i in range(first, m):
            j = order[i]
            p = pos[j]
            wj = w[j]
            while p < ends[j] and doc_at(docs, impacts, p) < hi:
                window[doc_at(docs, impacts, p) - lo] += wj * impact_at(docs, impacts, p)
                p += 1
            touched += p - pos[j]
            pos[j] = p
        if touched == 0:
            lo = hi
            continue
        # the window was accumulated with terms order[first:] essential: refine with the others
        frozen = first
        rest = prefix[frozen - 1] if frozen > 0 else 0.0
        for x in range(WINDOW):
            partial = window[x]
            if partial == 0.0:
                continue
            window[x] = 0.0
            d = lo + x
            if not allows(allowed, d):
                continue
            bound = np.float64(partial) + rest
            if size == k and bound * (1.0 + MARGIN) <= threshold * theta:
                continue
            pruned = False
            for i in range(frozen - 1, -1, -1):
                j = order[i]
                bound -= ubs[j]
                p = seek(docs, impacts, probe[j], ends[j], d)
                probe[j] = p
                if p < ends[j] and doc_at(docs, impacts, p) == d:
                    bound += np.float64(w[j] * impact_at(docs, impacts, p))
                if size == k and bound * (1.0 + MARGIN) <= threshold * theta:
                    pruned = True
                    break
            if pruned:
                continue
            s = np.float32(0.0)
            for j in range(m):
                p = seek(docs, impacts, probe[j], ends[j], d)
                probe[j] = p
                if p < ends[j] and doc_at(docs, impacts, p) == d:
                    s += w[j] * impact_at(docs, impacts, p)
            if s > 0.0:
                size = heap_offer(out_scores, out_docs, size, k, s, d)
                if size == k:
                    threshold = np.float64(out_scores[0])
                    while first < m and prefix[first] * (1.0 + MARGIN) <= threshold * theta:
                        first += 1
        lo = hi
    heap_sort(out_scores, out_docs, size)
    for i in range(size):
        out_scores[i] *= scale
    return size


@nb.njit(cache=True, nogil=True)
def bmw_one(
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
    allowed,
    out_docs,
    out_scores,
):
    """Block-max WAND: a WAND pivot from whole-list bounds, then a finer check against the
    maxima of the blocks holding the pivot document, skipping whole blocks that cannot
    qualify. Returns the hit count."""
    m, starts, ends, w, ubs, terms = live_terms(offsets, max_impact, q_terms, q_weights)
    if m == 0:
        return 0
    pos = starts.copy()
    cur = np.empty(m, dtype=np.int64)
    for j in range(m):
        cur[j] = np.int64(doc_at(docs, impacts, pos[j]))
    bfirst = np.empty(m, dtype=np.int64)
    bend = np.empty(m, dtype=np.int64)
    for j in range(m):
        bfirst[j] = block_offsets[terms[j]]
        bend[j] = block_offsets[terms[j] + 1]
    blk = np.empty(m, dtype=np.int64)
    order = np.arange(m)
    contrib = np.zeros(m, dtype=np.float32)
    size = 0
    threshold = -1.0
    while True:
        for i in range(1, m):  # insertion sort by current doc: lists stay nearly sorted
            j = order[i]
            c = cur[j]
            h = i - 1
            while h >= 0 and cur[order[h]] > c:
                order[h + 1] = order[h]
                h -= 1
            order[h + 1] = j
        acc = 0.0
        p = -1
        for i in range(m):
            j = order[i]
            if cur[j] == NO_DOC:
                break
            acc += ubs[j]
            if size < k or acc * (1.0 + MARGIN) > threshold * theta:
                p = i
                break
        if p == -1:
            break
        pd = cur[order[p]]
        while p + 1 < m and cur[order[p + 1]] == pd:
            p += 1
        bound = 0.0
        for i in range(p + 1):
            j = order[i]
            b = bfirst[j] + (pos[j] - starts[j]) // block_size
            while b < bend[j] and block_last[b] < pd:
                b += 1
            blk[j] = b
            if b < bend[j]:
                bound += np.float64(w[j]) * np.float64(block_max[b])
        if size == k and bound * (1.0 + MARGIN) <= threshold * theta:
            nd = NO_DOC
            for i in range(p + 1):
                j = order[i]
                if blk[j] < bend[j] and np.int64(block_last[blk[j]]) + 1 < nd:
                    nd = np.int64(block_last[blk[j]]) + 1
            if p + 1 < m and cur[order[p + 1]] < nd:
                nd = cur[order[p + 1]]
            if nd <= pd:
                nd = pd + 1
            for i in range(p + 1):
                j = order[i]
                if cur[j] < nd:
                    pos[j] = seek(docs, impacts, pos[j], ends[j], nd)
                    cur[j] = np.int64(doc_at(docs, impacts, pos[j])) if pos[j] < ends[j] else NO_DOC
        elif cur[order[0]] == pd:
            for i in range(p + 1):
                j = order[i]
                contrib[j] = w[j] * impact_at(docs, impacts, pos[j])
                pos[j] += 1
                cur[j] = np.int64(doc_at(docs, impacts, pos[j])) if pos[j] < ends[j] else NO_DOC
            s = _canonical_score(contrib, m)
            if s > 0.0 and allows(allowed, pd):
                size = heap_offer(out_scores, out_docs, size, k, s, pd)
                if size == k:
                    threshold = np.float64(out_scores[0])
        else:
            for i in range(p):
                j = order[i]
                if cur[j] < pd:
                    pos[j] = seek(docs, impacts, pos[j], ends[j], pd)
                    cur[j] = np.int64(doc_at(docs, impacts, pos[j])) if pos[j] < ends[j] else NO_DOC
    heap_sort(out_scores, out_docs, size)
    for i in range(size):
        out_scores[i] *= scale
    return size
