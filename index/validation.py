"""Checks on what is handed to the index (sparse vectors, document ids, k), so bad input fails
before any kernel runs or anything is written."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from lsr.checks import positive_int
from lsr.errors import InputError, InputTypeError
from lsr.index.errors import InvalidDocumentIdError
from lsr.kernels.queries import WEIGHTS_NEGATIVE, WEIGHTS_NON_FINITE, WEIGHTS_ZERO, weights_status
from lsr.kernels.topk import ALL_DOCS


def as_sparse_batch(vectors: object, vocab_size: int, what: str) -> sp.csr_array:
    """Return ``vectors`` as a canonical float32 CSR array of width ``vocab_size``, or raise.

    Duplicates are summed, explicit zeros dropped; negative or non-finite weights are refused
    because impacts and query weights must be non-negative for top-k scoring to be exact.
    """
    if not isinstance(vectors, sp.csr_array) and not sp.issparse(vectors):
        raise InputTypeError(
            f"{what} must be a scipy.sparse CSR array of shape (n, {vocab_size}), "
            f"got {type(vectors).__name__}."
        )
    if vectors.ndim != 2:
        raise InputError(f"{what} must be 2-D (n, vocab_size), got shape {vectors.shape}.")
    if vectors.shape[1] != vocab_size:
        from lsr.index.errors import VocabularyMismatchError

        raise VocabularyMismatchError(
            f"{what} have {vectors.shape[1]} columns but the index vocabulary has "
            f"{vocab_size} terms; encode them with the encoder the index was built with."
        )
    csr = vectors
    if not isinstance(csr, sp.csr_array) or csr.dtype != np.float32:
        csr = sp.csr_array(vectors, dtype=np.float32)
    if not csr.has_canonical_format:
        csr = csr.copy()  # never modify the caller's arrays (they may also be read-only views)
        csr.sum_duplicates()
    status = weights_status(csr.data)
    if status == WEIGHTS_NON_FINITE:
        raise InputError(f"{what} contain NaN or infinite weights; fix the encoder output.")
    if status == WEIGHTS_NEGATIVE:
        raise InputError(f"{what} contain negative weights; sparse term weights must be >= 0.")
    if status == WEIGHTS_ZERO:
        csr = csr.copy()
        csr.eliminate_zeros()
    return _kernel_ready(csr)


def _kernel_ready(csr: sp.csr_array) -> sp.csr_array:
    """``csr`` with int32 indices and offsets (int64 past 2^31 entries) in writeable arrays:
    the one layout the Numba kernels are compiled (and warmed up) for. A model's output has
    int64 indices, arrays received from another process (a Ray shard's queries) are
    read-only, and each such variant would compile every kernel again on first use."""
    arrays = (csr.data, csr.indices, csr.indptr)
    index_type = np.int32 if csr.nnz < 2**31 - 1 and csr.shape[1] < 2**31 else np.int64
    if csr.indices.dtype == csr.indptr.dtype == index_type and all(
        a.flags.writeable for a in arrays
    ):
        return csr
    return sp.csr_array(
        (np.array(csr.data), csr.indices.astype(index_type), csr.indptr.astype(index_type)),
        shape=csr.shape,
    )


def check_k(k: object) -> int:
    """``k`` as a positive int, or a clear error."""
    return positive_int(k, "k")


MAX_ID_BYTES = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_doc_ids(ids: Sequence[object]) -> list[str]:
    """``ids`` as a list of valid document ids, or an :class:`InvalidDocumentIdError` naming
    the first bad one: every id is a non-empty string of valid UTF-8 (no lone surrogates), at
    most ``MAX_ID_BYTES`` bytes, without control characters, so it can be stored, logged and
    addressed (percent-encoded in a URL path) whatever it contains."""
    out = []
    for i, doc_id in enumerate(ids):
        if not isinstance(doc_id, str):
            raise InvalidDocumentIdError(
                f"Document id #{i} is a {type(doc_id).__name__}, not a string."
            )
        problem = None
        try:
            size = len(doc_id.encode("utf-8"))
        except UnicodeEncodeError:
            problem = "is not valid UTF-8 (it contains a lone surrogate)"
        else:
            if size == 0:
                problem = "is empty"
            elif size > MAX_ID_BYTES:
                problem = f"is {size} bytes long, more than {MAX_ID_BYTES}"
            elif _CONTROL.search(doc_id):
                problem = "contains a control character"
        if problem is not None:
            raise InvalidDocumentIdError(f"Document id #{i} {doc_id!r} {problem}.")
        out.append(doc_id)
    return out


def empty_rows(vectors: sp.csr_array) -> np.ndarray:
    """Row numbers of the vectors with no term: documents no query could ever find."""
    return np.flatnonzero(np.diff(vectors.indptr) == 0)


def as_allowed_mask(allowed: object, n_docs: int) -> np.ndarray:
    """The ``allowed`` argument of a search as the kernels' mask: a contiguous uint8 array
    with one entry per document (non-zero: the document may be returned), or the empty mask
    (``lsr.kernels.topk.ALL_DOCS``) for None. Refuses anything else with a clear error."""
    if allowed is None:
        return ALL_DOCS
    if not isinstance(allowed, np.ndarray) or allowed.ndim != 1:
        raise InputTypeError(
            f"allowed must be a 1-D numpy array of booleans over the {n_docs} documents, "
            f"got {type(allowed).__name__}."
        )
    if allowed.shape[0] != n_docs:
        raise InputError(
            f"allowed has {allowed.shape[0]} entries but the index has {n_docs} documents."
        )
    if allowed.dtype == np.bool_:
        return np.ascontiguousarray(allowed).view(np.uint8)
    if allowed.dtype == np.uint8:
        return np.ascontiguousarray(allowed)
    raise InputTypeError(f"allowed must be a bool or uint8 array, got dtype {allowed.dtype}.")
