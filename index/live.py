"""A live collection: immutable segments named by commit points, a write buffer and a
write-ahead log, searched as one; in the manner of Lucene's segments and commit points.

Layout and file formats: :mod:`lsr.index.commit`. Writes: each upsert or delete is appended
to the write-ahead log (:mod:`lsr.index.wal`: framed, checksummed, numbered records) and
fsynced *before* it is acknowledged, then applied (:class:`~lsr.index.snapshot.CollectionState`):
new documents go to the write buffer (:mod:`lsr.index.buffer`: a write costs its own terms,
nothing is rebuilt, searchable at once), and the previous version of a document is marked
deleted where it lives. Deletions are applied inside the search kernels as masks, so a search
returns k live hits in one pass.

**Flush**: when the buffer holds ``flush_threshold`` documents (or on :meth:`flush`), its
documents as of one sequence number ``s`` become a new segment, built without the write
lock; a new commit point names it (with new deletion files for the segments whose deletions
changed up to ``s``) and records ``applied_seq = s``; the log is then trimmed to the records
after ``s``. Writes wait only while the commit point is written and the state swapped.

**Merges** (background): a :class:`~lsr.index.merge_policy.TieredMergePolicy` picks segments
of similar size (or one with many deletions); their live documents are rewritten into one
segment, without the write lock, and a new commit point replaces them by it. Deletions made
meanwhile are carried over to the merged segment. Merges never rewrite the whole collection,
and never block searches.

**Durability**: a crash (even ``kill -9``) at any point leaves the last commit point and the
log, and opening replays the log's records after ``applied_seq``: no acknowledged write is
lost. A failed append is cut back off the log and reported as :class:`WriteUnavailableError`
(the service answers 503 with ``Retry-After``); writes are then refused without touching the
disk until a back-off has passed. A failed flush or merge (a full disk) leaves the previous
commit point as it was and is retried after its own back-off. Every commit point records the
log's checkpoint (the last sequence number acknowledged, rewritten every
``checkpoint_seconds`` while writing): a log that ends before it, is missing, has gaps, belongs
to another collection or has a bad record before valid ones is an error on open, never a
silent loss; only the bytes of an append still in flight (nothing valid behind them) are
taken for a torn tail and cut off.

**One writer, many readers**: a writer holds the collection's lock (:mod:`lsr.index.lock`)
from open to :meth:`close`; a second writer, in this process or another, gets a
:class:`CollectionLockedError`. ``read_only=True`` opens take no lock and never modify the
directory: they see the latest commit point plus the log as it was when they opened it (or
when :meth:`refresh` last looked), and hold a lease on that commit point so the writer keeps
its files. Index directories of formats 1 to 3 are read as one segment, and converted by the
first writer (:mod:`lsr.index.collection`).
"""

from __future__ import annotations

import errno
import json
import logging
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from lsr.checks import positive_int
from lsr.errors import InputError
from lsr.index import wal
from lsr.index.algorithms import algorithm_code, check_query_terms
from lsr.index.backoff import Backoff
from lsr.index.buffer import WriteBuffer, select_fields
from lsr.index.collection import (
    WAL_NAME,
    convert_legacy,
    legacy_commit,
    legacy_log,
    read_vocab,
)
from lsr.index.commit import (
    Lease,
    generations,
    is_collection,
    open_latest,
)
from lsr.index.deletes import read_deletes
from lsr.index.dense import as_results, brute_force, check_vectors
from lsr.index.errors import (
    EmptyDocumentError,
    IndexFormatError,
    ReadOnlyError,
    WriteUnavailableError,
)
from lsr.index.filters import Filter, parse_filter
from lsr.index.inverted import Index, check_vocab
from lsr.index.lock import WriterLock
from lsr.index.maintenance import SegmentMaintenance, describe_error, return_freed_memory
from lsr.index.merge_policy import TieredMergePolicy
from lsr.index.representations import SPARSE, check_extra_vectors, extras_of, main_name
from lsr.index.results import SearchResults, merge_topk
from lsr.index.segment import Segment
from lsr.index.snapshot import CollectionState, Snapshot, TrackedSegment
from lsr.index.storage import read_manifest, recover
from lsr.index.store import ID_FIELD, StoreSpec
from lsr.index.threads import check_threads
from lsr.index.validation import as_sparse_batch, check_doc_ids, check_k, empty_rows

logger = logging.getLogger(__name__)
SEARCH_OPTIONS = ("algorithm", "theta", "query_terms", "threads")


