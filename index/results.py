"""What every searchable thing answers, and the one merge of several answers.

A segment, an :class:`~lsr.index.Index`, a :class:`~lsr.index.ClusteredIndex`, a
:class:`~lsr.index.LiveIndex` (and, later, a shard or a cluster) are :class:`Searchable`:
``search(queries, k, **options)`` takes a CSR batch of query vectors over the searchable's
vocabulary and returns :class:`SearchResults`, whose row ``i`` unpacks as
``ids, scores = results[i]``.

:func:`merge_topk` combines the top-k of several searchables over the same queries (a base
and its delta, segments, shards): exact when each part returned its own top-k (with ``k``
plus the number of excluded documents it may hold), and tie-stable: equal scores rank by
part order, then by rank within the part (each part ranks ties by its document order). Parts
that carry ``order`` (a global position per hit: the shards of a cluster,
:mod:`lsr.index.cluster`) rank ties by it instead, so the merge of shards orders ties as one
index over all their documents would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from lsr.errors import InputError


class Hit(NamedTuple):
    """One hit: the document's id, its score and (when asked for) its stored document."""

    id: str
    score: float
    document: dict | None = None


class _IdsScores(NamedTuple):
    ids: list[str]
    scores: list[float]


class Hits(_IdsScores):
    """One query's hits, best first: ``ids, scores = hits``; ``hits.hits`` lists them as
    :class:`Hit` (``.id``, ``.score``, ``.document``), ``hits.documents`` the stored
    documents when the search asked for fields (else None)."""

    def __new__(cls, ids: list[str], scores: list[float], documents: list[dict] | None = None):
        self = super().__new__(cls, ids, scores)
        self.documents = documents
        return self

    def items(self) -> list[tuple[str, float]]:
        """``[(doc_id, score), ...]``, best first."""
        return list(zip(self.ids, self.scores, strict=True))

    @property
    def hits(self) -> list[Hit]:
        """The hits as :class:`Hit` values, best first."""
        docs = self.documents if self.documents is not None else [None] * len(self.ids)
        return [Hit(*h) for h in zip(self.ids, self.scores, docs, strict=True)]


def ids_at(doc_ids: pa.Array, numbers: np.ndarray) -> list[str]:
    """The strings of ``doc_ids`` at ``numbers``. A few (a query's hits) are sliced from the
    array's buffers directly: building an Arrow index array and taking costs several
    microseconds more than a search of a small collection."""
    if (
        len(numbers) > 64
        or doc_ids.null_count
        or not (pa.types.is_string(doc_ids.type) or pa.types.is_large_string(doc_ids.type))
    ):
        return doc_ids.take(pa.array(numbers, type=pa.int64())).to_pylist()
    _, offsets_buffer, data = doc_ids.buffers()
    size = 8 if pa.types.is_large_string(doc_ids.type) else 4
    raw = memoryview(offsets_buffer)
    offsets = raw[: len(raw) - len(raw) % size].cast("q" if size == 8 else "i")  # Python ints
    view, base = memoryview(data), doc_ids.offset
    return [
        str(view[offsets[n] : offsets[n + 1]], "utf-8")
        for n in (number + base for number in numbers.tolist())
    ]


@dataclass
class SearchResults:
    """Top-k hits of a batch of queries: row ``i`` holds ``counts[i]`` hits in rank order.

    ``docs[i, j]`` is the position of hit ``j`` in ``doc_ids`` (-1 pads rows with fewer than
    k hits); for an :class:`~lsr.index.Index` that is its internal document number. Index or
    iterate to get :class:`Hits` with external ids.
    """

    docs: np.ndarray
    scores: np.ndarray
    counts: np.ndarray
    doc_ids: pa.Array
    documents: list[list[dict]] | None = None  # per row, the hits' stored documents if asked
    contributions: list[list[list]] | None = None  # fused: per row, per hit, each retriever's part
    order: np.ndarray | None = None  # per hit, its global position (ties rank by it; see merge)
    partial: list[str] | None = None  # a cluster's shards that did not answer (allow_partial)

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    def __getitem__(self, i: int) -> Hits:
        n = int(self.counts[i])
        ids = ids_at(self.doc_ids, self.docs[i, :n])
        docs = self.documents[i] if self.documents is not None else None
        return Hits(ids, self.scores[i, :n].tolist(), docs)

    def __iter__(self) -> Iterator[Hits]:
        for i in range(len(self)):
            yield self[i]

    @property
    def k(self) -> int:
        """Hits per row at most (the width of ``docs`` and ``scores``)."""
        return int(self.docs.shape[1])

    def head(self, k: int) -> SearchResults:
        """The first ``k`` hits of every row (exact for exact searches: top-k of top-k')."""
        return SearchResults(
            docs=self.docs[:, :k],
            scores=self.scores[:, :k],
            counts=np.minimum(self.counts, k),
            doc_ids=self.doc_ids,
            documents=None if self.documents is None else [d[:k] for d in self.documents],
            contributions=None
            if self.contributions is None
            else [c[:k] for c in self.contributions],
            order=None if self.order is None else self.order[:, :k],
        )

    def compact(self) -> SearchResults:
        """The same results whose ``doc_ids`` hold only the hits' ids (``docs`` renumbered):
        what to send over a network instead of a segment's whole id column."""
        valid = np.arange(self.k)[None, :] < self.counts[:, None]
        rows, cols = np.nonzero(valid)
        docs = np.full(self.docs.shape, -1, dtype=np.int64)
        docs[rows, cols] = np.arange(len(rows))
        numbers = self.docs[rows, cols]
        return SearchResults(
            docs=docs,
            scores=self.scores,
            counts=self.counts,
            doc_ids=self.doc_ids.take(pa.array(numbers, type=pa.int64())),
            documents=self.documents,
            contributions=self.contributions,
            order=self.order,
        )


