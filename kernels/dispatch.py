"""One entry point per query and per batch that picks and runs a search algorithm in Numba.

Choosing inside compiled code keeps the per-query Python overhead to a single call.
Algorithm codes: 0 auto, 1 MaxScore, 2 block-max WAND, 3 exhaustive term-at-a-time,
4 term-at-a-time MaxScore, 5 block-max pruning over doc ranges.
"""

from typing import NamedTuple

import numba as nb
import numpy as np

from lsr.kernels.maxscore_taat import maxscore_taat_one
from lsr.kernels.pruned import bmw_one, maxscore_one
from lsr.kernels.ranges import ranges_one
from lsr.kernels.scoring import scratch, search_one
from lsr.kernels.topk import batch_outputs

AUTO, MAXSCORE, BMW, EXHAUSTIVE, MAXSCORE_TAAT, RANGES = 0, 1, 2, 3, 4, 5
ACCUMULATING = (EXHAUSTIVE, MAXSCORE_TAAT, RANGES)  # the codes that need a dense accumulator


class PostingsArrays(NamedTuple):
    """The arrays of an inverted index that the search kernels take, as one value (Numba
    unpacks named tuples like plain ones), so adding an array is one edit here and one where
    ``lsr.index.Index`` builds it."""

    offsets: np.ndarray  # int64 (vocab + 1): term t's postings are offsets[t]:[t+1]
    docs: np.ndarray  # uint32 doc numbers (or packed doc + impact words)
    impacts: np.ndarray  # uint8 / float32 impacts (or the packed marker)
    max_impact: np.ndarray  # per term
    block_offsets: np.ndarray  # per term, into the block tables
    block_max: np.ndarray  # per block of block_size postings
    block_last: np.ndarray  # last doc number per block
    block_size: int
    range_rows: np.ndarray  # doc-range maxima and starts of the long lists (kernels.doc_ranges)
    range_max: np.ndarray
    range_base: np.ndarray
    range_rel: np.ndarray
    dense_rows: np.ndarray  # row of a frequent term in dense_table, or -1 (kernels.dense)
    dense_table: np.ndarray


class Algorithm(NamedTuple):
    """One search algorithm: its name in the API, its kernel code, and whether it is exact only
    (``theta`` > 1, approximate pruning, needs a document-at-a-time algorithm)."""

    name: str
    code: int
    exact_only: bool
    description: str


# the one table every list of algorithms (index options, REST schema, benchmarks) comes from
ALGORITHMS = (
    Algorithm("exhaustive", EXHAUSTIVE, True, "term-at-a-time, every posting"),
    Algorithm("maxscore", MAXSCORE, False, "MaxScore, document-at-a-time"),
    Algorithm("maxscore-taat", MAXSCORE_TAAT, True, "MaxScore, term-at-a-time"),
    Algorithm("bmw", BMW, False, "block-max WAND, document-at-a-time"),
    Algorithm("ranges", RANGES, False, "block-max pruning over doc ranges, best bound first"),
    Algorithm("auto", AUTO, False, "picked per query inside the kernels (see resolve)"),
)
ALGORITHM_NAMES = tuple(a.name for a in ALGORITHMS)


AUTO_SHORT_QUERY_TERMS = 12  # approximate auto: MaxScore up to this many terms, BMW beyond
AUTO_TAAT_MIN_DOCS = 100_000  # exact auto: term-at-a-time MaxScore from this many documents


@nb.njit(cache=True, nogil=True)
def resolve(algorithm, q_terms, theta, n_docs):
    """The algorithm ``auto`` stands for on this query (others are returned unchanged).

    Exact search: term-at-a-time MaxScore on collections of ``AUTO_TAAT_MIN_DOCS`` or more,
    exhaustive term-at-a-time below, where ``lsr.index.Index`` gives the exhaustive kernel dense
    rows for its frequent terms (as it does up to 2M documents): below that size MaxScore's
    bookkeeping costs more than the postings it skips (the measurements: ``docs/performance.md``).
    Above it, which exact kernel is fastest depends on the data, so an index learns it from its
    first queries and then passes its choice instead of ``auto`` (``lsr.index.auto_exact``); this
    rule is what batches run until then. With ``theta`` > 1 (approximate), MaxScore for short
    queries and BMW for long ones.
    """
    if algorithm != AUTO:
        return algorithm
    if theta == 1.0:
        return MAXSCORE_TAAT if n_docs >= AUTO_TAAT_MIN_DOCS else EXHAUSTIVE
    return MAXSCORE if q_terms.shape[0] <= AUTO_SHORT_QUERY_TERMS else BMW


