"""Doc ranges: runs of ``SCAN_BLOCK`` consecutive doc numbers, and what the kernels know of them.

For each long list (more postings than there are ranges) the index keeps, built when it is
opened: its largest impact in every range (``doc_range_maxima``) and where every range begins
in it (``doc_range_starts``). From these a query gets an upper bound on what its terms can add
to any document of a range (``range_bounds``) and can read one list's postings in chosen
ranges only (``add_in_ranges``). On a reordered collection (``--reorder bp``) similar
documents share ranges, so the bounds are tight and few ranges need reading.
"""

import numba as nb
import numpy as np

from lsr.kernels.layout import doc_at, impact_at
from lsr.kernels.pruned import seek

GROUP_BITS = 9  # range starts: a uint32 base per 512 ranges, uint16 offsets from it


@nb.njit(cache=True, nogil=True)
def doc_range_maxima(offsets, docs, impacts, n_docs, like, scan_block):
    """Per-term maxima over fixed ranges of ``scan_block`` documents, for the long lists only.

    A list longer than the number of ranges gets a row of ``ceil(n_docs / scan_block)``
    maxima (dtype of ``like``: the index's block maxima); ``rows[t]`` is its row, -1 for a
    short list. Rows cost less than a byte per posting, since every long list has more
    postings than its row has entries; they bound what a term can add to any document of a
    range without reading its postings.
    """
    n_terms = offsets.shape[0] - 1
    n_ranges = (n_docs + scan_block - 1) // scan_block
    rows = np.full(n_terms, -1, dtype=np.int32)
    n_long = 0
    for t in range(n_terms):
        if offsets[t + 1] - offsets[t] > n_ranges:
            rows[t] = n_long
            n_long += 1
    table = np.zeros((n_long, n_ranges), dtype=like.dtype)
    for t in range(n_terms):
        r = rows[t]
        if r < 0:
            continue
        for p in range(offsets[t], offsets[t + 1]):
            s = doc_at(docs, impacts, p) // scan_block
            v = impact_at(docs, impacts, p)
            if v > table[r, s]:
                table[r, s] = v
    return rows, table


@nb.njit(cache=True, nogil=True)
def doc_range_starts(offsets, docs, impacts, rows, n_long, n_docs, scan_block):
    """Where each range begins in each long list (``rows`` from ``doc_range_maxima``), as
    ``(base, rel)``: range ``r`` of the list in row ``i`` begins ``base[i, r >> GROUP_BITS] +
    rel[i, r]`` postings into it, and entry ``n_ranges`` is the list's length.

    A range holds at most ``scan_block`` postings of a list, so offsets within a group of
    ``2**GROUP_BITS`` ranges fit in 16 bits (for ``scan_block`` <= 128): 2 bytes per range
    instead of 8.
    """
    n_ranges = (n_docs + scan_block - 1) // scan_block
    n_groups = (n_ranges >> GROUP_BITS) + 1
    base = np.zeros((n_long, n_groups), dtype=np.uint32)
    rel = np.zeros((n_long, n_ranges + 1), dtype=np.uint16)
    for t in range(offsets.shape[0] - 1):
        i = rows[t]
        if i < 0:
            continue
        lo, hi = offsets[t], offsets[t + 1]
        p = lo
        for r in range(n_ranges + 1):
            while p < hi and doc_at(docs, impacts, p) // scan_block < r:
                p += 1
            if r & ((1 << GROUP_BITS) - 1) == 0:
                base[i, r >> GROUP_BITS] = p - lo
            rel[i, r] = p - lo - base[i, r >> GROUP_BITS]
    return base, rel


@nb.njit(cache=True, nogil=True, inline="always")
def _raise_to(bounds, s, v, cur_s, cur_v):
    """Make one term's contribution to ``bounds[s]`` at least ``v`` (a term adds its largest
    value per range once); returns the new ``(cur_s, cur_v)``."""
    if s == cur_s:
        if v > cur_v:
            bounds[s] += v - cur_v
            return s, v
        return cur_s, cur_v
    bounds[s] += v
    return s, v


@nb.njit(cache=True, nogil=True)
def range_bounds(
    docs, impacts, starts, ends, terms, w, which, range_rows, range_max, scan_block, bounds
):  # fmt: skip
    """``bounds[s]``: what the terms ``which`` (indices into ``starts``/``ends``/``terms``/
    ``w``) can add to any document of range ``s``.

    A long list adds its weighted range maxima (``doc_range_maxima``); a short one adds each
    posting to its range, only its largest one there.
    """
    bounds[:] = 0.0
    for j in which:
        wj = w[j]
        row = range_rows[terms[j]]
        if row >= 0:
            maxima = range_max[row]
            for s in range(bounds.shape[0]):
                bounds[s] += wj * np.float32(maxima[s])
            continue
        cur_s, cur_v = -1, np.float32(0.0)
        for p in range(starts[j], ends[j]):
            cur_s, cur_v = _raise_to(
                bounds, doc_at(docs, impacts, p) // scan_block, wj * impact_at(docs, impacts, p),
                cur_s, cur_v,
            )  # fmt: skip


@nb.njit(cache=True, nogil=True)
def add_in_ranges(
    docs, impacts, starts, ends, w, terms, which, range_rows, range_base, range_rel, chosen,
    scan_block, acc,
):  # fmt: skip
    """Add the postings of the terms ``which``, in that order, that fall in the ranges
    ``chosen`` (ascending) to ``acc``: a long list jumps to each range through its range
    starts, a short one gallops to it."""
    for j in which:
        wj = w[j]
        row = range_rows[terms[j]]
        if row >= 0:
            base, rel = range_base[row], range_rel[row]
            first = np.uint64(starts[j])
            for r in chosen:
                lo = first + np.uint64(base[r >> GROUP_BITS]) + np.uint64(rel[r])
                r1 = r + 1
                hi = first + np.uint64(base[r1 >> GROUP_BITS]) + np.uint64(rel[r1])
                for p in range(lo, hi):
                    acc[doc_at(docs, impacts, p)] += wj * impact_at(docs, impacts, p)
            continue
        p, end = starts[j], ends[j]
        for r in chosen:
            p = seek(docs, impacts, p, end, r * scan_block)
            limit = (r + 1) * scan_block
            while p < end:
                d = doc_at(docs, impacts, p)
                if d >= limit:
                    break
                acc[d] += wj * impact_at(docs, impacts, p)
                p += 1
            if p == end:
                break
