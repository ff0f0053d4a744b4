"""Renumbering the documents of an index so that similar documents sit together.

``lsr index --reorder bp`` (and :func:`reorder`) runs recursive graph bisection
(:mod:`lsr.kernels.reorder`) over the built index's postings and renumbers its documents:
the postings, the block maxima and the document ids move together, so a search returns the
same documents with the same scores (ids map back; only equal scores may rank in another
order, since ties rank by document number). What changes is where each list's high impacts
sit: block-max pruning skips more, and the gaps shrink (:func:`gap_bits_per_posting`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from lsr.checks import positive_int
from lsr.errors import InputError
from lsr.index.inverted import Index
from lsr.index.threads import check_threads, parallel_threads
from lsr.kernels.layout import PACKED_MARKER, pack
from lsr.kernels.reorder import bisection_order, log_gap_bits

logger = logging.getLogger(__name__)

METHODS = ("bp",)
ITERATIONS = 20  # swap rounds per bisection, as in PISA
LEAF = 32  # documents of the smallest ranges


@dataclass
class Reordering:
    """What :func:`reorder` did: ``order[new] = old`` and its figures."""

    order: np.ndarray
    seconds: float
    swaps: int
    bits_before: float
    bits_after: float

    def to_dict(self) -> dict:
        return {
            "seconds": self.seconds,
            "swaps": self.swaps,
            "gap_bits_per_posting_before": self.bits_before,
            "gap_bits_per_posting_after": self.bits_after,
        }


def check_method(method: str | None) -> str | None:
    """``method`` (``bp``) or None, or an error naming the choices."""
    if method is not None and method not in METHODS:
        raise InputError(f"Unknown reordering {method!r}: choose one of {', '.join(METHODS)}.")
    return method


def gap_bits_per_posting(index: Index) -> float:
    """Mean ``log2`` of the gaps between consecutive doc numbers in the postings lists."""
    return log_gap_bits(index.offsets, index.doc_numbers()) / max(index.n_postings, 1)


def bp_order(
    index: Index, iterations: int = ITERATIONS, leaf: int = LEAF, threads: int | None = None
) -> tuple[np.ndarray, int]:
    """Recursive graph bisection over ``index``'s documents: ``order[new] = old`` and the
    swaps it made."""
    positive_int(iterations, "iterations")
    positive_int(leaf, "leaf")
    check_threads(threads)
    pattern = sp.csc_array(
        (np.ones(index.n_postings, dtype=np.int8), index.doc_numbers(), index.offsets),
        shape=(index.n_docs, index.vocab_size),
    ).tocsr()  # documents x terms: each document's term ids
    with parallel_threads(threads) as n:
        order, swaps = bisection_order(
            pattern.indptr.astype(np.int64),
            pattern.indices.astype(np.int32),
            index.vocab_size,
            iterations,
            max(2, leaf),
            4 * n if n > 1 else 1,
        )
    return order, int(swaps)


def permute(index: Index, order: np.ndarray) -> Index:
    """``index`` with its documents renumbered: new document ``i`` is old ``order[i]``."""
    order = np.asarray(order, dtype=np.int64)
    if order.shape != (index.n_docs,) or not np.array_equal(
        np.sort(order), np.arange(index.n_docs)
    ):
        raise InputError(f"The order must be a permutation of the {index.n_docs:,} documents.")
    new_number = np.empty(index.n_docs, dtype=np.int64)
    new_number[order] = np.arange(index.n_docs)
    impacts = index.impact_values()  # packed: decoded into a new array
    if not index.packed:
        impacts = impacts.copy()  # sorting below must not touch the index's own array
    moved = sp.csc_array(
        (impacts, new_number[index.doc_numbers()], index.offsets),
        shape=(index.n_docs, index.vocab_size),
    )
    moved.sort_indices()  # each list by its new doc numbers
    docs = moved.indices.astype(np.uint32)
    if index.packed:
        docs, impacts = pack(docs, moved.data), PACKED_MARKER
    else:
        impacts = moved.data
    doc_terms = index.doc_terms[order] if index.doc_terms.size else index.doc_terms
    return Index(
        index.vocab,
        index.doc_ids.take(pa.array(order)),
        np.asarray(moved.indptr, dtype=np.int64),
        docs,
        impacts,
        doc_terms,
        index.scale,
        metadata=dict(index.metadata),
        vocab_hash=index.vocab_hash,
    )


def reorder(
    index: Index, method: str = "bp", threads: int | None = None
) -> tuple[Index, Reordering]:
    """``index`` reordered by ``method`` (see the module docstring) and what it did."""
    check_method(method)
    before = gap_bits_per_posting(index)
    t = time.perf_counter()
    order, swaps = bp_order(index, threads=threads)
    reordered = permute(index, order)
    seconds = time.perf_counter() - t
    after = gap_bits_per_posting(reordered)
    reordered.metadata["reorder"] = method
    logger.info(
        "reordered %d documents (%s) in %.1fs: gap bits per posting %.2f -> %.2f",
        index.n_docs, method, seconds, before, after,
    )  # fmt: skip
    return reordered, Reordering(order, seconds, swaps, before, after)
