"""A cluster: several collections (shards) under one manifest, searched as one.

Layout of a cluster directory (written by ``lsr index --shards``)::

    cluster.json            the manifest: shards, routing, vocabulary hash, global statistics
    shard-0000/             a collection (lsr.index.live), with the encoder it was built with
    shard-0000.positions    its documents' global positions (see below)
    shard-0001/ ...

**Global statistics.** Every shard is encoded by one encoder fitted on the whole corpus (BM25's
document frequencies and average length) and quantized with one step (the largest weight of
all shards / 255), so a document's vector and a query's score are the same in its shard as
in one index over all documents.

**Routing.** ``hash``: a document lives in shard ``blake2b(id) mod N``, writes included.
``files``: each shard is one of the corpus files given; a write of an id a shard holds goes
to that shard, a new id by hash.

**Tie order.** One index ranks equal scores by document order: the corpus order. A shard
keeps its documents in corpus order too, and its ``.positions`` file maps each document id
(by a 64-bit hash) to its position in the whole corpus, so the merge of the shards' top-k
ranks ties by position (:func:`~lsr.index.results.merge_topk`) and returns the same ids,
scores and order as one index over all documents. Documents written later rank after every
indexed one among equal scores (by shard, then the shard's own order); a replaced document
keeps its corpus position.

:class:`ShardedCollection` searches and writes a cluster as one collection over a transport:
:class:`LocalShards` opens every shard in this process (the reference the Ray transport of
:mod:`lsr.pipeline.cluster` is tested against); :class:`Shard` is one shard, what a Ray
actor holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from lsr.errors import InputError
from lsr.index.errors import IndexFormatError, ShardsUnavailableError
from lsr.index.filters import Filter
from lsr.index.live import LiveIndex
from lsr.index.results import SearchResults, merge_topk
from lsr.index.storage import json_checksum, parse_sealed, write_file_atomically
from lsr.index.validation import as_sparse_batch, check_doc_ids, check_k

logger = logging.getLogger(__name__)

CLUSTER_FILE = "cluster.json"
FORMAT_NAME = "lsr-cluster"
FORMAT_VERSION = 1
ROUTINGS = ("hash", "files")
LATE = np.int64(2**62)  # the position of a document written after the cluster was built
_CHECKSUM = "checksum"
_POSITIONS = np.dtype([("key", "<u8"), ("position", "<i8")])


def id_keys(doc_ids: Sequence[str]) -> np.ndarray:
    """A 64-bit key per document id (blake2b of its UTF-8 bytes): routing and positions."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(d.encode("utf-8"), digest_size=8).digest(), "little")
            for d in doc_ids
        ),
        dtype=np.uint64,
        count=len(doc_ids),
    )


def shard_of(doc_ids: Sequence[str], n_shards: int) -> np.ndarray:
    """The shard (0 .. n_shards - 1) each id hashes to: the same on every machine."""
    return (id_keys(doc_ids) % np.uint64(n_shards)).astype(np.int64)


def shard_name(number: int) -> str:
    return f"shard-{number:04d}"


@dataclass
class ClusterManifest:
    """What ``cluster.json`` says: the shards (name, documents at build), how documents are
    routed, the vocabulary every shard shares and the global statistics."""

    cluster_id: str
    shards: list[dict]
    routing: str
    vocab_size: int
    vocab_hash: str
    quantization: dict
    statistics: dict = field(default_factory=dict)

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    def shard_path(self, root: str | Path, number: int) -> Path:
        return Path(root) / self.shards[number]["name"]

    def to_dict(self) -> dict:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **asdict(self)}


def is_cluster(path: str | Path) -> bool:
    """Whether ``path`` is a cluster directory (has ``cluster.json``)."""
    return (Path(path) / CLUSTER_FILE).is_file()


def write_manifest(root: str | Path, manifest: ClusterManifest) -> None:
    """Write ``cluster.json`` (checksummed, atomically)."""
    body = manifest.to_dict()
    data = json.dumps({**body, _CHECKSUM: json_checksum(body, _CHECKSUM)}, indent=1)
    write_file_atomically(Path(root) / CLUSTER_FILE, data.encode("utf-8"))


