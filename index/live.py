"""A live index: a base index plus acknowledged updates that survive a crash.

Upserts go to a small in-memory delta (rebuilt as an :class:`Index` on each write), deletes
(and upserts of documents already in the base) to a tombstone set. Every write is appended
to a write-ahead log and fsynced *before* it is acknowledged; on open, the log is replayed
over the base, so a crash (even ``kill -9``) loses no acknowledged write. ``merge`` folds the
updates into a new base written atomically (temp dir + rename) that records the last
sequence number it contains, so a crash during a merge leaves either the old base with its
full log or the new base, and replay skips what the base already holds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from index.builder import IndexBuilder
from index.errors import IndexFormatError
from index.inverted import Index
from index.storage import FILES, MANIFEST, recover
from index.validation import as_sparse_batch, check_k

logger = logging.getLogger(__name__)
WAL_NAME = "wal.jsonl"


@dataclass(frozen=True)
class Snapshot:
    """What a search sees: immutable, replaced as a whole by each write."""

    base: Index
    delta: Index | None
    shadowed: frozenset[str]  # base ids deleted or replaced by a newer version
    n_docs: int


@dataclass
class Hits:
    """One query's ranked document ids and scores."""

    ids: list[str]
    scores: list[float]


class WriteAheadLog:
    """Append-only JSON lines, each fsynced before the append returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for appends

    def append(self, record: dict) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    @staticmethod
    def read(path: Path) -> list[dict]:
        """All complete records; a torn last line (a crash mid-append, never acknowledged) is
        ignored, a corrupt line before it is an error."""
        if not path.is_file():
            return []
        lines = path.read_bytes().split(b"\n")
        records = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                if i >= len(lines) - 2:  # the last non-empty line: an interrupted append
                    logger.warning("ignoring a torn last record in %s", path)
                    break
                raise IndexFormatError(f"{path}: record {i + 1} is corrupt ({e}).") from e
        return records


class LiveIndex:
    """Searchable while being updated; see the module docstring for the durability contract."""

    def __init__(self, path: str | Path, merge_threshold: int = 10_000) -> None:
        self.path = Path(path)
        self.merge_threshold = merge_threshold
        self._write_lock = threading.Lock()
        for action in recover(self.path):
            logger.warning("%s: %s after an interrupted write", self.path, action)
        self._open()

    def _open(self) -> None:
        base = Index.load(self.path)
        self.vocab = base.vocab
        self._applied = int(base.metadata.get("applied_seq", 0))
        self._seq = self._applied
        self._delta_docs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._shadowed: set[str] = set()
        self._base_ids: set[str] | None = None
        self._snapshot = Snapshot(base, None, frozenset(), base.n_docs)
        records = WriteAheadLog.read(self.path / WAL_NAME)
        for rec in records:
            if rec.get("seq", 0) > self._applied:
                self._apply(rec)
        if records:
            self._seq = max(self._seq, max(r.get("seq", 0) for r in records))
        self._publish()
        self._wal = WriteAheadLog(self.path / WAL_NAME)
        logger.info("opened %s: replayed %d log records", self.path, len(records))

    # ---- reads ---------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def search(self, queries: sp.csr_array, k: int = 10, **options) -> list[Hits]:
        """Top-k over base + delta, skipping deleted and replaced base documents."""
        k = check_k(k)
        snap = self._snapshot
        q = as_sparse_batch(queries, len(self.vocab), "Query vectors")
        base_k = k + len(snap.shadowed)
        base = snap.base.search(q, base_k, **options)
        delta = snap.delta.search(q, k, **options) if snap.delta is not None else None
        out = []
        for i in range(q.shape[0]):
            merged = [(s, 0, d) for d, s in base[i] if d not in snap.shadowed]
            if delta is not None:
                merged += [(s, 1, d) for d, s in delta[i]]
            merged.sort(key=lambda h: (-h[0], h[1]))
            top = merged[:k]
            out.append(Hits(ids=[d for _, _, d in top], scores=[s for s, _, _ in top]))
        return out

    def get(self, doc_id: str) -> dict[str, float] | None:
        """The stored vector of a document, or None if it does not exist (or was deleted)."""
        if doc_id in self._delta_docs:
            terms, weights = self._delta_docs[doc_id]
            return {self.vocab[t]: float(w) for t, w in zip(terms, weights, strict=True)}
        if doc_id in self._shadowed:
            return None
        base = self._snapshot.base
        try:
            return base.document_vector(base.doc_index(doc_id))
        except KeyError:
            return None

    def explain(self, doc_id: str, terms: np.ndarray) -> np.ndarray:
        """A document's weights for the given term ids (zeros if it does not exist)."""
        if doc_id in self._delta_docs:
            doc_terms, weights = self._delta_docs[doc_id]
            lookup = dict(zip(doc_terms.tolist(), weights.tolist(), strict=True))
            return np.asarray([lookup.get(int(t), 0.0) for t in terms], dtype=np.float32)
        base = self._snapshot.base
        if doc_id in self._shadowed:
            return np.zeros(len(terms), dtype=np.float32)
        try:
            return base.term_weights(base.doc_index(doc_id), terms)
        except KeyError:
            return np.zeros(len(terms), dtype=np.float32)

    def stats(self) -> dict:
        snap = self._snapshot
        return {
            "n_docs": snap.n_docs,
            "base_docs": snap.base.n_docs,
            "delta_docs": len(self._delta_docs),
            "deleted_or_replaced": len(snap.shadowed),
            "vocab_size": len(self.vocab),
            "postings": snap.base.n_postings + (snap.delta.n_postings if snap.delta else 0),
            "last_seq": self._seq,
            "merged_seq": self._applied,
            "wal_bytes": (self.path / WAL_NAME).stat().st_size
            if (self.path / WAL_NAME).exists()
            else 0,
        }

    # ---- writes --------------------------------------------------------------------------

    def upsert(self, vectors: sp.csr_array, doc_ids: Sequence[str]) -> int:
        """Add or replace documents; durable when this returns. Returns the sequence number."""
        csr = as_sparse_batch(vectors, len(self.vocab), "Document vectors")
        ids = [str(d) for d in doc_ids]
        if len(ids) != csr.shape[0]:
            raise ValueError(
                f"Got {csr.shape[0]} vectors but {len(ids)} ids; pass one id per vector."
            )
        if any(not d for d in ids) or len(set(ids)) != len(ids):
            raise ValueError("Document ids must be non-empty and unique within a request.")
        record = {
            "op": "upsert",
            "ids": ids,
            "indptr": csr.indptr.tolist(),
            "indices": csr.indices.tolist(),
            "data": csr.data.tolist(),
        }
        return self._write(record)

    def delete(self, doc_ids: Sequence[str]) -> tuple[int, list[str]]:
        """Delete documents; returns the sequence number and the ids that existed."""
        ids = [str(d) for d in doc_ids]
        with self._write_lock:
            existing = [d for d in ids if self._exists(d)]
            if not existing:
                return self._seq, []
            seq = self._write_locked({"op": "delete", "ids": existing})
        return seq, existing

    def _exists(self, doc_id: str) -> bool:
        if doc_id in self._delta_docs:
            return True
        return doc_id not in self._shadowed and doc_id in self._base_id_set()

    def _base_id_set(self) -> set[str]:
        if self._base_ids is None:
            self._base_ids = set(self._snapshot.base.doc_ids.to_pylist())
        return self._base_ids

    def _write(self, record: dict) -> int:
        with self._write_lock:
            return self._write_locked(record)

    def _write_locked(self, record: dict) -> int:
        record = {"seq": self._seq + 1, **record}
        self._wal.append(record)  # durable before it is applied or acknowledged
        self._seq = record["seq"]
        self._apply(record)
        self._publish()
        return self._seq

    def _apply(self, rec: dict) -> None:
        op = rec.get("op")
        base_ids = self._base_id_set()
        if op == "upsert":
            indptr, indices, data = rec["indptr"], rec["indices"], rec["data"]
            for i, doc_id in enumerate(rec["ids"]):
                lo, hi = indptr[i], indptr[i + 1]
                self._delta_docs[doc_id] = (
                    np.asarray(indices[lo:hi], dtype=np.int32),
                    np.asarray(data[lo:hi], dtype=np.float32),
                )
                if doc_id in base_ids:
                    self._shadowed.add(doc_id)
        elif op == "delete":
            for doc_id in rec["ids"]:
                self._delta_docs.pop(doc_id, None)
                if doc_id in base_ids:
                    self._shadowed.add(doc_id)
        else:
            raise IndexFormatError(f"{self.path / WAL_NAME}: unknown operation {op!r}.")

    def _publish(self) -> None:
        """Rebuild the delta index and swap in a new snapshot (one reference assignment)."""
        base = self._snapshot.base
        delta = None
        if self._delta_docs:
            ids = list(self._delta_docs)
            builder = IndexBuilder(self.vocab, quantization="float32")
            builder.add(_rows(self._delta_docs, ids, len(self.vocab)), ids)
            delta = builder.finish()
        n_docs = base.n_docs - len(self._shadowed) + len(self._delta_docs)
        self._snapshot = Snapshot(base, delta, frozenset(self._shadowed), n_docs)

    def needs_merge(self) -> bool:
        return len(self._delta_docs) + len(self._shadowed) >= self.merge_threshold

    def merge(self) -> None:
        """Fold the updates into a new base (atomic swap), then start an empty log."""
        with self._write_lock:
            snap = self._snapshot
            if not self._delta_docs and not self._shadowed:
                return
            base = snap.base
            weights = base.weights().tocsr()
            base_ids = base.doc_ids.to_pylist()
            keep = [i for i, d in enumerate(base_ids) if d not in self._shadowed]
            builder = IndexBuilder(self.vocab, quantization=base.quantization)
            if keep:
                builder.add(weights[keep], [base_ids[i] for i in keep])
            ids = list(self._delta_docs)
            if ids:
                builder.add(_rows(self._delta_docs, ids, len(self.vocab)), ids)
            merged = builder.finish({**base.metadata, "applied_seq": self._seq})
            merged.save(self.path, overwrite=True, extra=self._copy_extras)
            self._wal.close()  # the old log went away with the old directory
            self._open()

    def _copy_extras(self, tmp: Path) -> None:
        """Carry over what lives beside the index files (e.g. the encoder), not the log."""
        for item in self.path.iterdir():
            if item.name in (*FILES, MANIFEST, WAL_NAME):
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)

    def close(self) -> None:
        self._wal.close()


def _rows(docs: dict[str, tuple[np.ndarray, np.ndarray]], ids: list[str], vocab_size: int):
    indptr = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([docs[d][0].shape[0] for d in ids], out=indptr[1:])
    indices = np.concatenate([docs[d][0] for d in ids]) if ids else np.empty(0, np.int32)
    data = np.concatenate([docs[d][1] for d in ids]) if ids else np.empty(0, np.float32)
    return sp.csr_array((data, indices, indptr), shape=(len(ids), vocab_size))
