"""Helpers on the one data type between encoders and the index: ``scipy.sparse.csr_array``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from lsr.errors import InputError


def term_counts(token_ids: Sequence[np.ndarray], vocab_size: int) -> sp.csr_array:
    """Bag-of-words counts: row ``i`` holds how often each term id occurs in ``token_ids[i]``."""
    lengths = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=len(token_ids))
    indptr = np.zeros(len(token_ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.concatenate(token_ids).astype(np.int32) if lengths.sum() else np.empty(0, np.int32)
    data = np.ones(indices.shape[0], dtype=np.float32)
    counts = sp.csr_array((data, indices, indptr), shape=(len(token_ids), vocab_size))
    counts.sum_duplicates()
    return counts


def decode(vector: sp.csr_array | sp.sparray, vocab: Sequence[str], top_k: int | None = None):
    """The ``(term, weight)`` pairs of one sparse vector, heaviest first."""
    row = sp.csr_array(vector)
    if row.shape[0] != 1:
        raise InputError(f"decode takes one vector (1 row), got {row.shape[0]} rows.")
    order = np.argsort(-row.data, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return [(vocab[row.indices[i]], float(row.data[i])) for i in order]
