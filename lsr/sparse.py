"""Helpers on the one data type between encoders and the index: ``scipy.sparse.csr_array``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from lsr.errors import InputError


def term_counts(token_ids: Sequence[np.ndarray], vocab_size: int) -> sp.csr_array:
    """Bag-of-words counts: row ``i`` holds how often each term id occurs in ``token_ids[i]``.

    Built canonical at once (terms sorted, each once per row; a dict per row for a few
    tokens, else one sort of row-major keys),
    so neither this nor a search has to sum duplicates afterwards."""
    n = len(token_ids)
    # a few queries: counting in a dict beats numpy's set-up costs
    if sum(map(len, token_ids)) <= SMALL_COUNTS:
        indices, counts, indptr = [], [], [0]
        for row in token_ids:
            seen: dict[int, int] = {}
            for t in row.tolist():
                seen[t] = seen.get(t, 0) + 1
            terms = sorted(seen)
            indices += terms
            counts += [seen[t] for t in terms]
            indptr.append(len(indices))
        return canonical_csr(np.asarray(counts, np.float32), np.asarray(indices, np.int32),
                             np.asarray(indptr, np.int32), (n, vocab_size))  # fmt: skip
    lengths = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=n)
    terms = np.concatenate(token_ids).astype(np.int64)
    keys, counts = np.unique(np.repeat(np.arange(n) * vocab_size, lengths) + terms,
                             return_counts=True)  # fmt: skip
    index_type = np.int32 if max(len(keys), vocab_size) < 2**31 else np.int64
    indptr = np.searchsorted(keys, np.arange(n + 1) * vocab_size).astype(index_type)
    indices = (keys % max(vocab_size, 1)).astype(index_type)
    return canonical_csr(counts.astype(np.float32), indices, indptr, (n, vocab_size))


SMALL_COUNTS = 256  # tokens


_TEMPLATE = sp.csr_array((1, 1), dtype=np.float32)
_TRUSTED = set(vars(_TEMPLATE)) == {"_shape", "maxprint", "data", "indices", "indptr"}


def canonical_csr(
    data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]
) -> sp.csr_array:
    """A CSR array of arrays known to be canonical (column indices sorted and unique per
    row, within ``shape``), without scipy's input checks: they scan the arrays and cost
    10-20 microseconds a call, more than encoding and searching a BM25 query. Falls back to
    scipy's constructor if its attributes are not the ones this scipy is known to use
    (tests compare both)."""
    if not _TRUSTED:
        out = sp.csr_array((data, indices, indptr), shape=shape)
    else:
        out = object.__new__(sp.csr_array)
        out.__dict__.update(vars(_TEMPLATE))
        out._shape, out.data, out.indices, out.indptr = tuple(shape), data, indices, indptr
    out.has_canonical_format = True
    return out


def decode(vector: sp.csr_array | sp.sparray, vocab: Sequence[str], top_k: int | None = None):
    """The ``(term, weight)`` pairs of one sparse vector, heaviest first."""
    row = sp.csr_array(vector)
    if row.shape[0] != 1:
        raise InputError(f"decode takes one vector (1 row), got {row.shape[0]} rows.")
    order = np.argsort(-row.data, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return [(vocab[row.indices[i]], float(row.data[i])) for i in order]
