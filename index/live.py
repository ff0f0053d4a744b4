"""A live index: a base index plus acknowledged updates that survive a crash or a full disk.

Upserts are appended to the write buffer (:mod:`lsr.index.buffer`: nothing is rebuilt, a write
costs its own terms), deletes (and upserts of documents already in the base) clear the base
documents' bits in the mask the kernels apply while scoring. Every write is appended
to the write-ahead log (:mod:`lsr.index.wal`: framed, checksummed, numbered records) and fsynced
*before* it is acknowledged; on open the log is replayed over the base, so a crash (even
``kill -9``) loses no acknowledged write. A failed append is cut back off the log and
reported as :class:`WriteUnavailableError` (the service answers 503 with ``Retry-After``);
further writes are refused without touching the disk until a back-off has passed.

``merge`` folds the updates into a new base written atomically (temp dir + rename) that
records the last sequence number it contains, with a log inside holding the writes made while
it was built, so a crash during a merge leaves either the old base with its full log or the
new base with its own. The new base is built from a snapshot without the write lock: writes
wait only while that short log is written and the directories are swapped, searches never. A
failed merge leaves both intact and is retried only after an exponential back-off.

Integrity: the manifest is checksummed and names the log's checkpoint (``wal``: the last
sequence number and byte length known durable, written at open, at close and every
``checkpoint_seconds`` of writes). A log shorter than its checkpoint, missing where the
checkpoint says records were written, numbered with gaps, belonging to another base, or with
a bad record before valid ones is an error on open, never a silent loss. Only the bytes of an
append that was still in flight (after the checkpoint, with nothing valid behind them) are
taken for a torn tail and cut off.

One writer: a writer holds the collection's lock (:mod:`lsr.index.lock`) from open to
:meth:`close`; a second writer, in this process or another, gets a
:class:`CollectionLockedError`. ``read_only=True`` opens take no lock, never modify the
directory, and see the base plus the log as it was when they opened.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from lsr.checks import positive_int
from lsr.errors import InputError
from lsr.index import wal
from lsr.index.buffer import BufferView, WriteBuffer, select_fields
from lsr.index.errors import (
    EmptyDocumentError,
    IndexFormatError,
    ReadOnlyError,
    WriteUnavailableError,
)
from lsr.index.filters import Filter, parse_filter
from lsr.index.inverted import Index, IndexBuilder
from lsr.index.lock import WriterLock
from lsr.index.results import SearchResults, merge_topk
from lsr.index.storage import (
    FILES,
    MANIFEST,
    fsync_dir,
    read_manifest,
    recover,
    update_manifest,
)
from lsr.index.store import ID_FIELD, STORE_FILE, StoreSpec, concat_records, records_table
from lsr.index.validation import as_sparse_batch, check_doc_ids, check_k, empty_rows

logger = logging.getLogger(__name__)
WAL_NAME = "wal.log"
LEGACY_WAL_NAME = "wal.jsonl"  # JSON lines, written by lsr 0.1; migrated on a writer's open


@dataclass(frozen=True)
class Snapshot:
    """What a search sees: one point in time, replaced as a whole by each write."""

    base: Index
    base_live: np.ndarray | None  # bool per base document: not deleted nor replaced (None: all)
    buffer: BufferView  # the documents written since the last merge, as of this write
    n_docs: int


class Backoff:
    """Consecutive failures of one kind of operation and when to try it again (exponential
    back-off from ``first`` seconds, doubling up to ``cap``)."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap = first, cap
        self.failures = 0
        self.last_error: str | None = None
        self._until = 0.0

    def fail(self, error: BaseException) -> float:
        self.failures += 1
        delay = min(self.cap, self.first * 2 ** (self.failures - 1))
        self._until = time.monotonic() + delay
        self.last_error = str(error) or type(error).__name__
        return delay

    def succeed(self) -> None:
        self.failures, self.last_error, self._until = 0, None, 0.0

    def remaining(self) -> float:
        return max(0.0, self._until - time.monotonic())

    def to_dict(self) -> dict:
        return {
            "failures": self.failures,
            "last_error": self.last_error,
            "retry_in_s": round(self.remaining(), 3),
        }


