"""Per-block summaries of postings lists for block-max pruning."""

import numba as nb
import numpy as np

from lsr.kernels.layout import doc_at, impact_at


@nb.njit(cache=True, nogil=True)
def build_blocks(offsets, docs, impacts, block_size):
    """Split every postings list into blocks of ``block_size`` postings.

    Returns ``(block_offsets, block_max, block_last)``: term ``t`` owns blocks
    ``block_offsets[t]:block_offsets[t + 1]``; each block records its largest impact (as
    float32, in stored units) and the doc number of its last posting.
    """
    n_terms = offsets.shape[0] - 1
    block_offsets = np.zeros(n_terms + 1, dtype=np.int64)
    for t in range(n_terms):
        n = offsets[t + 1] - offsets[t]
        block_offsets[t + 1] = block_offsets[t] + (n + block_size - 1) // block_size
    n_blocks = block_offsets[n_terms]
    block_max = np.zeros(n_blocks, dtype=np.float32)
    block_last = np.zeros(n_blocks, dtype=np.uint32)
    for t in range(n_terms):
        b = block_offsets[t]
        start, end = offsets[t], offsets[t + 1]
        for lo in range(start, end, block_size):
            hi = min(lo + block_size, end)
            best = np.float32(0.0)
            for i in range(lo, hi):
                v = impact_at(docs, impacts, i)
                if v > best:
                    best = v
            block_max[b] = best
            block_last[b] = doc_at(docs, impacts, hi - 1)
            b += 1
    return block_offsets, block_max, block_last


@nb.njit(cache=True, nogil=True)
def term_max_impact(offsets, docs, impacts):
    """The largest stored impact of each postings list, as float32 (0 for an empty list)."""
    n_terms = offsets.shape[0] - 1
    out = np.zeros(n_terms, dtype=np.float32)
    for t in range(n_terms):
        best = np.float32(0.0)
        for i in range(offsets[t], offsets[t + 1]):
            v = impact_at(docs, impacts, i)
            if v > best:
                best = v
        out[t] = best
    return out