class LiveIndex(SegmentMaintenance):
    """A collection, searchable while being updated; see the module docstring."""

    def __init__(
        self,
        path: str | Path,
        flush_threshold: int = 10_000,
        read_only: bool = False,
        checkpoint_seconds: float = 1.0,
        merge_policy: TieredMergePolicy | None = None,
        background: bool = True,
    ) -> None:
        """Open the collection at ``path``. ``flush_threshold``: documents in the write
        buffer that make a new segment. ``background``: flush and merge in a thread of this
        object (else only when :meth:`flush`, :meth:`merge` or :meth:`maintain` is called)."""
        positive_int(flush_threshold, "flush_threshold")
        if not isinstance(checkpoint_seconds, (int, float)) or not checkpoint_seconds >= 0:
            raise InputError(
                f"checkpoint_seconds must be a number >= 0 (inf: at open and close only), "
                f"got {checkpoint_seconds!r}."
            )
        if merge_policy is not None and not isinstance(merge_policy, TieredMergePolicy):
            raise InputError("merge_policy must be a TieredMergePolicy.")
        self.path = Path(path)
        self.flush_threshold = flush_threshold
        self.read_only = read_only
        self.checkpoint_seconds = checkpoint_seconds
        self.merge_policy = merge_policy or TieredMergePolicy()
        self.background = background and not read_only
        self.write_backoff = Backoff(first=1.0, cap=30.0)
        self.flush_backoff = Backoff(first=1.0, cap=300.0)
        self.merge_backoff = Backoff(first=1.0, cap=300.0)
        self._write_lock = threading.Lock()  # writes, and swaps of what searches see
        self._commit_lock = threading.Lock()  # commit points (taken before the write lock)
        self._flush_lock = threading.Lock()  # one flush at a time
        self._merge_lock = threading.Lock()  # one merge at a time
        self._names_lock = threading.Lock()
        self.bytes_written = 0  # by this writer: log, segments, deletion files, commit points
        self.flushes = self.merges = 0
        self.flush_seconds = self.merge_seconds = 0.0
        self._wal: wal.LogWriter | None = None
        self._lease: Lease | None = None
        self._building: set[str] = set()  # segments being written by a flush or merge
        self._merging: frozenset[str] = frozenset()
        self._worker: threading.Thread | None = None
        self._wake = threading.Event()
        self._closing = False
        self._loaded_from: tuple | None = None  # what refresh compares (see _fingerprint)
        self._extra_vocabs: dict[str, tuple[list[str], str]] = {}
        self._marked_at = time.monotonic()
        if not self.path.is_dir() and not any(self.path.parent.glob(f".{self.path.name}.old-*")):
            read_manifest(self.path)  # no collection here (nor one to recover): say so
        self._lock = None if read_only else WriterLock(self.path).acquire()
        try:
            if not read_only:
                for action in recover(self.path):
                    logger.warning("%s: %s after an interrupted write", self.path, action)
                if not is_collection(self.path):
                    convert_legacy(self.path)
            self._install(*self._load())
            if not read_only:
                self._wal = wal.LogWriter(self.path / WAL_NAME, self._log_end)
                self._next_segment = int(self._state.commit["next_segment"])
                with self._commit_lock:
                    self._checkpoint_locked()
                    self._collect_garbage(startup=True)
        except BaseException:
            self._release()
            raise

    # ---- opening -------------------------------------------------------------------------

    def _load(self, attempts: int = 10) -> tuple[CollectionState, Lease | None]:
        """The collection's state as of its latest commit point plus the log. A reader that
        opens while the writer commits may read a commit point and then a log already
        trimmed past it, or find an index of format 3 being converted: it looks again."""
        for attempt in range(attempts):
            self._loaded_from = self._fingerprint()  # before: a later change shows as new
            legacy = self.read_only and not is_collection(self.path)
            try:
                return self._load_legacy() if legacy else self._load_latest()
            except (IndexFormatError, FileNotFoundError):
                if not self.read_only or attempt == attempts - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _load_latest(self) -> tuple[CollectionState, Lease | None]:
        commit, lease = open_latest(self.path, lease=self.read_only)
        try:
            vocab = self._vocab_of(commit)
            extras = extras_of(commit)
            self._extra_vocabs = self._extra_vocabs_of(extras)
            current = getattr(self, "_state", None)  # a refresh keeps the segments it has
            loaded = {t.name: t.segment for t in current.segments} if current else {}
            tracked = []
            for entry in commit["segments"]:
                segment = loaded.get(entry["name"])
                if segment is None:
                    segment = Segment.load(
                        self.path, entry["name"], vocab, True, extras, self._extra_vocabs
                    )
                deleted = None
                if entry.get("deletes"):
                    deleted = read_deletes(segment.path, entry["deletes"], segment.n_docs)
                tracked.append(TrackedSegment(segment, entry.get("deletes"), deleted))
            store = StoreSpec.from_dict(commit.get("store") or {})
            state = CollectionState(commit, vocab, tracked, store, extras)
            self._replay(state, commit["collection_id"], commit.get("wal") or {})
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        return state, lease

    def _vocab_of(self, commit: dict) -> tuple[list[str], str]:
        current = getattr(self, "_state", None)
        if current is not None and current.vocab_hash == commit["vocab"].get("hash"):
            return current.vocab, current.vocab_hash
        return read_vocab(self.path, commit["vocab"])

    def _extra_vocabs_of(self, extras) -> dict[str, tuple[list[str], str]]:
        """The vocabularies of the extra sparse representations (kept when unchanged)."""
        known = getattr(self, "_extra_vocabs", {})
        out = {}
        for rep in extras:
            if rep.kind != SPARSE:
                continue
            have = known.get(rep.name)
            out[rep.name] = (
                have if have and have[1] == rep.vocab["hash"] else read_vocab(self.path, rep.vocab)
            )
        return out

    def _load_legacy(self) -> tuple[CollectionState, None]:
        """An index directory of formats 1 to 3, read as a collection of one segment."""
        manifest = read_manifest(self.path)
        base = Index.load(self.path)
        ops = legacy_log(self.path, manifest, writer=False)
        commit = legacy_commit(base, manifest, ".", int((manifest.get("wal") or {}).get("seq", 0)))
        store = StoreSpec.from_dict(commit["store"])
        segments = [TrackedSegment(Segment(".", self.path, base))] if base.n_docs else []
        state = CollectionState(commit, (base.vocab, base.vocab_hash), segments, store)
        for op in ops:
            state.apply(op, state.seq + 1)
        self._log_end = None  # refreshes read the legacy log whole
        return state, None

    def _replay(self, state: CollectionState, collection_id: str, mark: dict) -> None:
        """Apply the log's records after the state's ``applied_seq``; a writer also cuts off
        a torn tail (at open) or creates a missing log."""
        log = self.path / WAL_NAME
        state_of_log = wal.inspect(log, collection_id, state.applied + 1, mark)
        if state_of_log.kind not in (wal.OK, wal.ABSENT):
            raise wal.LogDamagedError(state_of_log.problem)
        scan = state_of_log.scan
        if scan is None:
            self._log_end = 0 if self.read_only else wal.create(log, collection_id,
                                                                state.applied + 1)  # fmt: skip
            return
        if scan.torn_bytes:
            action = "ignored" if self.read_only else "cut off"
            logger.warning("%s: %s %d bytes of an append interrupted before it was acknowledged",
                           log, action, scan.torn_bytes)  # fmt: skip
        replayed = 0
        for record in scan.records:
            if record.seq > state.applied:
                state.apply(wal.decode(record.payload, f"{log} record {record.seq}"), record.seq)
                replayed += 1
        self._log_end = scan.end
        logger.info("opened %s: replayed %d log records", self.path, replayed)

    def _install(self, state: CollectionState, lease: Lease | None) -> None:
        with self._write_lock:
            self._state = state
            self._snapshot = state.publish()
            old, self._lease = self._lease, lease
        if old is not None:
            old.release()

    def refresh(self) -> bool:
        """Make the latest state visible: a writer flushes its buffer into a segment (its
        searches already see every write); a reader opens the latest commit point and the
        log as they are now (segments it already has are kept, not read again). Returns
        whether anything changed."""
        if not self.read_only:
            return self.flush() is not None
        now = self._fingerprint()
        if now == self._loaded_from:
            return False
        if not self._apply_log_tail(now):
            self._install(*self._load())
            return_freed_memory()  # the replaced state's buffer and segments
        return True

    def _apply_log_tail(self, now: tuple) -> bool:
        """A reader whose commit point is still the newest and whose log only grew applies
        the records appended since its last read, as the writer applied them, instead of
        reading the commit point and the whole log again (which costs as much as the log
        is long, at every refresh). False when that is not the case."""
        before = self._loaded_from
        if (
            self._log_end is None  # an index of formats 1-3: its own log
            or before is None
            or (now[0] != before[0] and not self._follow_checkpoint())
            or before[1] is None
            or now[1] is None
            or now[1][0] != before[1][0]
            or now[1][1] < before[1][1]
        ):
            return False
        state = self._state
        tail = wal.read_from(self.path / WAL_NAME, self._log_end, state.seq + 1, now[1][0])
        if tail is None:
            return False
        records, end = tail
        with self._write_lock:
            for record in records:
                op = wal.decode(record.payload, f"{self.path / WAL_NAME} record {record.seq}")
                state.apply(op, record.seq)
            if records:
                self._snapshot = state.publish()
            self._log_end, self._loaded_from = end, now
        return True

    def _follow_checkpoint(self) -> bool:
        """Move a reader to the newest commit point when it differs from its own only by the
        log checkpoint (the writer records one every ``checkpoint_seconds`` while writing):
        same segments, deletions and applied writes, so the log tail applies on top. False
        (nothing changed here) when segments or anything else moved on."""
        commit, lease = open_latest(self.path, lease=True)
        if _without_checkpoint(commit) != _without_checkpoint(self._state.commit):
            lease.release()
            return False
        with self._write_lock:
            self._state.commit = commit
            old, self._lease = self._lease, lease
        if old is not None:
            old.release()
        return True

    def _fingerprint(self) -> tuple:
        """What changes when the writer commits or logs: the newest commit point (or, for an
        index of format 3, its manifest) and the log's identity and size."""

        def stat(path: Path) -> tuple | None:
            try:
                st = path.stat()
            except FileNotFoundError:
                return None
            return st.st_ino, st.st_size, st.st_mtime_ns

        found = generations(self.path)
        head = found[-1] if found else stat(self.path / "manifest.json")
        return head, stat(self.path / WAL_NAME)

    # ---- reads ---------------------------------------------------------------------------

    @property
    def vocab(self) -> list[str]:
        return self._state.vocab

    @property
    def store_spec(self) -> StoreSpec:
        return self._state.store

    @property
    def n_docs(self) -> int:
        return self._snapshot.n_docs

    @property
    def segments(self) -> list[Index]:
        """The indexes of the segments searches see now (the write buffer is beside them)."""
        return [view.segment.index for view in self._snapshot.segments]

    def check_vocab(self, vocab: Sequence[str], representation: str | None = None) -> None:
        """Refuse a query vocabulary that differs from the collection's (or from that of its
        extra sparse ``representation``)."""
        if representation is None or representation == self.main_name:
            check_vocab(vocab, self._state.vocab_hash, len(self.vocab))
            return
        rep = self.representation(representation)
        if rep.kind != SPARSE:
            raise InputError(f"representation {representation!r} is dense: it has no vocabulary.")
        check_vocab(vocab, rep.vocab["hash"], rep.vocab["size"])

    @property
    def main_name(self) -> str:
        """The name of the main sparse representation (``sparse`` when none was given)."""
        return main_name(self._state.commit) or "sparse"

    @property
    def extras(self) -> tuple:
        """The extra representations (:class:`~lsr.index.representations.Representation`)."""
        return self._state.extras

    @property
    def representations(self) -> dict[str, str]:
        """Every representation's name and kind (``sparse``/``dense``), the main one first."""
        return {self.main_name: SPARSE, **{r.name: r.kind for r in self.extras}}

    def representation(self, name: str):
        """The extra representation called ``name``; an error naming the known ones."""
        for rep in self.extras:
            if rep.name == name:
                return rep
        known = ", ".join(self.representations)
        raise InputError(f"{self.path.name} has no representation {name!r} (it has: {known}).")

    def as_index(self, snapshot: Snapshot | None = None) -> Index:
        """The live documents as one in-memory :class:`Index` (postings only; for benchmarks
        and evaluation): the only segment's index when there is one segment without
        deletions and the buffer is empty, else the segments' live documents and the
        buffer's merged. ``snapshot``: as of that snapshot (default: the current one)."""
        snap = snapshot or self._snapshot
        views = [v for v in snap.segments if v.n_live]
        rows = snap.buffer.live_rows()
        if len(views) == 1 and views[0].live is None and not rows:
            return views[0].segment.index
        builder = self._builder()
        for view in views:
            index = view.segment.index
            keep = np.arange(index.n_docs) if view.live is None else np.flatnonzero(view.live)
            builder.add(*index.rows(keep))
        if rows:
            builder.add(snap.buffer.csr(rows), [snap.buffer.buffer.ids[r] for r in rows])
        logger.info("%s: merged %d segments and the write buffer into one index in memory",
                    self.path, len(views))  # fmt: skip
        return builder.finish()

    def live_documents(self, batch_size: int = 1024) -> tuple[Index, Iterator[list[dict]]]:
        """The live documents as one :class:`Index` (:meth:`as_index`) and their stored
        records in the same order, ``batch_size`` at a time (``_id`` alone where nothing is
        stored), both of one snapshot: what an export writes."""
        snap = self._snapshot
        positive_int(batch_size, "batch_size")

        def records() -> Iterator[list[dict]]:
            for view in snap.segments:
                if not view.n_live:
                    continue
                n = view.segment.n_docs
                keep = np.arange(n) if view.live is None else np.flatnonzero(view.live)
                for lo in range(0, keep.size, batch_size):
                    yield view.segment.documents(keep[lo : lo + batch_size], None)
            buffer = snap.buffer.buffer
            rows = snap.buffer.live_rows()
            for lo in range(0, len(rows), batch_size):
                yield [
                    select_fields(buffer.records[r], buffer.ids[r], None)
                    for r in rows[lo : lo + batch_size]
                ]

        return self.as_index(snap), records()

    def warm_up(self) -> None:
        """Load (or compile) every Numba kernel a server needs before its first request: the
        searches of segments and of the write buffer, the lookups of reads by id and explain,
        and (a writer) the build and write of a segment by a flush or merge (into a scratch
        folder: the Arrow and zstd writers' buffers too). No request then pays for them, and
        the memory they take is there from the start rather than after the first flush."""
        q = sp.csr_array((np.ones(1, np.float32), ([0], [0])), shape=(1, len(self.vocab)))
        self.search(q, 1)
        self.search(sp.vstack([q, q], format="csr"), 1)
        buffer = WriteBuffer(len(self.vocab))
        buffer.append("warm-up", q.indices, q.data, None, 1)
        buffer.view(1).search(q, 1)
        segment = next((s for s in self.segments if s.n_docs), None)
        if segment is not None:  # the lookups of GET /documents and explain
            segment.term_weights(np.zeros(1, np.int64), q.indices)
            segment.document_vector(0)
        if not self.read_only:  # a flush's build and write, into a scratch folder
            builder = self._builder()
            builder.add(q, ["warm-up"])
            stores = self.store_spec.stores
            documents = [{ID_FIELD: "warm-up", "text": "warm-up"}] if stores else None
            with tempfile.TemporaryDirectory(prefix="lsr-warm-up-") as scratch:
                built = Segment.write(
                    Path(scratch), "warm-up", builder.finish(), documents, self._vocab_pair()
                )
                built.index.search(q, 1)
                built.index.rows(np.zeros(1, np.int64))

    def postings_of(self, terms: np.ndarray) -> int:
        """How many postings a query with these term ids scores at most (its lists in every
        segment, plus the write buffer's postings): what an exhaustive search costs, known
        before searching. The service runs searches up to a bound of it on its event loop."""
        snap = self._snapshot
        terms = np.asarray(terms)
        total = int(snap.buffer.indptr[snap.buffer.n_rows])
        for view in snap.segments:  # a query's few terms: a Python sum beats numpy's set-up
            total += sum(view.segment.index.list_lengths[terms].tolist())
        return total

    def search(
        self,
        queries: sp.csr_array | np.ndarray,
        k: int = 10,
        filter: Filter | dict | str | None = None,
        fields: Sequence[str] | None = None,
        representation: str | None = None,
        **options,
    ) -> SearchResults:
        """Top-k over the segments and the write buffer, merged exactly
        (:func:`~lsr.index.results.merge_topk`; ties: segment order, then document order,
        the buffer last). Deleted documents and documents ``filter`` rejects are excluded
        inside the kernels (one pass, k hits; fewer when fewer documents pass). ``fields``
        attaches each hit's stored document (those fields and ``_id``; ``["*"]``: all of
        them). ``representation``: which of the collection's representations to search
        (default the main one; an extra sparse one takes CSR queries over its vocabulary, a
        dense one a float32 matrix). ``options`` as for :meth:`Index.search` (``algorithm``,
        ``theta``, ``query_terms``, ``threads``); a dense one takes ``ef_search`` (HNSW) and
        ``nprobe`` (IVF)."""
        k = check_k(k)
        rep = None
        if representation is not None and representation != self.main_name:
            rep = self.representation(representation)
        snap = self._snapshot
        if rep is None or rep.kind == SPARSE:
            _check_options(options)
            size = len(self.vocab) if rep is None else rep.vocab["size"]
            q = as_sparse_batch(queries, size, "Query vectors")
        else:
            _check_dense_options(options)
            q = check_vectors(queries, rep.dim, "Query vectors")
        condition = self._check_filter(snap, filter)
        selected = _check_fields(fields)
        parts = []
        for view in snap.segments:
            if view.n_live == 0:
                continue
            allowed = view.live
            if condition is not None:
                mask = view.segment.filter_mask(condition)
                allowed = mask if allowed is None else allowed & mask
            if rep is None:
                results = view.segment.index.search(q, k, allowed=allowed, **options)
            elif rep.kind == SPARSE:
                part = view.segment.extras[rep.name]
                results = part.search(q, k, allowed=allowed, **options)
            else:
                numbers, scores = view.segment.extras[rep.name].search(q, k, allowed, **options)
                results = as_results(numbers, scores, view.segment.index.doc_ids)
            if fields is not None:
                results.documents = [
                    view.segment.documents(results.docs[i, : results.counts[i]], selected)
                    for i in range(len(results))
                ]
            parts.append(results)
        if snap.buffer.n_rows:
            parts.append(self._search_buffer(snap, rep, q, k, condition, fields, selected))
        if not parts:
            return _no_hits(q.shape[0], fields is not None)
        return parts[0] if len(parts) == 1 else merge_topk(parts, k)

    @staticmethod
    def _search_buffer(snap: Snapshot, rep, q, k: int, condition, fields, selected):
        """The write buffer's top-k in one representation (exact)."""
        documents = fields is not None
        if rep is None:
            return snap.buffer.search(q, k, condition, documents, selected)
        part = snap.extras[rep.name]
        if rep.kind == SPARSE:
            return part.search(q, k, condition, documents, selected, main=snap.buffer)
        allowed = snap.buffer.allowed(condition).astype(bool)
        rows, scores = brute_force(part[: snap.buffer.n_rows], q, k, allowed)
        counts = (rows >= 0).sum(axis=1).astype(np.int64)
        return snap.buffer.results(rows, scores, counts, documents, selected)

    def _check_filter(self, snap: Snapshot, spec) -> Filter | None:
        """The filter of ``spec`` after checking that the collection stores what it reads."""
        if spec is None:
            return None
        condition = parse_filter(spec)
        known: set[str] = set(snap.buffer.buffer.fields)
        stores = bool(known)
        for view in snap.segments:
            if view.segment.index.store is not None:
                known.update(view.segment.index.store.field_names)
                stores = True
        if self.store_spec.mode == "fields":
            known.update(self.store_spec.fields)
        if not stores and not self.store_spec.stores:
            raise InputError(
                f"{self.path} stores no documents, so it cannot be filtered; rebuild it with "
                "--store all (or fields:...) to filter on fields."
            )
        unknown = sorted(f for f in condition.fields() if f.split(".")[0] not in known)
        if unknown and snap.n_docs:  # (an empty collection: nothing to match, nothing wrong)
            raise InputError(
                f"filter field {unknown[0]!r} is not stored in {self.path.name} "
                f"(stored fields: {', '.join(sorted(known)) or 'none'})."
            )
        return condition

    def _find(self, doc_id: str) -> tuple | None:
        """Where the live version of ``doc_id`` is, under the write lock (one consistent
        state): ``("buffer", terms, weights, record)`` or ``("segment", segment, number)``."""
        with self._write_lock:
            return _where(self._state, doc_id)

    def contains(self, doc_ids: Sequence[str]) -> list[bool]:
        """Whether each document exists (live: written and not deleted), in one state."""
        with self._write_lock:
            return [self._state.exists(d) for d in doc_ids]

    def document(self, doc_id: str, fields: Sequence[str] | None = None) -> dict | None:
        """The stored record of a document (``_id`` plus its stored fields, or only
        ``fields``), or None if it does not exist or was deleted."""
        selected = _check_fields(fields)
        found = self._find(doc_id)
        if found is None:
            return None
        if found[0] == "buffer":
            return select_fields(found[3], doc_id, selected)
        return found[1].documents(np.asarray([found[2]]), selected)[0]

    def get(self, doc_id: str) -> dict[str, float] | None:
        """The stored vector of a document, or None if it does not exist (or was deleted)."""
        found = self._find(doc_id)
        if found is None:
            return None
        if found[0] == "buffer":
            terms, weights = found[1], found[2]
            return {self.vocab[t]: float(w) for t, w in zip(terms, weights, strict=True)}
        return found[1].index.document_vector(found[2])

    def explain(self, doc_ids: Sequence[str], terms: np.ndarray) -> np.ndarray:
        """Documents' weights for the given term ids, (len(doc_ids), len(terms)); zeros for a
        document that does not exist. Compiled binary searches, no per-term Python loop."""
        terms = np.asarray(terms, dtype=np.int64)
        out = np.zeros((len(doc_ids), len(terms)), dtype=np.float32)
        by_segment: dict[str, tuple[Segment, list[int], list[int]]] = {}
        with self._write_lock:  # one consistent state for all of them
            places = [_where(self._state, doc_id) for doc_id in doc_ids]
        for i, found in enumerate(places):
            if found is None:
                continue
            if found[0] == "buffer":
                doc_terms, weights = found[1], found[2]
                pos = np.minimum(np.searchsorted(doc_terms, terms), max(len(doc_terms) - 1, 0))
                hit = doc_terms[pos] == terms if len(doc_terms) else np.zeros(len(terms), bool)
                out[i, hit] = weights[pos[hit]]
            else:
                entry = by_segment.setdefault(found[1].name, (found[1], [], []))
                entry[1].append(i)
                entry[2].append(found[2])
        for segment, rows, numbers in by_segment.values():
            out[rows] = segment.index.term_weights(np.asarray(numbers, dtype=np.int64), terms)
        return out

    def stats(self) -> dict:
        state, snap = self._state, self._snapshot
        log = self.path / WAL_NAME
        views = snap.segments
        return {
            "n_docs": snap.n_docs,
            "segments": len(views),
            "segment_docs": sum(v.segment.n_docs for v in views),
            "deleted_docs": sum(v.segment.n_docs - v.n_live for v in views),
            "buffer_docs": len(state.buffer),
            "vocab_size": len(self.vocab),
            "representations": self.representations,
            "postings": sum(v.segment.index.n_postings for v in views)
            + int(snap.buffer.indptr[snap.buffer.n_rows]),
            "last_seq": state.seq,
            "flushed_seq": state.applied,
            "log_records": state.seq - state.applied,
            "generation": state.generation,
            "bytes_written": self.bytes_written,
            "wal_bytes": log.stat().st_size if log.exists() else 0,
            "read_only": self.read_only,
            "writable": self.writable,
            "writes": self.write_backoff.to_dict(),
            "flushes": {
                "count": self.flushes,
                "seconds": self.flush_seconds,
                **self.flush_backoff.to_dict(),
            },
            "merges": {
                "count": self.merges,
                "seconds": self.merge_seconds,
                "running": sorted(self._merging),
                **self.merge_backoff.to_dict(),
            },
        }

    @property
    def writable(self) -> bool:
        """False when read-only, or while writes are refused after a failed append."""
        return not self.read_only and self.write_backoff.remaining() == 0

    # ---- writes --------------------------------------------------------------------------

    def upsert(
        self,
        vectors: sp.csr_array,
        doc_ids: Sequence[str],
        documents: Sequence[dict] | None = None,
        extras: dict | None = None,
    ) -> int:
        """Add or replace documents; durable when this returns. Returns the sequence number.

        ``documents`` (one JSON-able record per id: ``title``, ``text`` and other fields) are
        stored as the collection's store setting says, for results and filters. ``extras``:
        the documents' vectors in each extra representation (name -> CSR rows or a float32
        matrix, one row per id), required when the collection has any."""
        self._check_not_read_only()
        csr = as_sparse_batch(vectors, len(self.vocab), "Document vectors")
        ids = check_doc_ids(list(doc_ids))
        if len(ids) != csr.shape[0]:
            raise InputError(
                f"Got {csr.shape[0]} vectors but {len(ids)} ids; pass one id per vector."
            )
        if len(set(ids)) != len(ids):
            raise InputError("Document ids must be unique within a request.")
        empty = [ids[i] for i in empty_rows(csr)]
        if empty:
            raise EmptyDocumentError(
                f"Document {empty[0]!r} has an empty vector (no indexable terms): it could "
                "never be found, so it is not stored"
                + (f" ({len(empty) - 1} more documents are empty)." if len(empty) > 1 else ".")
            )
        others = check_extra_vectors(self.extras, extras, len(ids))
        op = {"op": "upsert", "ids": ids, "indptr": csr.indptr, "indices": csr.indices,
              "data": csr.data}  # fmt: skip
        if others:
            op["extras"] = others
        if documents is not None and self.store_spec.stores:
            op["docs"] = self._records(ids, documents)
        with self._write_lock:
            return self._write_locked(op)

    def delete(self, doc_ids: Sequence[str]) -> tuple[int, list[str]]:
        """Delete documents; returns the sequence number and the ids that existed."""
        self._check_not_read_only()
        ids = check_doc_ids(list(doc_ids))
        with self._write_lock:
            existing = [d for d in dict.fromkeys(ids) if self._state.exists(d)]
            if not existing:
                return self._state.seq, []
            seq = self._write_locked({"op": "delete", "ids": existing})
        return seq, existing

    def _records(self, ids: list[str], documents: Sequence[dict]) -> list[dict]:
        """The records to store for ``ids``: each document's fields as the store setting
        keeps them, ``_id`` set to the id; refuses what JSON cannot hold."""
        if len(documents) != len(ids):
            raise InputError(f"Got {len(documents)} documents for {len(ids)} ids.")
        out = []
        for doc_id, doc in zip(ids, documents, strict=True):
            if not isinstance(doc, dict):
                raise InputError(f"Document {doc_id!r} must be a JSON object (a dict).")
            rec = self.store_spec.select({**doc, ID_FIELD: doc_id})
            try:
                json.dumps(rec, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise InputError(f"Document {doc_id!r} cannot be stored as JSON ({e}).") from e
            out.append(rec)
        return out

    def _check_not_read_only(self) -> None:
        if self.read_only:
            raise ReadOnlyError(f"{self.path} is open read-only; open it as the writer to update.")

    def _check_open(self) -> None:
        if self._wal is None:
            raise InputError(f"{self.path} was closed; open a new LiveIndex to write.")

    def _write_locked(self, op: dict) -> int:
        """Log ``op`` durably, then apply and publish it; a failed append leaves no trace."""
        self._check_open()
        wait = self.write_backoff.remaining()
        if wait > 0:
            raise WriteUnavailableError(
                errno.EAGAIN,
                f"writes are paused for {wait:.1f} s after a failed write "
                f"({self.write_backoff.last_error}); retry later.",
                retry_after=wait,
            )
        state = self._state
        seq = state.seq + 1
        payload = wal.encode(op)
        start = self._wal.end
        try:
            self._wal.append(seq, payload)
        except OSError as e:
            delay = self.write_backoff.fail(e)
            logger.error("%s: write %d failed and was not applied: %s", self.path, seq, e)
            raise WriteUnavailableError(
                e.errno or errno.EIO,
                f"the write was not stored: {describe_error(e)}; retry after {delay:.0f} s.",
                retry_after=delay,
            ) from e
        self.write_backoff.succeed()
        self.bytes_written += self._wal.end - start
        deleted = state.apply(op, seq)
        self._snapshot = state.publish()
        due = time.monotonic() - self._marked_at >= self.checkpoint_seconds
        if due and self._commit_lock.acquire(blocking=False):  # else a commit is being written
            try:
                self._checkpoint_locked()
            finally:
                self._commit_lock.release()
        if self.background and (deleted or self.needs_flush()):
            self._kick()
        return seq

    # ---- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background work (a flush in progress finishes, a merge in progress is
        given up at its next safe point), record the log
        checkpoint, close the log and release the writer lock (or the reader's lease)."""
        self._closing = True
        self._wake.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join()
        with self._flush_lock, self._merge_lock, self._commit_lock, self._write_lock:
            if self._wal is not None:
                self._checkpoint_locked()
                self._wal.close()
                self._wal = None
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def __enter__(self) -> LiveIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _where(state: CollectionState, doc_id: str) -> tuple | None:
    """Where the live version of ``doc_id`` is in ``state`` (the caller holds the write lock):
    ``("buffer", terms, weights, record)`` or ``("segment", segment, number)``, else None."""
    row = state.buffer.row_of.get(doc_id)
    if row is not None:
        terms, weights = state.buffer.vector(doc_id)
        return "buffer", terms, weights, state.buffer.records[row]
    hit = state.locate(doc_id)
    return None if hit is None else ("segment", hit[0].segment, hit[1])


def _without_checkpoint(commit: dict) -> dict:
    """A commit point's fields but those a log checkpoint alone changes."""
    return {k: v for k, v in commit.items() if k not in ("generation", "wal", "commit_sha256")}


def _check_options(options: dict) -> None:
    """Refuse unknown or bad search options before any segment is searched."""
    unknown = sorted(set(options) - set(SEARCH_OPTIONS))
    if unknown:
        known = ", ".join(SEARCH_OPTIONS)
        raise InputError(f"unknown search option {unknown[0]!r} (known: {known}).")
    algorithm_code(options.get("algorithm", "auto"), options.get("theta", 1.0))
    if options.get("query_terms") is not None:
        check_query_terms(options["query_terms"])
    check_threads(options.get("threads"))


def _check_dense_options(options: dict) -> None:
    """Refuse unknown or bad options of a dense search."""
    unknown = sorted(set(options) - {"ef_search", "nprobe"})
    if unknown:
        raise InputError(f"unknown dense search option {unknown[0]!r} (known: ef_search, nprobe).")
    for name, value in options.items():
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise InputError(f"{name} must be an integer >= 1, got {value!r}.")


def _no_hits(n_queries: int, documents: bool) -> SearchResults:
    return SearchResults(
        docs=np.full((n_queries, 0), -1, dtype=np.int64),
        scores=np.zeros((n_queries, 0), dtype=np.float32),
        counts=np.zeros(n_queries, dtype=np.int64),
        doc_ids=pa.array([], pa.large_string()),
        documents=[[] for _ in range(n_queries)] if documents else None,
    )


def _check_fields(fields: Sequence[str] | None) -> list[str] | None:
    """``fields`` as a list of names (None: every stored field; ``["*"]`` also means all)."""
    if fields is None:
        return None
    if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
        raise InputError("fields must be a list of field names, e.g. ['title', 'text'].")
    fields = list(fields)
    return None if "*" in fields else fields
