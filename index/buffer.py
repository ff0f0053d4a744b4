"""The write buffer: documents added since the last flush, searchable at once.

Rows are appended to growable document-major arrays (capacity doubles), so a write costs its
own terms: nothing is rebuilt. A row is never changed once written except for the sequence
number at which it stops being visible (``deleted_at``: a delete, or a newer version of the
same id), so a :class:`BufferView` (the rows and the sequence number of one moment) stays a
consistent point-in-time view while writes go on: row ``r`` is visible in a view at ``seq``
iff ``r < view.n_rows`` and ``deleted_at[r] > seq``. Search is exact, one document at a time
(:func:`lsr.kernels.forward.forward_topk`), with filters evaluated on the rows' stored records
and cached as they grow.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from lsr.index.filters import Filter
from lsr.index.results import SearchResults
from lsr.index.store import ID_FIELD, TableDocuments
from lsr.kernels.forward import forward_topk

NEVER = np.iinfo(np.int64).max  # deleted_at of a row that is still visible


def _grow(array: np.ndarray, needed: int) -> np.ndarray:
    """``array`` with room for ``needed`` entries (a doubled copy when full)."""
    if needed <= array.shape[0]:
        return array
    out = np.empty(max(needed, 2 * array.shape[0], 16), dtype=array.dtype)
    out[: array.shape[0]] = array
    return out


class WriteBuffer:
    """Append-only rows of (terms, weights), their ids, records and visibility; one writer
    (the collection's write lock), any number of readers through :meth:`view`."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.indptr = np.zeros(16, dtype=np.int64)
        self.terms = np.empty(256, dtype=np.int32)
        self.weights = np.empty(256, dtype=np.float32)
        self.deleted_at = np.empty(16, dtype=np.int64)
        self.ids: list[str] = []
        self.records: list[dict | None] = []
        self.row_of: dict[str, int] = {}  # id -> its visible row (the latest version)
        self.fields: set[str] = set()  # every field name of the stored records
        self.n_rows = 0
        self._masks: dict[str, np.ndarray] = {}  # filter key -> mask over the first rows
        self._mask_lock = threading.Lock()

    def __len__(self) -> int:
        """Visible documents now."""
        return len(self.row_of)

    def append(self, doc_id: str, terms: np.ndarray, weights: np.ndarray, record, seq: int):
        """Add a version of ``doc_id`` visible from ``seq``; an older one stops at ``seq``."""
        self.kill(doc_id, seq)
        self._add_row(doc_id, terms, weights, record, NEVER)

    def tail(self, start: int) -> WriteBuffer:
        """A new buffer of rows ``start:`` of this one, visible as they are here (after a
        flush took the first ``start`` rows into a segment)."""
        out = WriteBuffer(self.vocab_size)
        for r in range(start, self.n_rows):
            lo, hi = self.indptr[r], self.indptr[r + 1]
            deleted_at = int(self.deleted_at[r])
            out._add_row(
                self.ids[r], self.terms[lo:hi], self.weights[lo:hi], self.records[r], deleted_at
            )
        return out

    def _add_row(self, doc_id: str, terms, weights, record, deleted_at: int) -> None:
        n, nnz = self.n_rows, int(self.indptr[self.n_rows])
        end = nnz + terms.shape[0]
        terms_, weights_ = _grow(self.terms, end), _grow(self.weights, end)
        terms_[nnz:end] = terms
        weights_[nnz:end] = weights
        indptr_ = _grow(self.indptr, n + 2)
        indptr_[n + 1] = end
        deleted_ = _grow(self.deleted_at, n + 1)
        deleted_[n] = deleted_at
        # readers hold the old arrays, whose first rows are unchanged: swap in, then count
        self.terms, self.weights, self.indptr, self.deleted_at = terms_, weights_, indptr_, deleted_
        self.ids.append(doc_id)
        self.records.append(record)
        if record:
            self.fields.update(record)
        if deleted_at == NEVER:
            self.row_of[doc_id] = n
        self.n_rows = n + 1

    def kill(self, doc_id: str, seq: int) -> bool:
        """Make the visible version of ``doc_id`` invisible from ``seq``; False if none."""
        row = self.row_of.pop(doc_id, None)
        if row is None:
            return False
        self.deleted_at[row] = seq
        return True

    def vector(self, doc_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The visible version's (terms, weights), or None."""
        row = self.row_of.get(doc_id)
        if row is None:
            return None
        lo, hi = self.indptr[row], self.indptr[row + 1]
        return self.terms[lo:hi], self.weights[lo:hi]

    def record(self, doc_id: str) -> dict | None:
        row = self.row_of.get(doc_id)
        return None if row is None else self.records[row]

    def view(self, seq: int) -> BufferView:
        """The buffer as of write ``seq`` (the last applied), for searches."""
        return BufferView(
            self, self.indptr, self.terms, self.weights, self.deleted_at, self.n_rows, seq
        )

    def filter_mask(self, condition: Filter, n_rows: int) -> np.ndarray:
        """The filter's mask over rows ``0:n_rows``; rows never change, so a cached mask is
        extended with the new rows only."""
        key = condition.key()
        with self._mask_lock:
            cached = self._masks.get(key, np.zeros(0, dtype=bool))
        if cached.shape[0] < n_rows:
            lo = cached.shape[0]
            new = [self.records[r] or {ID_FIELD: self.ids[r]} for r in range(lo, n_rows)]
            cached = np.concatenate([cached, condition.mask(TableDocuments(new), len(new))])
            with self._mask_lock:
                if len(self._masks) > 32:
                    self._masks.clear()
                self._masks[key] = cached
        return cached[:n_rows]


@dataclass(frozen=True)
class BufferView:
    """The buffer's rows as of one sequence number (see the module docstring)."""

    buffer: WriteBuffer
    indptr: np.ndarray
    terms: np.ndarray
    weights: np.ndarray
    deleted_at: np.ndarray
    n_rows: int
    seq: int

    def live_rows(self) -> list[int]:
        """Rows visible in this view, in the order they were written."""
        return np.flatnonzero(self.visible()).tolist()

    def csr(self, rows: list[int]) -> sp.csr_array:
        """The vectors of ``rows`` as a CSR array (for a merge)."""
        lengths = np.diff(self.indptr[: self.n_rows + 1])[rows] if rows else np.zeros(0, np.int64)
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        pieces = [(self.indptr[r], self.indptr[r + 1]) for r in rows]
        terms = np.concatenate([self.terms[a:b] for a, b in pieces]) if rows else []
        weights = np.concatenate([self.weights[a:b] for a, b in pieces]) if rows else []
        return sp.csr_array(
            (np.asarray(weights, np.float32), np.asarray(terms, np.int32), indptr),
            shape=(len(rows), self.buffer.vocab_size),
        )

    def visible(self) -> np.ndarray:
        """uint8 per row: 1 where the row is visible in this view."""
        return (self.deleted_at[: self.n_rows] > self.seq).view(np.uint8)

    def search(
        self,
        q: sp.csr_array,
        k: int,
        condition: Filter | None = None,
        documents: bool = False,
        fields: list[str] | None = None,
        main: BufferView | None = None,
    ) -> SearchResults:
        """Exact top-k of the visible rows (that pass ``condition``); with ``documents`` the
        hits' stored records (``fields`` of them, None: all) are attached. ``main``: the main
        representation's view, whose records filters read, when this is an extra one."""
        allowed = np.ascontiguousarray((main or self).allowed(condition))
        rows, scores, counts = forward_topk(
            self.indptr, self.terms, self.weights, self.n_rows, allowed,
            q.indptr, q.indices, q.data, k, q.shape[1],
        )  # fmt: skip
        return (main or self).results(rows, scores, counts, documents, fields)

    def allowed(self, condition: Filter | None) -> np.ndarray:
        """uint8 per row: visible in this view and accepted by ``condition``."""
        allowed = self.visible()
        if condition is not None:
            allowed = allowed & self.buffer.filter_mask(condition, self.n_rows).view(np.uint8)
        return allowed

    def results(
        self,
        rows: np.ndarray,
        scores: np.ndarray,
        counts: np.ndarray,
        documents: bool = False,
        fields: list[str] | None = None,
    ) -> SearchResults:
        """Hits given as buffer rows (-1 pads) as :class:`SearchResults` over their ids."""
        found = rows >= 0
        hit_rows = rows[found].tolist()
        ids = [self.buffer.ids[r] for r in hit_rows]
        numbered = np.full(rows.shape, -1, dtype=np.int64)
        numbered[found] = np.arange(len(hit_rows))
        results = SearchResults(
            docs=numbered, scores=scores, counts=counts, doc_ids=pa.array(ids, pa.large_string())
        )
        if documents:
            records = [
                select_fields(self.buffer.records[r], self.buffer.ids[r], fields) for r in hit_rows
            ]
            results.documents = [
                records[numbered[i, 0] : numbered[i, 0] + counts[i]] if counts[i] else []
                for i in range(len(results))
            ]
        return results


def select_fields(record: dict | None, doc_id: str, fields: list[str] | None) -> dict:
    """The stored record of ``doc_id`` with only ``fields`` (None: all) besides ``_id``."""
    out = {ID_FIELD: doc_id}
    out.update(
        (k, v)
        for k, v in (record or {}).items()
        if k != ID_FIELD and (fields is None or k in fields)
    )
    return out
