"""A collection's state in memory: its segments with their deletions, the write buffer, and
the point-in-time snapshots that searches read.

:meth:`CollectionState.apply` is the one place a logged write takes effect, whether it is
replayed from the log on open or made by the writer now: an upsert appends a row to the
write buffer, and an upsert or a delete marks the previous version of the document deleted
wherever it lives (an older buffer row, or a segment). A segment's deletions are kept as the
sequence number of the write that deleted each document (:class:`TrackedSegment`), so the
writer can say which documents were deleted as of any sequence number (what a commit point
records), while searches read a boolean mask replaced as a whole on each change (copy on
write), so a :class:`Snapshot` never changes under a search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lsr.index.buffer import NEVER, BufferView, WriteBuffer
from lsr.index.dense import DenseBuffer
from lsr.index.merge_policy import SegmentInfo
from lsr.index.representations import SPARSE, Representation
from lsr.index.segment import Segment
from lsr.index.store import StoreSpec


@dataclass(frozen=True)
class SegmentView:
    """A segment as one snapshot sees it."""

    segment: Segment
    live: np.ndarray | None  # bool per document, False where deleted (None: none is)
    n_live: int


@dataclass(frozen=True)
class Snapshot:
    """What a search sees: one point in time, replaced as a whole by each write."""

    segments: tuple[SegmentView, ...]
    buffer: BufferView  # the documents written since the last flush, as of this write
    n_docs: int
    extras: dict  # extra representation -> its buffer rows: a BufferView, or dense rows


class TrackedSegment:
    """One segment of a collection's state: when each of its documents was deleted, the
    deletion file the last commit point names for it, and the view searches read."""

    __slots__ = ("segment", "committed", "deleted_at", "view")

    def __init__(
        self, segment: Segment, committed: dict | None = None, deleted: np.ndarray | None = None
    ) -> None:
        self.segment = segment
        self.committed = committed  # the deletion file entry of the last commit point
        self.deleted_at: np.ndarray | None = None  # int64 per document; NEVER while live
        self.view = SegmentView(segment, None, segment.n_docs)
        if deleted is not None and deleted.any():  # deleted before every logged write: seq 0
            self.delete(np.flatnonzero(deleted), 0)

    @property
    def name(self) -> str:
        return self.segment.name

    def number_of(self, doc_id: str) -> int | None:
        """The document number of ``doc_id`` here if it is live, else None."""
        try:
            number = self.segment.index.doc_index(doc_id)
        except KeyError:
            return None
        if self.deleted_at is not None and self.deleted_at[number] != NEVER:
            return None
        return number

    def delete(self, numbers: np.ndarray, seq: int | np.ndarray) -> None:
        """Mark live documents ``numbers`` deleted by write(s) ``seq``."""
        if not len(numbers):
            return
        n = self.segment.n_docs
        if self.deleted_at is None:
            self.deleted_at = np.full(n, NEVER, dtype=np.int64)
        self.deleted_at[numbers] = seq
        live = np.ones(n, dtype=bool) if self.view.live is None else self.view.live.copy()
        live[numbers] = False
        self.view = SegmentView(self.segment, live, self.view.n_live - len(numbers))

    def deleted_as_of(self, seq: int) -> np.ndarray | None:
        """The documents deleted by writes up to ``seq`` (None: none)."""
        if self.deleted_at is None:
            return None
        return self.deleted_at <= seq

    def info(self) -> SegmentInfo:
        """What the merge policy weighs."""
        n = self.segment.n_docs
        return SegmentInfo(self.name, n, n - self.view.n_live, self.segment.bytes)


class CollectionState:
    """Segments, write buffer and sequence numbers of a collection; changed by one writer
    (under its write lock) or replaced whole (a reader's refresh)."""

    def __init__(
        self,
        commit: dict,
        vocab: tuple[list[str], str],
        segments: list[TrackedSegment],
        store: StoreSpec,
        extras: tuple[Representation, ...] = (),
    ) -> None:
        self.commit = commit
        self.vocab, self.vocab_hash = vocab
        self.segments = segments
        self.store = store
        self.extras = extras
        self.buffer = WriteBuffer(len(self.vocab))
        self.extra_buffers: dict[str, WriteBuffer | DenseBuffer] = {
            r.name: WriteBuffer(r.vocab["size"]) if r.kind == SPARSE else DenseBuffer(r.dim)
            for r in extras
        }
        self.applied = int(commit["applied_seq"])  # the segments hold the writes up to this
        self.seq = self.applied  # the last write applied
        self.snapshot = self.publish()

    @property
    def generation(self) -> int:
        return int(self.commit["generation"])

    def locate(self, doc_id: str) -> tuple[TrackedSegment, int] | None:
        """The segment holding the live version of ``doc_id`` and its number there."""
        for tracked in reversed(self.segments):
            number = tracked.number_of(doc_id)
            if number is not None:
                return tracked, number
        return None

    def exists(self, doc_id: str) -> bool:
        return doc_id in self.buffer.row_of or self.locate(doc_id) is not None

    def apply(self, op: dict, seq: int) -> int:
        """Apply logged operation number ``seq``; returns how many segment documents it
        deleted (a cue for the merge policy)."""
        gone = []
        if op["op"] == "upsert":
            indptr, indices, data, docs = op["indptr"], op["indices"], op["data"], op.get("docs")
            for i, doc_id in enumerate(op["ids"]):
                lo, hi = int(indptr[i]), int(indptr[i + 1])
                if not self.buffer.kill(doc_id, seq):
                    gone.append(doc_id)
                terms = np.asarray(indices[lo:hi], dtype=np.int32)
                weights = np.asarray(data[lo:hi], dtype=np.float32)
                record = docs[i] if docs is not None else None
                self.buffer.append(doc_id, terms, weights, record, seq)
                self._append_extras(op.get("extras") or {}, i, doc_id, seq)
        else:
            gone = [d for d in op["ids"] if not self.buffer.kill(d, seq)]
            for buffer in self.extra_buffers.values():
                if isinstance(buffer, WriteBuffer):
                    for doc_id in op["ids"]:
                        buffer.kill(doc_id, seq)
        self.seq = seq
        return self._delete_in_segments(gone, seq)

    def _append_extras(self, extras: dict, i: int, doc_id: str, seq: int) -> None:
        """Row ``i`` of an upsert's extra representations, appended beside the main row."""
        for name, buffer in self.extra_buffers.items():
            rows = extras[name]
            if isinstance(buffer, DenseBuffer):
                buffer.append(rows[i])
            else:
                lo, hi = int(rows.indptr[i]), int(rows.indptr[i + 1])
                terms = np.asarray(rows.indices[lo:hi], dtype=np.int32)
                buffer.append(doc_id, terms, np.asarray(rows.data[lo:hi], np.float32), None, seq)

    def cut_buffer(self, start: int) -> None:
        """Keep the buffer rows from ``start`` on (a flush took the others into a segment)."""
        self.buffer = self.buffer.tail(start)
        self.extra_buffers = {n: b.tail(start) for n, b in self.extra_buffers.items()}

    def _delete_in_segments(self, ids: list[str], seq: int) -> int:
        found: dict[int, list[int]] = {}
        positions = {id(t): p for p, t in enumerate(self.segments)}
        for doc_id in ids:
            hit = self.locate(doc_id)
            if hit is not None:
                found.setdefault(positions[id(hit[0])], []).append(hit[1])
        for position, numbers in found.items():
            self.segments[position].delete(np.unique(np.asarray(numbers, np.int64)), seq)
        return sum(len(n) for n in found.values())

    def publish(self) -> Snapshot:
        """A snapshot of the state after the last applied write (nothing is rebuilt)."""
        views = tuple(t.view for t in self.segments)
        n_docs = sum(v.n_live for v in views) + len(self.buffer)
        extras = {
            name: buffer.view(self.seq) if isinstance(buffer, WriteBuffer)
            else buffer.view(self.buffer.n_rows)
            for name, buffer in self.extra_buffers.items()
        }  # fmt: skip
        self.snapshot = Snapshot(views, self.buffer.view(self.seq), n_docs, extras)
        return self.snapshot