@runtime_checkable
class Searchable(Protocol):
    """Anything that answers a batch of sparse queries with its top-k documents."""

    vocab: list[str]

    @property
    def n_docs(self) -> int: ...

    def search(self, queries: sp.csr_array, k: int = 10, **options) -> SearchResults: ...


def merge_topk(
    parts: Sequence[SearchResults],
    k: int,
    exclude: Sequence[np.ndarray | None] | None = None,
) -> SearchResults:
    """The top ``k`` of several parts' results for the same queries, as one result.

    ``exclude[p]`` (optional) is a boolean mask over part ``p``'s ``docs`` values: hits it
    marks (deleted or replaced documents) are dropped before ranking. Ties keep part order,
    then each part's own rank order. The result's ``doc_ids`` holds only the hits' ids; when
    every part carries ``documents``, so does the result. When every part carries
    ``order`` (each hit's global position), ties rank by it instead of by part, and the
    result carries the merged ``order``.
    """
    if not parts:
        raise InputError("merge_topk needs at least one part.")
    n = len(parts[0])
    if any(len(p) != n for p in parts):
        raise InputError("Every part must answer the same queries (one row per query).")
    exclude = list(exclude) if exclude is not None else [None] * len(parts)
    if len(exclude) != len(parts):
        raise InputError("Give one exclusion mask (or None) per part.")
    ordered = all(part.order is not None for part in parts)
    if n == 1 and all(mask is None for mask in exclude):
        return _merge_one_query(parts, k, ordered)
    masked, starts = [], [0]
    for part, mask in zip(parts, exclude, strict=True):
        valid = np.arange(part.k)[None, :] < part.counts[:, None]
        if mask is not None and part.k:
            valid &= ~mask[np.maximum(part.docs, 0)]
        masked.append(np.where(valid, part.scores.astype(np.float64), -np.inf))
        starts.append(starts[-1] + part.k)
    scores = np.concatenate(masked, axis=1) if masked else np.empty((n, 0))
    k_out = min(k, scores.shape[1])
    positions = None
    if ordered:
        positions = np.concatenate([part.order for part in parts], axis=1).astype(np.int64)
        order = np.lexsort((positions, -scores), axis=1)[:, :k_out]
    else:
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k_out]
    top = np.take_along_axis(scores, order, axis=1)
    found = top > -np.inf
    source = np.searchsorted(np.asarray(starts), order, side="right") - 1
    docs = np.full((n, k_out), -1, dtype=np.int64)
    ids, offset = [], 0
    for p, part in enumerate(parts):
        rows, cols = np.nonzero(found & (source == p))
        numbers = part.docs[rows, order[rows, cols] - starts[p]]
        ids.append(part.doc_ids.take(pa.array(numbers)).cast(pa.large_string()))
        docs[rows, cols] = offset + np.arange(len(rows))
        offset += len(rows)
    counts = found.sum(axis=1).astype(np.int64)
    documents = None
    if all(part.documents is not None for part in parts):  # each hit keeps its document
        documents = [
            [
                parts[p].documents[i][c - starts[p]]
                for p, c in zip(
                    source[i, : counts[i]].tolist(), order[i, : counts[i]].tolist(), strict=True
                )
            ]
            for i in range(n)
        ]
    return SearchResults(
        docs=docs,
        scores=np.where(found, top, 0.0).astype(np.float32),
        counts=counts,
        doc_ids=pa.concat_arrays(ids) if ids else pa.array([], pa.large_string()),
        documents=documents,
        order=None
        if positions is None
        else np.where(found, np.take_along_axis(positions, order, axis=1), -1),
    )


def _merge_one_query(parts: Sequence[SearchResults], k: int, ordered: bool) -> SearchResults:
    """:func:`merge_topk` of one query without exclusions (what a service's search merges:
    its segments and write buffer), the same result without the numpy passes over the
    batch, whose fixed costs are several times a small collection's search."""
    candidates: list[tuple[float, int, int, int]] = []  # (-score, position, part, rank)
    for p, part in enumerate(parts):
        count = int(part.counts[0])
        if count:
            negated = (-part.scores[0, :count].astype(np.float64)).tolist()
            positions = part.order[0, :count].tolist() if ordered else [0] * count
            candidates += zip(negated, positions, [p] * count, range(count), strict=True)
    candidates.sort()
    k_out = min(k, sum(part.k for part in parts))
    top = candidates[:k_out]
    ranks: dict[int, list[int]] = {}
    for _, _, p, rank in top:
        ranks.setdefault(p, []).append(rank)
    ids = {p: iter(ids_at(parts[p].doc_ids, parts[p].docs[0, r])) for p, r in ranks.items()}
    found = len(top)
    docs = np.full((1, k_out), -1, dtype=np.int64)
    docs[0, :found] = np.arange(found)
    scores = np.zeros((1, k_out), dtype=np.float32)
    scores[0, :found] = [-score for score, _, _, _ in top]
    documents = None
    if all(part.documents is not None for part in parts):
        documents = [[parts[p].documents[0][rank] for _, _, p, rank in top]]
    order = None
    if ordered:
        order = np.full((1, k_out), -1, dtype=np.int64)
        order[0, :found] = [position for _, position, _, _ in top]
    return SearchResults(
        docs=docs,
        scores=scores,
        counts=np.array([found], dtype=np.int64),
        doc_ids=pa.array([next(ids[p]) for _, _, p, _ in top], pa.large_string()),
        documents=documents,
        order=order,
    )