def read_manifest(root: str | Path) -> ClusterManifest:
    """The manifest of the cluster at ``root``, after checking it."""
    path = Path(root) / CLUSTER_FILE
    if not path.is_file():
        raise InputError(f"{root} is not a cluster (no {CLUSTER_FILE}); build one with "
                         "lsr index CORPUS --shards N --out DIR.")  # fmt: skip
    advice = "rebuild the cluster with lsr index --shards."
    body = parse_sealed(
        path.read_bytes(), path, FORMAT_NAME, FORMAT_VERSION, _CHECKSUM, "cluster", advice
    )
    if body.get("routing") not in ROUTINGS or not body.get("shards"):
        raise IndexFormatError(f"{path} names no shards or an unknown routing; {advice}")
    fields = {k: body[k] for k in ClusterManifest.__dataclass_fields__}
    return ClusterManifest(**fields)


class Positions:
    """The global positions of a shard's indexed documents, looked up by id (64-bit keys,
    sorted; 16 bytes per document, memory-mapped)."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    @classmethod
    def build(cls, doc_ids: Sequence[str], positions: np.ndarray) -> Positions:
        keys = id_keys(doc_ids)
        table = np.empty(len(keys), dtype=_POSITIONS)
        table["key"], table["position"] = keys, positions
        table.sort(order="key", kind="stable")
        if len(table) > 1 and np.any(table["key"][1:] == table["key"][:-1]):
            raise InputError("Two document ids of one shard share a 64-bit hash; rename one.")
        return cls(table)

    def save(self, path: str | Path) -> None:
        """Write the table (fsynced: the cluster directory is renamed into place after)."""
        with open(path, "wb") as f:
            np.save(f, self.table, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, path: str | Path) -> Positions:
        try:
            table = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise IndexFormatError(
                f"{path} is missing or corrupt ({e}); rebuild the cluster."
            ) from e
        if table.dtype != _POSITIONS:
            raise IndexFormatError(f"{path} is not a positions file.")
        return cls(table)

    def __len__(self) -> int:
        return len(self.table)

    def lookup(self, doc_ids: Sequence[str]) -> np.ndarray:
        """Each id's position; ``LATE`` for ids written after the build."""
        keys = id_keys(doc_ids)
        table = self.table
        at = np.minimum(np.searchsorted(table["key"], keys), max(len(table) - 1, 0))
        if not len(table):
            return np.full(len(keys), LATE, dtype=np.int64)
        found = table["key"][at] == keys
        return np.where(found, table["position"][at], LATE).astype(np.int64)


def positions_path(root: str | Path, name: str) -> Path:
    return Path(root) / f"{name}.positions"