@nb.njit(cache=True, nogil=True)
def search_query(
    algorithm, postings, q_terms, q_weights, scale, k, theta, allowed, acc, candidates, out_docs,
    out_scores,
):  # fmt: skip
    """Run one query with the given (or automatically chosen) algorithm; returns the hit count.

    ``postings``: the index's :class:`PostingsArrays`; ``allowed``: the documents that may be
    returned (uint8 per doc number, or empty for all; see ``lsr.kernels.topk``).
    """
    (
        offsets, docs, impacts, max_impact, block_offsets, block_max, block_last, block_size,
        range_rows, range_max, range_base, range_rel, dense_rows, dense_table,
    ) = postings  # fmt: skip
    algo = resolve(algorithm, q_terms, theta, acc.shape[0])
    if algo == EXHAUSTIVE:
        return search_one(
            offsets, docs, impacts, dense_rows, dense_table, q_terms, q_weights, scale, k,
            allowed, acc, candidates, out_docs, out_scores,
        )  # fmt: skip
    if algo == MAXSCORE_TAAT:
        return maxscore_taat_one(
            offsets, docs, impacts, max_impact, block_offsets, block_max, block_last,
            block_size, range_rows, range_max, range_base, range_rel, q_terms, q_weights, scale,
            k, allowed, acc, candidates, out_docs, out_scores,
        )  # fmt: skip
    if algo == RANGES:
        return ranges_one(
            offsets, docs, impacts, max_impact, block_offsets, block_max, range_rows, range_max,
            range_base, range_rel, dense_rows, dense_table, q_terms, q_weights, scale, k, theta,
            allowed, acc, candidates, out_docs, out_scores,
        )  # fmt: skip
    if algo == MAXSCORE:
        return maxscore_one(
            offsets, docs, impacts, max_impact, q_terms, q_weights, scale, k, theta, allowed,
            out_docs, out_scores,
        )  # fmt: skip
    return bmw_one(
        offsets, docs, impacts, max_impact, block_offsets, block_max, block_last, block_size,
        q_terms, q_weights, scale, k, theta, allowed, out_docs, out_scores,
    )  # fmt: skip


@nb.njit(cache=True, nogil=True)
def search_single(
    algorithm, postings, q_terms, q_weights, scale, k, theta, allowed, acc, candidates, out_docs,
    out_scores, counts,
):  # fmt: skip
    """``search_query`` into row 0 of caller-allocated ``(1, k)`` outputs, padded with -1 and
    0 after the hits, the hit count in ``counts[0]``: the single-query path takes no views
    and boxes nothing on return (every returned array would be boxed, per query)."""
    n = search_query(
        algorithm, postings, q_terms, q_weights, scale, k, theta, allowed, acc, candidates,
        out_docs[0], out_scores[0],
    )  # fmt: skip
    out_docs[0, n:] = -1
    out_scores[0, n:] = 0.0
    counts[0] = n


@nb.njit(cache=True, nogil=True)
def _search_slice(
    algorithm, postings, q_indptr, q_terms, q_weights, scale, k, theta, allowed, n_docs, lo, hi,
    out_docs, out_scores, counts,
):  # fmt: skip
    """Queries ``lo:hi`` of a batch on one thread; the accumulator is allocated only if needed."""
    exhaustive = False
    for q in range(lo, hi):
        a, b = q_indptr[q], q_indptr[q + 1]
        if resolve(algorithm, q_terms[a:b], theta, n_docs) in ACCUMULATING:
            exhaustive = True
            break
    acc, candidates = scratch(n_docs if exhaustive else 0)
    for q in range(lo, hi):
        a, b = q_indptr[q], q_indptr[q + 1]
        counts[q] = search_query(
            algorithm, postings, q_terms[a:b], q_weights[a:b], scale, k, theta, allowed, acc,
            candidates, out_docs[q], out_scores[q],
        )  # fmt: skip


@nb.njit(cache=True, nogil=True, parallel=True)
def search_many(
    algorithm, postings, q_indptr, q_terms, q_weights, scale, k, theta, allowed, n_docs, n_workers
):
    """Every row of a query CSR, in ``n_workers`` parallel slices; ``(docs, scores, counts)``;
    every query returns only documents ``allowed`` allows.

    A slice allocates its accumulator only if one of its queries runs exhaustively, so
    pruned batches over large collections allocate nothing collection-sized.
    """
    n_queries = q_indptr.shape[0] - 1
    out_docs, out_scores, counts = batch_outputs(n_queries, k)
    n_workers = max(1, min(n_workers, n_queries))
    for w in nb.prange(n_workers):
        _search_slice(
            algorithm, postings, q_indptr, q_terms, q_weights, scale, k, theta, allowed, n_docs,
            w * n_queries // n_workers, (w + 1) * n_queries // n_workers, out_docs, out_scores,
            counts,
        )  # fmt: skip
    return out_docs, out_scores, counts
