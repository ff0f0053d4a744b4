"""Building a clustered index (in the style of Seismic): static pruning, blocks of similar
documents, and block summaries stored transposed and quantized.

- **Static pruning** keeps the postings at or above a global impact floor, at most a fixed
  number per list (:func:`prune_postings`).
- **Blocks**: each list samples one centroid document per ``cluster_size`` postings and puts
  every document with the centroid it has the largest sparse dot product with, computed over
  the document's ``doc_cut`` heaviest terms against an inverted index of the centroids (one
  pass, no iterations); clusters below ``min_cluster_size`` are dissolved into the others
  (:func:`cluster_lists`).
- **Summaries**: a block's summary is the per-term maximum impact over its documents, cut to
  its largest entries holding a fraction of the total mass, plus the list's own term. A list
  stores its blocks' summaries transposed (term -> blocks holding it, ascending terms) with
  uint8 values times a per-block scale, rounded up so a full summary stays an upper bound
  (:func:`summarize_lists`). A query then computes every block's summary score of a list by
  a merge join of its sorted terms with the list's summary terms, touching only the entries
  of terms it has.

The functions work on a contiguous range of lists, ``nogil``, so a thread pool builds the
ranges in parallel; results depend only on the settings and the seed, never on the threads.
"""

import numba as nb
import numpy as np

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)
Q_LEVELS = 255  # summary values are uint8 multiples of a per-block scale


@nb.njit(cache=True, nogil=True)
def prune_postings(offsets, docs, impacts, keep, floor):
    """Each list's postings with impact >= ``floor``, at most ``keep`` of them (its highest;
    ties: lower doc first; ``keep`` <= 0: no cap), in doc order; ``(offsets, docs, impacts)``.
    """
    n_terms = offsets.shape[0] - 1
    out_offsets = np.zeros(n_terms + 1, dtype=np.int64)
    for t in range(n_terms):
        n = 0
        for i in range(offsets[t], offsets[t + 1]):
            if impacts[i] >= floor:
                n += 1
        out_offsets[t + 1] = out_offsets[t] + (min(n, keep) if keep > 0 else n)
    out_docs = np.empty(out_offsets[n_terms], dtype=docs.dtype)
    out_impacts = np.empty(out_offsets[n_terms], dtype=impacts.dtype)
    for t in range(n_terms):
        lo, hi, at = offsets[t], offsets[t + 1], out_offsets[t]
        n = out_offsets[t + 1] - at
        if n == hi - lo:
            out_docs[at : at + n] = docs[lo:hi]
            out_impacts[at : at + n] = impacts[lo:hi]
            continue
        # the list's candidates (>= floor), best first (ties: lower doc), the first n kept
        keys = np.empty(hi - lo, dtype=np.float64)
        for i in range(lo, hi):
            keys[i - lo] = -np.float64(impacts[i]) if impacts[i] >= floor else np.inf
        order = np.argsort(keys, kind="mergesort")[:n]
        order.sort()
        for j in range(n):
            out_docs[at + j] = docs[lo + order[j]]
            out_impacts[at + j] = impacts[lo + order[j]]
    return out_offsets, out_docs, out_impacts


def impact_floor(impacts: np.ndarray, total: int):
    """The ``total``-th largest impact (the floor that keeps at least ``total`` postings);
    the smallest impact when there are no more postings than that."""
    n = impacts.shape[0]
    if n == 0 or total >= n:
        return impacts.min() if n else impacts.dtype.type(0)
    return np.partition(impacts, n - total)[n - total]


@nb.njit(cache=True, nogil=True)
def heaviest_terms(fwd_offsets, fwd_terms, fwd_weights, cut):
    """Each document's ``cut`` heaviest terms (ties: lower term first) and their weights, as
    ``(n_docs, cut)`` arrays padded with -1 and 0: what documents are clustered on."""
    n_docs = fwd_offsets.shape[0] - 1
    terms = np.full((n_docs, cut), -1, dtype=np.int32)
    weights = np.zeros((n_docs, cut), dtype=np.float32)
    for d in range(n_docs):
        lo, hi = fwd_offsets[d], fwd_offsets[d + 1]
        if hi - lo <= cut:
            for j in range(hi - lo):
                terms[d, j] = fwd_terms[lo + j]
                weights[d, j] = fwd_weights[lo + j]
            continue
        order = np.argsort(-fwd_weights[lo:hi], kind="mergesort")[:cut]
        for j in range(cut):
            terms[d, j] = fwd_terms[lo + order[j]]
            weights[d, j] = fwd_weights[lo + order[j]]
    return terms, weights