class Shard:
    """One shard of a cluster: its collection (as writer or reader) and the positions that
    order its hits among the other shards'. A Ray actor of :mod:`lsr.pipeline.cluster` is
    this class, remote: every method takes and returns plain values."""

    def __init__(self, root: str | Path, number: int, read_only: bool = True, **live) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(root)
        if not 0 <= number < self.manifest.n_shards:
            raise InputError(f"The cluster at {root} has no shard {number}.")
        self.number = number
        self.name = self.manifest.shards[number]["name"]
        self.positions = Positions.load(positions_path(root, self.name))
        self.live = LiveIndex(self.manifest.shard_path(root, number), read_only=read_only, **live)
        try:
            self.live.warm_up()  # its kernels compiled now, not by a search with a deadline
        except BaseException:
            self.live.close()
            raise

    def search(
        self,
        queries: sp.csr_array,
        k: int = 10,
        filter: Filter | dict | str | None = None,
        fields: Sequence[str] | None = None,
        **options,
    ) -> SearchResults:
        """The shard's top-k, compact (only the hits' ids) and with each hit's position."""
        results = self.live.search(queries, k, filter=filter, fields=fields, **options).compact()
        order = np.full(results.docs.shape, -1, dtype=np.int64)
        valid = results.docs >= 0
        ids = results.doc_ids.to_pylist()
        if ids:
            order[valid] = self.positions.lookup(ids)[results.docs[valid]]
        results.order = order
        return results

    def upsert(self, vectors, doc_ids, documents=None) -> int:
        return self.live.upsert(vectors, doc_ids, documents)

    def delete(self, doc_ids: Sequence[str]) -> tuple[int, list[str]]:
        return self.live.delete(doc_ids)

    def contains(self, doc_ids: Sequence[str]) -> list[bool]:
        return self.live.contains(doc_ids)

    def document(self, doc_id: str, fields: Sequence[str] | None = None) -> dict | None:
        return self.live.document(doc_id, fields)

    def get(self, doc_id: str) -> dict[str, float] | None:
        return self.live.get(doc_id)

    def explain(self, doc_ids: Sequence[str], terms: np.ndarray) -> np.ndarray:
        return self.live.explain(doc_ids, terms)

    def stats(self) -> dict:
        return self.live.stats()

    def refresh(self) -> bool:
        return self.live.refresh()

    def vocabulary(self) -> list[str]:
        return self.live.vocab

    def ping(self) -> dict:
        """Who answers: the shard, its documents and the process (tests kill it by pid)."""
        return {"shard": self.name, "n_docs": self.live.n_docs, "pid": os.getpid(),
                "root": str(self.root)}  # fmt: skip

    def close(self) -> None:
        self.live.close()


def route(
    doc_ids: Sequence[str], manifest: ClusterManifest, holders: Sequence[Sequence[bool]] = ()
) -> np.ndarray:
    """The shard each id is written to: by hash, or (``files`` routing) the shard that
    ``holders[s][i]`` says holds it already."""
    owner = shard_of(doc_ids, manifest.n_shards)
    for number, holds in enumerate(holders):
        owner[np.asarray(holds, dtype=bool)] = number
    return owner


def split_rows(owner: np.ndarray, n_shards: int) -> list[np.ndarray]:
    """Per shard, the rows (in order) it owns."""
    return [np.flatnonzero(owner == s) for s in range(n_shards)]


class Down(NamedTuple):
    """What a transport gives for a shard that did not answer (dead, restarting, too slow)."""

    reason: str


class LocalShards:
    """The transport of a cluster opened in this process: every shard a :class:`Shard`."""

    def __init__(self, root: str | Path, read_only: bool = True, **live) -> None:
        manifest = read_manifest(root)
        self.shards: list[Shard] = []
        try:
            for number in range(manifest.n_shards):
                self.shards.append(Shard(root, number, read_only=read_only, **live))
        except BaseException:
            self.close()
            raise

    def call(self, calls: dict[int, tuple], timeout: float | None = None) -> dict[int, object]:
        """``{shard: (method, args, kwargs)}`` -> ``{shard: result}`` (errors raise)."""
        return {
            number: getattr(self.shards[number], method)(*args, **kwargs)
            for number, (method, args, kwargs) in calls.items()
        }

    def close(self) -> None:
        for shard in self.shards:
            shard.close()