class LiveIndex:
    """Searchable while being updated; see the module docstring for the durability contract."""

    def __init__(
        self,
        path: str | Path,
        merge_threshold: int = 10_000,
        read_only: bool = False,
        checkpoint_seconds: float = 1.0,
    ) -> None:
        positive_int(merge_threshold, "merge_threshold")
        if not isinstance(checkpoint_seconds, (int, float)) or not checkpoint_seconds >= 0:
            raise InputError(
                f"checkpoint_seconds must be a number >= 0 (inf: at open and close only), "
                f"got {checkpoint_seconds!r}."
            )
        self.path = Path(path)
        self.merge_threshold = merge_threshold
        self.read_only = read_only
        self.checkpoint_seconds = checkpoint_seconds
        self.write_backoff = Backoff(first=1.0, cap=30.0)
        self.merge_backoff = Backoff(first=1.0, cap=300.0)
        self._write_lock = threading.Lock()
        self._merge_lock = threading.Lock()  # one merge at a time
        self._masks_lock = threading.Lock()  # the filter-mask cache, shared by searches
        self._tail: list[tuple[int, bytes]] | None = None  # writes logged during a merge
        self.bytes_written = 0  # by this writer: log appends and merged bases (amplification)
        self._wal: wal.LogWriter | None = None
        if not self.path.is_dir() and not any(self.path.parent.glob(f".{self.path.name}.old-*")):
            read_manifest(self.path)  # no collection here (nor one to recover): say so
        self._lock = None if read_only else WriterLock(self.path).acquire()
        try:
            if not read_only:
                for action in recover(self.path):
                    logger.warning("%s: %s after an interrupted write", self.path, action)
            self._open()
        except BaseException:
            self._release()
            raise

    def _open(self, attempts: int = 3, verify: bool = True) -> None:
        """Load the base and replay the log. A reader that opens while the writer swaps in a
        merged base may read the old base and the new log: it tries again."""
        base = Index.load(self.path, verify=verify)
        manifest = base.manifest
        try:
            self._open_over(base, manifest)
        except IndexFormatError:
            swapped = read_manifest(self.path).get("base_id") != manifest.get("base_id")
            if not (self.read_only and swapped and attempts > 1):
                raise
            self._open(attempts - 1, verify)

    def _open_over(self, base: Index, manifest: dict) -> None:
        self.vocab = base.vocab
        self._applied = int(base.metadata.get("applied_seq", 0))
        self._buffer = WriteBuffer(len(self.vocab))
        self._base_live: np.ndarray | None = None  # copied on write (snapshots share it)
        stored = base.metadata.get("store")
        self.store_spec = (
            StoreSpec.from_dict(stored)
            if stored
            else StoreSpec("all" if base.store is not None else "none")
        )
        self._base_masks: OrderedDict[str, tuple[Index, np.ndarray]] = OrderedDict()
        self._shadowed: set[str] = set()
        self._seq = self._applied
        self._snapshot = Snapshot(base, None, self._buffer.view(self._seq), base.n_docs)
        records, end = self._read_log(manifest)
        for rec in records:
            self._seq += 1
            self._apply(rec, self._seq)
        self._publish()
        if not self.read_only:
            self._wal = wal.LogWriter(self.path / WAL_NAME, end)
            self._checkpoint()
        logger.info("opened %s: replayed %d log records", self.path, len(records))

    def _read_log(self, manifest: dict) -> tuple[list[dict], int]:
        """The operations to replay over the base and where the valid log ends; a writer also
        cuts off a torn tail, creates a missing log and migrates a legacy one."""
        log, legacy = self.path / WAL_NAME, self.path / LEGACY_WAL_NAME
        base_id = manifest.get("base_id")
        start = self._applied + 1
        state = wal.inspect(log, base_id, start, manifest.get("wal") or {})
        if state.kind not in (wal.OK, wal.ABSENT):
            raise wal.LogDamagedError(state.problem)
        if state.scan is not None:
            scan = state.scan
            if scan.torn_bytes:
                action = "ignored" if self.read_only else "cut off"
                logger.warning(
                    "%s: %s %d bytes of an append interrupted before it was acknowledged",
                    log, action, scan.torn_bytes,
                )  # fmt: skip
            if legacy.is_file() and not self.read_only:
                self._drop_migrated(legacy, scan.last_seq)
            ops = [wal.decode(r.payload, f"{log} record {r.seq}") for r in scan.records]
            return ops, scan.end
        ops = []
        if legacy.is_file():
            ops = [r for r in wal.read_legacy_jsonl(legacy) if r.get("seq", 0) >= start]
            if [r["seq"] for r in ops] != list(range(start, start + len(ops))):
                raise IndexFormatError(f"{legacy}: sequence numbers have gaps; restore it.")
        if self.read_only:
            return ops, 0
        if base_id is None:  # a manifest written before base ids existed
            base_id = uuid.uuid4().hex
            update_manifest(self.path, {"base_id": base_id})
        payloads = [wal.encode(op) for op in ops]
        end = wal.create(log, base_id, start, payloads)
        if legacy.is_file():
            legacy.unlink()
            fsync_dir(self.path)
            logger.warning("%s: migrated %d records of %s", self.path, len(ops), legacy.name)
        return ops, end

    def _drop_migrated(self, legacy: Path, last_seq: int) -> None:
        """Remove a legacy log whose records the new log already holds (a crash came between
        the migration and the removal); one with records beyond it is an error."""
        newest = max((r.get("seq", 0) for r in wal.read_legacy_jsonl(legacy)), default=0)
        if newest > last_seq:
            raise IndexFormatError(
                f"{self.path} has both {WAL_NAME} and {LEGACY_WAL_NAME}, and the legacy log holds "
                f"sequence number {newest}, beyond the new log's {last_seq}; move one away."
            )
        legacy.unlink()
        fsync_dir(self.path)

    def _checkpoint(self) -> None:
        """Record in the manifest how far the log is known durable (see module docstring)."""
        self._marked_at = time.monotonic()
        try:
            update_manifest(self.path, {"wal": {"seq": self._seq, "bytes": self._wal.end}})
        except OSError as e:
            logger.warning("%s: could not record the log checkpoint (%s)", self.path, e)

    # ---- reads ---------------------------------------------------------------------------

    @property
    def base(self) -> Index:
        """The base index searches see now (the updates since the last merge are beside it)."""
        return self._snapshot.base

    @property
    def n_docs(self) -> int:
        return self._snapshot.n_docs

    def search(
        self,
        queries: sp.csr_array,
        k: int = 10,
        filter: Filter | dict | str | None = None,
        fields: Sequence[str] | None = None,
        **options,
    ) -> SearchResults:
        """Top-k over base + buffer (:func:`~lsr.index.results.merge_topk`); deleted and
        replaced base documents, and documents ``filter`` rejects, are excluded inside the
        kernels (one pass, k hits; fewer when fewer documents pass). ``fields`` attaches each
        hit's stored document (those fields and ``_id``; ``["*"]``: all of them).
        ``options`` as for :meth:`Index.search`."""
        k = check_k(k)
        snap = self._snapshot
        q = as_sparse_batch(queries, len(self.vocab), "Query vectors")
        condition = self._check_filter(snap, filter)
        selected = _check_fields(fields)
        allowed = snap.base_live
        if condition is not None:
            base_mask = self._base_mask(snap.base, condition)
            allowed = base_mask if allowed is None else allowed & base_mask
        results = snap.base.search(q, k, allowed=allowed, **options)
        if fields is not None:
            results.documents = [
                self._base_documents(snap.base, results.docs[i, : results.counts[i]], selected)
                for i in range(len(results))
            ]
        if snap.buffer.n_rows == 0:
            return results
        recent = snap.buffer.search(q, k, condition, fields is not None, selected)
        return merge_topk([results, recent], k)

    @staticmethod
    def _base_documents(base: Index, numbers: np.ndarray, fields: list[str] | None) -> list[dict]:
        """Stored records of base documents ``numbers`` (just ``_id`` without a store)."""
        if base.store is None:
            return [{ID_FIELD: d} for d in base.doc_ids.take(pa.array(numbers)).to_pylist()]
        return base.store.get(numbers.tolist(), fields)

    def _check_filter(self, snap: Snapshot, spec) -> Filter | None:
        """The filter of ``spec`` after checking that the collection stores what it reads."""
        if spec is None:
            return None
        condition = parse_filter(spec)
        buffered = self._buffer.fields
        if snap.base.store is None and not buffered:
            raise InputError(
                f"{self.path} stores no documents, so it cannot be filtered; rebuild it with "
                "--store all (or fields:...) to filter on fields."
            )
        known = set(snap.base.store.field_names if snap.base.store is not None else ())
        known.update(buffered)
        if self.store_spec.mode == "fields":
            known.update(self.store_spec.fields)
        unknown = sorted(f for f in condition.fields() if f.split(".")[0] not in known)
        if unknown:
            raise InputError(
                f"filter field {unknown[0]!r} is not stored in {self.path.name} "
                f"(stored fields: {', '.join(sorted(known)) or 'none'})."
            )
        return condition

    def _base_mask(self, base: Index, condition: Filter) -> np.ndarray:
        """The filter's mask over the base, computed once per filter (a small LRU cache)."""
        key = condition.key()
        with self._masks_lock:
            cached = self._base_masks.get(key)
        if cached is not None and cached[0] is base:  # a search of an older base: recompute
            return cached[1]
        if base.store is None:
            mask = np.zeros(base.n_docs, dtype=bool)
        else:
            mask = condition.mask(base.store, base.n_docs)
        with self._masks_lock:
            self._base_masks[key] = (base, mask)
            while len(self._base_masks) > FILTER_CACHE_SIZE:
                self._base_masks.popitem(last=False)
        return mask

    def document(self, doc_id: str, fields: Sequence[str] | None = None) -> dict | None:
        """The stored record of a document (``_id`` plus its stored fields, or only
        ``fields``), or None if it does not exist or was deleted."""
        selected = _check_fields(fields)
        with self._write_lock:  # one consistent state of buffer and base
            if doc_id in self._buffer.row_of:
                return select_fields(self._buffer.record(doc_id), doc_id, selected)
            base = self._snapshot.base
            if doc_id in self._shadowed or not base.has_doc(doc_id):
                return None
        if base.store is None:
            return {ID_FIELD: doc_id}
        return base.store.get([base.doc_index(doc_id)], selected)[0]

    def get(self, doc_id: str) -> dict[str, float] | None:
        """The stored vector of a document, or None if it does not exist (or was deleted)."""
        with self._write_lock:
            buffered = self._buffer.vector(doc_id)
            if buffered is not None:
                terms, weights = buffered
                return {self.vocab[t]: float(w) for t, w in zip(terms, weights, strict=True)}
            if doc_id in self._shadowed:
                return None
        base = self._snapshot.base
        try:
            return base.document_vector(base.doc_index(doc_id))
        except KeyError:
            return None

    def explain(self, doc_ids: Sequence[str], terms: np.ndarray) -> np.ndarray:
        """Documents' weights for the given term ids, (len(doc_ids), len(terms)); zeros for a
        document that does not exist. Compiled binary searches, no per-term Python loop."""
        terms = np.asarray(terms, dtype=np.int64)
        out = np.zeros((len(doc_ids), len(terms)), dtype=np.float32)
        base = self._snapshot.base
        rows, numbers = [], []
        for i, doc_id in enumerate(doc_ids):
            buffered = self._buffer.vector(doc_id)
            if buffered is not None:
                doc_terms, weights = buffered
                pos = np.minimum(np.searchsorted(doc_terms, terms), max(len(doc_terms) - 1, 0))
                hit = doc_terms[pos] == terms if len(doc_terms) else np.zeros(len(terms), bool)
                out[i, hit] = weights[pos[hit]]
            elif doc_id not in self._shadowed:
                try:
                    numbers.append(base.doc_index(doc_id))
                    rows.append(i)
                except KeyError:
                    pass
        if rows:
            out[rows] = base.term_weights(np.asarray(numbers, dtype=np.int64), terms)
        return out

    def stats(self) -> dict:
        snap = self._snapshot
        log = self.path / WAL_NAME
        return {
            "n_docs": snap.n_docs,
            "base_docs": snap.base.n_docs,
            "delta_docs": len(self._buffer),
            "deleted_or_replaced": len(self._shadowed),
            "vocab_size": len(self.vocab),
            "postings": snap.base.n_postings + int(snap.buffer.indptr[snap.buffer.n_rows]),
            "last_seq": self._seq,
            "merged_seq": self._applied,
            "log_records": self._seq - self._applied,
            "bytes_written": self.bytes_written,
            "wal_bytes": log.stat().st_size if log.exists() else 0,
            "read_only": self.read_only,
            "writable": self.writable,
            "writes": self.write_backoff.to_dict(),
            "merges": self.merge_backoff.to_dict(),
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
    ) -> int:
        """Add or replace documents; durable when this returns. Returns the sequence number.

        ``documents`` (one JSON-able record per id: ``title``, ``text`` and other fields) are
        stored as the collection's store setting says, for results and filters."""
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
        op = {"op": "upsert", "ids": ids, "indptr": csr.indptr, "indices": csr.indices,
              "data": csr.data}  # fmt: skip
        if documents is not None and self.store_spec.stores:
            op["docs"] = self._records(ids, documents)
        with self._write_lock:
            return self._write_locked(op)

    def delete(self, doc_ids: Sequence[str]) -> tuple[int, list[str]]:
        """Delete documents; returns the sequence number and the ids that existed."""
        self._check_not_read_only()
        ids = check_doc_ids(list(doc_ids))
        with self._write_lock:
            existing = [d for d in dict.fromkeys(ids) if self._exists(d)]
            if not existing:
                return self._seq, []
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

    def _exists(self, doc_id: str) -> bool:
        if doc_id in self._buffer.row_of:
            return True
        return doc_id not in self._shadowed and self._snapshot.base.has_doc(doc_id)

    def _write_locked(self, op: dict) -> int:
        """Log ``op`` durably, then apply and publish it; a failed append leaves no trace."""
        if self._wal is None:
            raise InputError(f"{self.path} was closed; open a new LiveIndex to write.")
        wait = self.write_backoff.remaining()
        if wait > 0:
            raise WriteUnavailableError(
                errno.EAGAIN,
                f"writes are paused for {wait:.1f} s after a failed write "
                f"({self.write_backoff.last_error}); retry later.",
                retry_after=wait,
            )
        seq = self._seq + 1
        payload = wal.encode(op)
        start = self._wal.end
        try:
            self._wal.append(seq, payload)
        except OSError as e:
            delay = self.write_backoff.fail(e)
            reason = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else str(e)
            logger.error("%s: write %d failed and was not applied: %s", self.path, seq, e)
            raise WriteUnavailableError(
                e.errno or errno.EIO,
                f"the write was not stored: {reason}; retry after {delay:.0f} s.",
                retry_after=delay,
            ) from e
        self.write_backoff.succeed()
        self.bytes_written += self._wal.end - start
        if self._tail is not None:
            self._tail.append((seq, payload))
        self._seq = seq
        self._apply(op, seq)
        self._publish()
        if time.monotonic() - self._marked_at >= self.checkpoint_seconds:
            self._checkpoint()
        return seq

    def _apply(self, rec: dict, seq: int) -> None:
        """Apply logged operation number ``seq``: append to the buffer, and mark the base
        documents it deletes or replaces (a copy of the mask the snapshots share)."""
        base = self._snapshot.base
        gone = []
        if rec["op"] == "upsert":
            indptr, indices, data = rec["indptr"], rec["indices"], rec["data"]
            docs = rec.get("docs")
            for i, doc_id in enumerate(rec["ids"]):
                lo, hi = int(indptr[i]), int(indptr[i + 1])
                terms = np.asarray(indices[lo:hi], dtype=np.int32)
                weights = np.asarray(data[lo:hi], dtype=np.float32)
                record = docs[i] if docs is not None else None
                self._buffer.append(doc_id, terms, weights, record, seq)
                gone.append(doc_id)
        else:
            for doc_id in rec["ids"]:
                self._buffer.kill(doc_id, seq)
                gone.append(doc_id)
        gone = [d for d in gone if d not in self._shadowed and base.has_doc(d)]
        if gone:
            live = (
                np.ones(base.n_docs, dtype=bool)
                if self._base_live is None
                else self._base_live.copy()
            )
            live[[base.doc_index(d) for d in gone]] = False
            self._base_live = live
            self._shadowed.update(gone)

    def _publish(self) -> None:
        """Swap in a snapshot of the state after the last applied write (one assignment;
        nothing is rebuilt)."""
        base = self._snapshot.base
        n_docs = base.n_docs - len(self._shadowed) + len(self._buffer)
        self._snapshot = Snapshot(base, self._base_live, self._buffer.view(self._seq), n_docs)

    def needs_merge(self) -> bool:
        """Enough changed documents to merge, and no failed merge waiting out its back-off."""
        changed = len(self._buffer) + len(self._shadowed)
        return (
            not self.read_only
            and changed >= self.merge_threshold
            and self.merge_backoff.remaining() == 0
        )

    def merge(self) -> None:
        """Fold the updates into a new base (atomic swap) whose log holds only the writes
        that came during the merge. The new base is built from a snapshot without holding
        the write lock (searches and writes go on); writes wait only while the log of those
        later writes is written and the directories are swapped. A failure leaves the current
        base and log as they were and starts the merge back-off."""
        self._check_not_read_only()
        with self._merge_lock:
            with self._write_lock:
                if not len(self._buffer) and not self._shadowed:
                    return
                snap, applied = self._snapshot, self._seq
                self._tail = []  # the writes logged from now on, for the new base's log
            try:
                self._merge_from(snap, applied)
            except Exception as e:
                delay = self.merge_backoff.fail(e)
                logger.error("%s: merge failed (%s); next attempt in %.0f s", self.path, e, delay)
                raise
            finally:
                self._tail = None
            self.merge_backoff.succeed()

    def _merge_from(self, snap: Snapshot, applied: int) -> None:
        """Build the base of ``snap`` (the state after write ``applied``) and swap it in."""
        needed, free = self._merge_bytes_needed(), shutil.disk_usage(self.path.parent).free
        if free < needed:
            raise WriteUnavailableError(
                errno.ENOSPC,
                f"a merge needs about {needed:,} bytes and {free:,} are free",
                retry_after=self.merge_backoff.first,
            )
        base, view = snap.base, snap.buffer
        keep = np.arange(base.n_docs) if snap.base_live is None else np.flatnonzero(snap.base_live)
        base_ids = base.doc_ids.to_pylist()
        builder = IndexBuilder(self.vocab, quantization=base.quantization)
        if len(keep):
            builder.add(base.weights().tocsr()[keep], [base_ids[i] for i in keep])
        rows = view.live_rows()
        ids = [self._buffer.ids[r] for r in rows]
        if ids:
            builder.add(view.csr(rows), ids)
        merged = builder.finish(
            {**base.metadata, "applied_seq": applied, "store": self.store_spec.to_dict()}
        )
        documents = self._merged_documents(base, keep, base_ids, rows)
        base_id = uuid.uuid4().hex
        checkpoint: dict = {}  # filled in under the write lock, read when the manifest is written
        locked = False

        def extras(tmp: Path) -> None:
            nonlocal locked
            self._copy_extras(tmp)
            self._write_lock.acquire()  # held until the new base is swapped in and opened
            locked = True
            end = wal.create(tmp / WAL_NAME, base_id, applied + 1, [p for _, p in self._tail])
            checkpoint.update(seq=self._seq, bytes=end)

        fields = {"base_id": base_id, "wal": checkpoint}
        try:
            merged.save(
                self.path, overwrite=True, extra=extras, manifest_fields=fields, documents=documents
            )
        finally:
            try:
                if read_manifest(self.path).get("base_id") == base_id:  # swapped in, maybe
                    self._wal.close()  # followed by an error from the final directory fsync
                    self._open(verify=False)  # written and fsynced by this merge just now
                    self.bytes_written += sum(
                        f.stat().st_size for f in self.path.rglob("*") if f.is_file()
                    )
            finally:
                if locked:
                    self._write_lock.release()

    def _merged_documents(self, base: Index, keep, base_ids, rows) -> pa.Table | list | None:
        """The stored records of a merged base: the kept base rows as Arrow (no Python
        objects) followed by the buffer's; rebuilt from Python records only when a field's
        types differ between the two."""
        if not self.store_spec.stores:
            return None
        recent = [select_fields(self._buffer.records[r], self._buffer.ids[r], None) for r in rows]
        if base.store is not None:
            kept = base.store.table(keep)
            if not recent:
                return kept
            joined = concat_records(kept, records_table(recent))
            if joined is not None:
                return joined
            return base.store.records(keep) + recent
        return [{ID_FIELD: base_ids[i]} for i in keep] + recent

    def _merge_bytes_needed(self) -> int:
        """About what a merge writes: the directory as it is plus the buffer's postings."""
        current = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        buffered = int(self._buffer.indptr[self._buffer.n_rows])
        return int(current * 1.1) + buffered * 8

    def _copy_extras(self, tmp: Path) -> None:
        """Carry over what lives beside the index files (e.g. the encoder), not the logs."""
        for item in self.path.iterdir():
            excluded = (*FILES, STORE_FILE, MANIFEST, WAL_NAME, LEGACY_WAL_NAME)
            if item.name in excluded or item.name.startswith("."):
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)

    def close(self) -> None:
        """Wait for a merge in progress, record the log checkpoint, close the log and
        release the writer lock."""
        with self._merge_lock, self._write_lock:
            if self._wal is not None:
                self._checkpoint()
                self._wal.close()
                self._wal = None
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> LiveIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


FILTER_CACHE_SIZE = 32  # filter masks kept per base (one bool per document each)


def _check_fields(fields: Sequence[str] | None) -> list[str] | None:
    """``fields`` as a list of names (None: every stored field; ``["*"]`` also means all)."""
    if fields is None:
        return None
    if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
        raise InputError("fields must be a list of field names, e.g. ['title', 'text'].")
    fields = list(fields)
    return None if "*" in fields else fields