@nb.njit(inline="always")
def _next_random(state):
    """splitmix64: the next state and its output (the same on every thread and machine)."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> _U64(30))) * _MIX1
    z = (z ^ (z >> _U64(27))) * _MIX2
    return state, z ^ (z >> _U64(31))


@nb.njit(cache=True, nogil=True)
def _best_centroid(terms, weights, c_start, c_count, ent_c, ent_w, acc, hit, dropped):
    """The centroid with the largest dot product over ``terms`` (ties: the lower), skipping
    ``dropped``; -1 when no centroid shares a term. ``acc`` is zero and left zero."""
    n_hit = 0
    for j in range(terms.shape[0]):
        t = terms[j]
        if t < 0:
            break
        w = weights[j]
        for e in range(c_start[t], c_start[t] + c_count[t]):
            c = ent_c[e]
            if dropped[c]:
                continue
            if acc[c] == 0.0:
                hit[n_hit] = c
                n_hit += 1
            acc[c] += w * ent_w[e]
    best, best_score = -1, np.float32(0.0)
    for j in range(n_hit):
        c = hit[j]
        if acc[c] > best_score or (acc[c] == best_score and c < best):
            best, best_score = c, acc[c]
        acc[c] = 0.0
    return best


@nb.njit(cache=True, nogil=True)
def _assign(
    d, fwd_offsets, fwd_terms, fwd_weights, top_terms, top_weights, c_start, c_count, ent_c,
    ent_w, acc, hit, dropped,
):  # fmt: skip
    """Document ``d``'s centroid: the best over its heaviest terms, or over its whole vector
    when those share no term with a centroid left (the list's own term always does)."""
    c = _best_centroid(
        top_terms[d], top_weights[d], c_start, c_count, ent_c, ent_w, acc, hit, dropped
    )
    if c < 0:
        lo, hi = fwd_offsets[d], fwd_offsets[d + 1]
        c = _best_centroid(
            fwd_terms[lo:hi], fwd_weights[lo:hi], c_start, c_count, ent_c, ent_w, acc, hit,
            dropped,
        )  # fmt: skip
    return c


@nb.njit(cache=True, nogil=True)
def cluster_lists(
    t_lo,
    t_hi,
    offsets,
    docs,
    fwd_offsets,
    fwd_terms,
    fwd_weights,
    top_terms,
    top_weights,
    cluster_size,
    min_cluster_size,
    seed,
    n_terms,
    out_docs,
    out_sizes,
    out_n_blocks,
):
    """Blocks of lists ``t_lo:t_hi``: each list's documents reordered block by block into
    ``out_docs`` (at the list's offsets), its block sizes into ``out_sizes`` from the list's
    first offset on, and its block count into ``out_n_blocks[t]``.

    A list of n postings samples ``max(1, n // cluster_size)`` centroid documents (splitmix64
    seeded by ``seed`` and the term) and assigns each document to the centroid it scores best
    with over its ``top_terms`` (the full vector when those share no term with a centroid:
    every centroid holds the list's term, so that always finds one). Documents of clusters
    smaller than ``min_cluster_size`` are assigned again among the others. Within a block
    documents keep their order."""
    max_n = 0
    for t in range(t_lo, t_hi):
        max_n = max(max_n, offsets[t + 1] - offsets[t])
    perm = np.empty(max_n, dtype=np.int64)
    assign = np.empty(max_n, dtype=np.int64)
    c_start = np.zeros(n_terms, dtype=np.int64)
    c_count = np.zeros(n_terms, dtype=np.int64)
    touched = np.empty(n_terms, dtype=np.int64)
    for t in range(t_lo, t_hi):
        lo, hi = offsets[t], offsets[t + 1]
        n = hi - lo
        n_c = max(1, n // cluster_size)
        if n_c == 1:
            out_docs[lo:hi] = docs[lo:hi]
            out_n_blocks[t] = 1 if n else 0
            if n:
                out_sizes[lo] = n
            continue
        state = _U64(seed) * _GOLDEN ^ _U64(t)
        for i in range(n):
            perm[i] = i
        for i in range(n_c):
            state, r = _next_random(state)
            j = i + np.int64(r % _U64(n - i))
            perm[i], perm[j] = perm[j], perm[i]
        centroids = np.sort(perm[:n_c])
        # the centroids as a small inverted index: term -> (centroid, weight)
        n_touched, n_ent = 0, 0
        for c in range(n_c):
            d = docs[lo + centroids[c]]
            for i in range(fwd_offsets[d], fwd_offsets[d + 1]):
                term = fwd_terms[i]
                if c_count[term] == 0:
                    touched[n_touched] = term
                    n_touched += 1
                c_count[term] += 1
                n_ent += 1
        at = 0
        for j in range(n_touched):
            term = touched[j]
            c_start[term] = at
            at += c_count[term]
            c_count[term] = 0
        ent_c = np.empty(n_ent, dtype=np.int64)
        ent_w = np.empty(n_ent, dtype=np.float32)
        for c in range(n_c):
            d = docs[lo + centroids[c]]
            for i in range(fwd_offsets[d], fwd_offsets[d + 1]):
                term = fwd_terms[i]
                e = c_start[term] + c_count[term]
                ent_c[e] = c
                ent_w[e] = fwd_weights[i]
                c_count[term] += 1
        acc = np.zeros(n_c, dtype=np.float32)
        hit = np.empty(n_c, dtype=np.int64)
        dropped = np.zeros(n_c, dtype=np.bool_)
        sizes = np.zeros(n_c, dtype=np.int64)
        for p in range(n):
            c = _assign(
                docs[lo + p], fwd_offsets, fwd_terms, fwd_weights, top_terms, top_weights,
                c_start, c_count, ent_c, ent_w, acc, hit, dropped,
            )  # fmt: skip
            assign[p] = c
            sizes[c] += 1
        n_kept = 0
        for c in range(n_c):
            dropped[c] = sizes[c] < min_cluster_size
            n_kept += not dropped[c]
        if n_kept > 0 and n_kept < n_c:
            for p in range(n):
                if dropped[assign[p]]:
                    c = _assign(
                        docs[lo + p], fwd_offsets, fwd_terms, fwd_weights, top_terms,
                        top_weights, c_start, c_count, ent_c, ent_w, acc, hit, dropped,
                    )  # fmt: skip
                    sizes[assign[p]] -= 1
                    sizes[c] += 1
                    assign[p] = c
        for j in range(n_touched):
            c_count[touched[j]] = 0
        # counting sort by cluster, documents in list order within each
        n_blocks, at = 0, lo
        for c in range(n_c):
            if sizes[c] > 0:
                out_sizes[lo + n_blocks] = sizes[c]
                n_blocks += 1
                sizes[c] = at
                at += out_sizes[lo + n_blocks - 1]
        for p in range(n):
            c = assign[p]
            out_docs[sizes[c]] = docs[lo + p]
            sizes[c] += 1
        out_n_blocks[t] = n_blocks


@nb.njit(cache=True, nogil=True)
def _grow(array, need):
    """``array``, or a copy twice as large (repeatedly) when ``need`` exceeds its size."""
    if need <= array.shape[0]:
        return array
    size = max(array.shape[0], 16)
    while size < need:
        size *= 2
    out = np.empty(size, dtype=array.dtype)
    out[: array.shape[0]] = array
    return out


@nb.njit(cache=True, nogil=True)
def summarize_lists(
    t_lo,
    t_hi,
    term_blocks,
    block_offsets,
    block_docs,
    fwd_offsets,
    fwd_terms,
    fwd_impacts,
    n_terms,
    mass,
    top,
):
    """Transposed, quantized summaries of the blocks of lists ``t_lo:t_hi``.

    Per block: the per-term maximum impact over its documents, kept from the largest down
    until the kept entries hold ``mass`` (0-1] of the total (ranked by a 256-bin histogram
    over ``[0, top]``, linear time; within the last bin, in order of appearance), and always
    the list's own term. Values are stored as
    ``ceil(v / scale)`` in uint8 with ``scale`` = the block's largest value / 255, so
    ``q * scale >= v`` holds in float32 and a full summary is an upper bound.

    Returns ``(comps_per_list, entries_per_list, comp_terms, comp_ends, entry_blocks,
    entry_values, block_scale)``: per list the number of distinct summary terms and of
    entries; those terms, ascending within each list, and where each one's entries end
    (counted from the list's first entry); per entry the block (numbered within its list)
    and value; per block its scale. Compact types (uint32, uint8) keep the build's memory
    near the result's.
    """
    bin_width = top / 255.0 if top > 0 else 1.0
    best = np.zeros(n_terms, dtype=np.float32)
    touched = np.empty(n_terms, dtype=np.int64)
    hist = np.zeros(256, dtype=np.float64)
    n_lists = t_hi - t_lo
    comps_per_list = np.zeros(n_lists, dtype=np.int64)
    entries_per_list = np.zeros(n_lists, dtype=np.int64)
    block_scale = np.empty(term_blocks[t_hi] - term_blocks[t_lo], dtype=np.float32)
    comp_terms = np.empty(1024, dtype=np.uint32)
    comp_ends = np.empty(1024, dtype=np.uint32)
    entry_blocks = np.empty(1024, dtype=np.uint32)
    entry_values = np.empty(1024, dtype=np.uint8)
    n_comps, n_entries = 0, 0
    list_terms = np.empty(1024, dtype=np.int64)
    list_blocks = np.empty(1024, dtype=np.int64)
    list_values = np.empty(1024, dtype=np.uint8)
    for t in range(t_lo, t_hi):
        b_lo, b_hi = term_blocks[t], term_blocks[t + 1]
        size = 0
        for b in range(b_lo, b_hi):
            n_touched = 0
            for j in range(block_offsets[b], block_offsets[b + 1]):
                d = block_docs[j]
                for i in range(fwd_offsets[d], fwd_offsets[d + 1]):
                    term = fwd_terms[i]
                    v = np.float32(fwd_impacts[i])
                    if best[term] == 0 and v > 0:
                        touched[n_touched] = term
                        n_touched += 1
                    if v > best[term]:
                        best[term] = v
            total, largest = 0.0, np.float32(0.0)
            for j in range(n_touched):
                v = best[touched[j]]
                hist[min(255, int(np.float64(v) / bin_width))] += v
                total += v
                largest = max(largest, v)
            cut = 255  # keep the bins from the top down until they hold ``mass`` of the total
            running = hist[255]
            while cut > 0 and running < mass * total:
                cut -= 1
                running += hist[cut]
            hist_cut = hist[cut]
            hist[:] = 0.0
            scale = np.float32(largest / np.float32(Q_LEVELS))
            while scale * np.float32(Q_LEVELS) < largest:
                scale = np.float32(scale * np.float32(1.0 + 2.0**-20))
            block_scale[b - term_blocks[t_lo]] = scale
            list_terms = _grow(list_terms, size + n_touched)
            list_blocks = _grow(list_blocks, size + n_touched)
            list_values = _grow(list_values, size + n_touched)
            # the cut bin's entries are kept (in order of appearance) only until the kept
            # mass reaches ``mass`` of the total, as an exact sort by value would
            room = mass * total - (running - hist_cut)
            for j in range(n_touched):
                term = touched[j]
                v = best[term]
                level = min(255, int(np.float64(v) / bin_width))
                keep = term == t or level > cut
                if level == cut and (room > 0 or mass >= 1.0):
                    keep = True
                    room -= v
                if keep:
                    q = min(Q_LEVELS, int(np.ceil(np.float64(v) / np.float64(scale))))
                    while q < Q_LEVELS and np.float32(q) * scale < v:
                        q += 1
                    list_terms[size] = term
                    list_blocks[size] = b - b_lo
                    list_values[size] = q
                    size += 1
                best[term] = 0
        # transpose: entries by (term, block)
        n_b = b_hi - b_lo
        keys = list_terms[:size] * max(n_b, 1) + list_blocks[:size]
        order = np.argsort(keys)
        entry_blocks = _grow(entry_blocks, n_entries + size)
        entry_values = _grow(entry_values, n_entries + size)
        comp_terms = _grow(comp_terms, n_comps + size)
        comp_ends = _grow(comp_ends, n_comps + size)
        first = n_comps
        for j in range(size):
            e = order[j]
            term = list_terms[e]
            if n_comps == first or comp_terms[n_comps - 1] != term:
                comp_terms[n_comps] = term
                n_comps += 1
            comp_ends[n_comps - 1] = j + 1
            entry_blocks[n_entries] = list_blocks[e]
            entry_values[n_entries] = list_values[e]
            n_entries += 1
        comps_per_list[t - t_lo] = n_comps - first
        entries_per_list[t - t_lo] = size
    return (
        comps_per_list,
        entries_per_list,
        comp_terms[:n_comps].copy(),
        comp_ends[:n_comps].copy(),
        entry_blocks[:n_entries].copy(),
        entry_values[:n_entries].copy(),
        block_scale,
    )
