"""What the app's routes share: the collection, its encoder, the limits, and the checks and
conversions every search route needs (written once here, used by each route)."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from fastapi import HTTPException, Request

from lsr.encoding import encode_with_unknown
from lsr.errors import InputError
from lsr.index import LiveIndex, SearchResults, parse_filter
from lsr.index.validation import empty_rows
from lsr.service.encode_pool import EncodePool
from lsr.service.middleware import Metrics
from lsr.service.schemas import SearchRequest

logger = logging.getLogger(__name__)


@dataclass
class Limits:
    """What one request may ask for; requests beyond a limit are refused (413 or 422)."""

    max_body_bytes: int = 8 * 2**20
    max_k: int = 1000
    max_batch: int = 256
    max_query_chars: int = 4096
    max_documents: int = 1000
    max_explain: int = 100  # hits explained per query (the first ones); the rest come without
    header_timeout_s: float = 10.0  # to receive a request's headers (service.http_protocol)
    body_timeout_s: float = 30.0  # between two chunks of a request's body


def _fields_key(req: SearchRequest) -> tuple[str, ...] | None:
    """The fields a request asks for, as a hashable group key (None: no documents)."""
    return None if req.fields is None else tuple(req.fields)


def _words(words: list[str], shown: int = 10) -> str:
    more = f" and {len(words) - shown} more" if len(words) > shown else ""
    return ", ".join(repr(w) for w in words[:shown]) + more


def service_state(request: Request) -> ServiceState:
    """The state of the app that received ``request`` (set by ``create_app``)."""
    return request.app.state.service


@dataclass
class ServiceState:
    """One app's collection (as its writer, or read-only), encoder and settings."""

    live: LiveIndex
    encoder: object
    limits: Limits
    api_key: str | None = None
    protect_reads: bool = False
    read_only: bool = False
    unknown_words: str = "accept"  # or "refuse": documents with words the vocabulary lacks
    encode_pool: EncodePool | None = None  # document encoding in worker processes, if any
    metrics: Metrics = field(default_factory=Metrics)
    _stop: threading.Event = field(default_factory=threading.Event)
    _refresher: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.position = {t: i for i, t in enumerate(self.live.vocab)}

    # ---- searches ------------------------------------------------------------------------

    def query_vectors(self, requests: Sequence[SearchRequest]) -> sp.csr_array:
        """The requests' query vectors, one row each, after checking each request against
        the limits; text queries are encoded in one encoder call."""
        rows: list[sp.csr_array | None] = []
        texts: list[str] = []
        for req in requests:
            if req.k > self.limits.max_k:
                raise HTTPException(422, f"k must be at most {self.limits.max_k}")
            if req.query is not None:
                if not req.query.strip():
                    raise HTTPException(422, "the query text is empty")
                if len(req.query) > self.limits.max_query_chars:
                    raise HTTPException(
                        422, f"the query is longer than {self.limits.max_query_chars} characters"
                    )
                texts.append(req.query)
                rows.append(None)
            else:
                rows.append(self._vector_row(req.vector))
        if texts:
            encoded = self.encoder.encode_queries(texts)
            if len(texts) == len(rows):  # text only: the encoder's batch, as it is
                return encoded
            text_rows = iter(range(len(texts)))
            rows = [row if row is not None else encoded[[next(text_rows)]] for row in rows]
        return sp.csr_array(sp.vstack(rows, format="csr"), dtype=np.float32)

    def _vector_row(self, vector: dict[str, float]) -> sp.csr_array:
        unknown = [t for t in vector if t not in self.position]
        if unknown:
            raise HTTPException(422, f"terms not in the index vocabulary: {unknown[:10]}")
        weights = np.asarray(list(vector.values()), dtype=np.float32)
        cols = np.asarray([self.position[t] for t in vector], dtype=np.int64)
        return sp.csr_array(
            (weights, (np.zeros(len(cols), dtype=np.int64), cols)), shape=(1, len(self.position))
        )

    def search(self, requests: Sequence[SearchRequest]) -> list[dict]:
        """Each request's ``{"hits": [...]}``: one batched kernel call per algorithm asked for
        (top max-k, cut to each request's k), explanations for the first hits on request."""
        vectors = self.query_vectors(requests)
        out: list[dict | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            try:
                condition = None if req.filter is None else parse_filter(req.filter)
            except InputError as e:
                raise HTTPException(422, str(e)) from e
            key = (req.algorithm, condition.key() if condition else None, _fields_key(req))
            groups.setdefault(key, []).append(i)
        for (algorithm, _, fields), rows in groups.items():
            k = max(requests[i].k for i in rows)
            batch = vectors if len(rows) == len(requests) else vectors[rows]
            condition = requests[rows[0]].filter
            try:
                results = self.live.search(
                    batch, k, filter=condition, fields=fields, algorithm=algorithm
                )
            except InputError as e:  # a filter on a field the collection does not store
                raise HTTPException(422, str(e)) from e
            for j, i in enumerate(rows):
                out[i] = self._hits(requests[i], vectors, i, results, j)
        return out

    def _hits(
        self, req: SearchRequest, vectors: sp.csr_array, i: int, results: SearchResults, j: int
    ) -> dict:
        """Request ``i``'s hits (row ``j`` of ``results``), explained on request."""
        row = results[j]
        ids, scores = row.ids[: req.k], row.scores[: req.k]
        if not all(math.isfinite(s) for s in scores):
            raise HTTPException(422, "the query's weights are too large: scores overflow")
        hits = [{"id": d, "score": s} for d, s in zip(ids, scores, strict=True)]
        if row.documents is not None:
            for hit, doc in zip(hits, row.documents, strict=False):
                hit["document"] = doc
        if req.explain and hits:
            vector = vectors[[i]]
            explained = hits[: self.limits.max_explain]
            doc_weights = self.live.explain([h["id"] for h in explained], vector.indices)
            vocab = self.live.vocab
            for hit, row in zip(explained, doc_weights, strict=True):
                hit["terms"] = sorted(
                    (
                        {
                            "term": vocab[t],
                            "query_weight": float(qw),
                            "doc_weight": float(dw),
                            "contribution": float(qw * dw),
                        }
                        for t, qw, dw in zip(vector.indices, vector.data, row, strict=True)
                        if dw > 0
                    ),
                    key=lambda x: -x["contribution"],
                )
        return {"hits": hits}

    # ---- writes --------------------------------------------------------------------------

    def encode_new_documents(
        self, ids: Sequence[str], texts: Sequence[str]
    ) -> tuple[sp.csr_array, dict[str, list[str]]]:
        """Document vectors for an upsert, and per id the words the encoder's fixed
        vocabulary lacks (only encoders that can say: BM25's fitted vocabulary). A document
        with no indexable word, or (with ``unknown_words="refuse"``) with any unknown word,
        refuses the whole request with 422, naming the document and the words."""
        if self.encode_pool is not None:
            vectors, unknown_lists = self.encode_pool.encode(texts)
        else:
            vectors, unknown_lists = encode_with_unknown(self.encoder, texts)
        unknown = {d: w for d, w in zip(ids, unknown_lists, strict=True) if w}
        for i in empty_rows(vectors):
            words = unknown.get(ids[i])
            reason = (
                f"none of its words is in the collection's vocabulary ({_words(words)}); "
                "the vocabulary and its statistics are fixed when the collection is built "
                "(rebuild it with lsr index to take new words)"
                if words
                else "it has no indexable text"
            )
            raise HTTPException(422, f"document {ids[i]!r} cannot be found by any query: {reason}")
        if unknown and self.unknown_words == "refuse":
            doc_id, words = next(iter(unknown.items()))
            raise HTTPException(
                422,
                f"document {doc_id!r} has words the collection's vocabulary lacks "
                f"({_words(words)}); the server refuses them (--unknown-words refuse)",
            )
        return vectors, unknown

    def start_refreshing(self, seconds: float) -> None:
        """A read-only server: look for the writer's new commit points and log records every
        ``seconds`` (:meth:`LiveIndex.refresh`), in a background thread, until :meth:`close`."""
        if not self.read_only or seconds <= 0 or self._refresher is not None:
            return

        def run() -> None:
            while not self._stop.wait(seconds):
                try:
                    self.live.refresh()
                except Exception:  # the collection is mid-change or damaged: serve what we have
                    logger.exception("refreshing the collection failed; serving the last state")

        self._refresher = threading.Thread(target=run, name="lsr-refresh", daemon=True)
        self._refresher.start()

    def close(self) -> None:
        """Stop refreshing; let a flush or merge in progress finish, then checkpoint the log
        and release the lock."""
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
        if self.encode_pool is not None:
            self.encode_pool.close()
        self.live.close()