class ShardedCollection:
    """A cluster searched and written as one collection: search scatters to every shard
    and merges exactly; writes go to the owning shard. ``transport`` carries the calls
    (default :class:`LocalShards`, every shard in this process; the Ray one puts each shard
    in an actor). With shards down, searches raise :class:`ShardsUnavailableError` naming
    them, or (``allow_partial=True``) merge the shards that answered and list the missing
    in the result's ``partial``; writes to a down shard raise it."""

    sharded = True

    def __init__(self, root: str | Path, transport=None, read_only: bool = True, **live) -> None:
        self.root = self.path = Path(root)
        self.manifest = read_manifest(root)
        self.names = [s["name"] for s in self.manifest.shards]
        self.transport = transport or LocalShards(root, read_only=read_only, **live)
        self.read_only = read_only
        self.timeout: float | None = None  # seconds a shard may take to answer
        self._vocab: list[str] | None = None

    @property
    def vocab(self) -> list[str]:
        """The vocabulary every shard shares (asked of the first shard once)."""
        if self._vocab is None:
            self._vocab = self._call({0: ("vocabulary", (), {})})[0]
        return self._vocab

    # ---- calls ---------------------------------------------------------------------------

    def _call(self, calls: dict[int, tuple], allow_partial: bool = False) -> dict[int, object]:
        """Each shard's answer; shards down raise unless ``allow_partial`` (then absent)."""
        answers = self.transport.call(calls, self.timeout)
        down = {n: a.reason for n, a in answers.items() if isinstance(a, Down)}
        if down and not allow_partial:
            raise ShardsUnavailableError([self.names[n] for n in sorted(down)], down)
        return {n: a for n, a in answers.items() if n not in down}

    def _everywhere(self, method: str, *args, allow_partial: bool = False, **kwargs) -> dict:
        every = {n: (method, args, kwargs) for n in range(len(self.names))}
        return self._call(every, allow_partial)

    # ---- reads ---------------------------------------------------------------------------

    @property
    def n_docs(self) -> int:
        return sum(s["n_docs"] for s in self._everywhere("stats").values())

    def search(
        self,
        queries: sp.csr_array,
        k: int = 10,
        filter: Filter | dict | str | None = None,
        fields: Sequence[str] | None = None,
        allow_partial: bool = False,
        **options,
    ) -> SearchResults:
        """The top-k over every shard, as one index over all documents would rank them: the
        batch goes to each shard as one request."""
        k = check_k(k)
        q = as_sparse_batch(queries, len(self.vocab), "Query vectors")
        parts = self._everywhere("search", q, k, filter=filter, fields=fields,
                                 allow_partial=allow_partial, **options)  # fmt: skip
        missing = [name for n, name in enumerate(self.names) if n not in parts]
        if not parts:
            raise ShardsUnavailableError(missing, {})
        merged = merge_topk([parts[n] for n in sorted(parts)], k)
        merged.partial = missing or None
        return merged

    def owner_of(self, doc_ids: Sequence[str]) -> np.ndarray:
        """The shard each id is (or would be) written to."""
        holders = ()
        if self.manifest.routing == "files":
            held = self._everywhere("contains", list(doc_ids))
            holders = [held[n] for n in range(len(self.names))]
        return route(doc_ids, self.manifest, holders)

    def document(self, doc_id: str, fields: Sequence[str] | None = None) -> dict | None:
        number = int(self.owner_of([doc_id])[0])
        return self._call({number: ("document", (doc_id, fields), {})})[number]

    def get(self, doc_id: str) -> dict[str, float] | None:
        number = int(self.owner_of([doc_id])[0])
        return self._call({number: ("get", (doc_id,), {})})[number]

    def explain(self, doc_ids: Sequence[str], terms: np.ndarray) -> np.ndarray:
        """Documents' weights for the given terms (zeros where a document is absent: each
        shard answers for its own, the others give zeros)."""
        answers = self._everywhere("explain", list(doc_ids), np.asarray(terms))
        return np.sum(list(answers.values()), axis=0, dtype=np.float32)

    def contains(self, doc_ids: Sequence[str]) -> list[bool]:
        held = self._everywhere("contains", list(doc_ids))
        return [any(h[i] for h in held.values()) for i in range(len(doc_ids))]

    def stats(self) -> dict:
        """The shards' statistics summed (``shards``: each one's, ``missing_shards``: those
        that did not answer)."""
        answers = self._everywhere("stats", allow_partial=True)
        return combine_stats(self.names, answers)

    def postings_of(self, terms: np.ndarray) -> int:
        """A cluster's searches cross the network: never light enough for an event loop."""
        return 2**62

    def warm_up(self) -> None:
        self._everywhere("ping")

    def refresh(self) -> bool:
        return any(self._everywhere("refresh").values())

    def check_vocab(self, vocab: Sequence[str], representation: str | None = None) -> None:
        if list(vocab) != self.vocab:
            raise InputError("The encoder's vocabulary differs from the cluster's.")

    main_name = "sparse"
    extras: tuple = ()
    representations: dict = {"sparse": "sparse"}

    # ---- writes --------------------------------------------------------------------------

    def upsert(
        self,
        vectors: sp.csr_array,
        doc_ids: Sequence[str],
        documents: Sequence[dict] | None = None,
        extras: dict | None = None,
    ) -> int:
        """Add or replace documents in their shards, each durable in its shard's log when
        this returns; the highest of the shards' sequence numbers. A shard that is down
        fails the call (503 over REST) after the others took their documents: retry it
        (a write of the same documents again is harmless)."""
        if extras:
            raise InputError("A cluster has one sparse representation; extras are refused.")
        ids = check_doc_ids(list(doc_ids))
        csr = as_sparse_batch(vectors, len(self.vocab), "Document vectors")
        if csr.shape[0] != len(ids):
            raise InputError(f"Got {csr.shape[0]} vectors but {len(ids)} ids.")
        if len(set(ids)) != len(ids):
            raise InputError("Document ids must be unique within a request.")
        calls = {}
        for number, rows in enumerate(split_rows(self.owner_of(ids), len(self.names))):
            if len(rows):
                docs = None if documents is None else [documents[i] for i in rows]
                calls[number] = ("upsert", (csr[rows], [ids[i] for i in rows], docs), {})
        return max(self._call(calls).values())

    def delete(self, doc_ids: Sequence[str]) -> tuple[int, list[str]]:
        """Delete documents from the shards that hold them; the highest sequence number and
        the ids that existed."""
        ids = check_doc_ids(list(doc_ids))
        answers = self._everywhere("delete", ids)
        gone = {d for _, existing in answers.values() for d in existing}
        return max(seq for seq, _ in answers.values()), [d for d in ids if d in gone]

    @property
    def writable(self) -> bool:
        return not self.read_only

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> ShardedCollection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def combine_stats(names: Sequence[str], answers: dict[int, dict]) -> dict:
    """One statistics dict for a cluster: counts summed, failures at their worst, each
    shard's own under ``shards`` and the silent ones under ``missing_shards``."""
    every = [answers[n] for n in sorted(answers)]
    out: dict = {"shards": {names[n]: answers[n] for n in sorted(answers)}}
    out["missing_shards"] = [name for n, name in enumerate(names) if n not in answers]
    summed = ("n_docs", "segments", "segment_docs", "deleted_docs", "buffer_docs", "postings",
              "last_seq", "flushed_seq", "log_records", "generation", "bytes_written",
              "wal_bytes")  # fmt: skip
    for key in summed:
        out[key] = sum(int(s.get(key, 0)) for s in every)
    first = every[0] if every else {}
    out["vocab_size"] = first.get("vocab_size", 0)
    out["representations"] = first.get("representations", {"sparse": "sparse"})
    out["read_only"] = any(s.get("read_only") for s in every)
    out["writable"] = (
        bool(every) and all(s.get("writable") for s in every) and not out["missing_shards"]
    )
    for work in ("writes", "flushes", "merges"):
        parts = [s.get(work, {}) for s in every]
        errors = [p.get("last_error") for p in parts if p.get("last_error")]
        merged = {"failures": max((p.get("failures", 0) for p in parts), default=0),
                  "last_error": errors[0] if errors else None}  # fmt: skip
        for key in ("count", "seconds"):
            if any(key in p for p in parts):
                merged[key] = sum(p.get(key, 0) for p in parts)
        if work == "merges":
            merged["running"] = sorted(r for p in parts for r in p.get("running", []))
        out[work] = {**(parts[0] if parts else {}), **merged}
    if out["missing_shards"]:
        out["writes"]["last_error"] = f"shards down: {', '.join(out['missing_shards'])}"
    return out
