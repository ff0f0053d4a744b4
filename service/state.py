"""What the app's routes share: the collection, its encoder, the keys, the limits, and the
checks and conversions every search route needs (written once here, used by each route).

A search runs on the event loop when it is microseconds of work (a query encoded without a
model, at most ``INLINE_POSTINGS`` postings to score, no filter, no explanations): a hop to
a thread costs more than the search. Anything heavier runs in a thread pool, and a request's
deadline (``timeout_ms``) bounds the wait: past it the client gets 504 and the event loop
has never waited (the kernel call finishes in its thread: Numba kernels cannot be
interrupted, and the limits on k, query length and batch size bound it). Text queries for a
model go through :class:`~lsr.service.query_batcher.QueryBatcher`, batched with the queries
of concurrent requests.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from fastapi import HTTPException, Request

from lsr.encoding import encode_with_unknown
from lsr.errors import InputError
from lsr.index import LiveIndex, SearchResults, parse_filter
from lsr.index.fusion import FusionSpec
from lsr.index.validation import empty_rows
from lsr.service.auth import KeyRing
from lsr.service.encode_pool import EncodePool
from lsr.service.forward import WorkerPlace
from lsr.service.metrics import Metrics
from lsr.service.middleware import DeadlineExceeded
from lsr.service.query_batcher import QueryBatcher
from lsr.service.schemas import SearchRequest

# postings a search may score on the event loop (about a millisecond of kernel time)
INLINE_POSTINGS = 250_000

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
    timeout_ms: int = 10_000  # a search's or encoding's deadline (a request may ask less)


def _fields_key(req: SearchRequest) -> tuple[str, ...] | None:
    """The fields a request asks for, as a hashable group key (None: no documents)."""
    return None if req.fields is None else tuple(req.fields)


def _hit_dicts(ids: list[str], scores: list[float], documents: list[dict] | None) -> list[dict]:
    """Hits as the responses carry them (``terms`` and ``retrievers`` filled on explain)."""
    hits = [
        {"id": d, "score": s, "terms": None, "document": None, "retrievers": None}
        for d, s in zip(ids, scores, strict=True)
    ]
    for hit, doc in zip(hits, documents or (), strict=False):
        hit["document"] = doc
    return hits


def _fusion_of(req: SearchRequest, default: FusionSpec | None) -> FusionSpec | None:
    """A request's fusion as a spec (its retrievers' order), else the collection's tuned one."""
    if req.fusion is None:
        return default
    given = req.fusion.model_dump()
    alpha = given.pop("alpha")
    if alpha is not None:
        given["weights"] = (alpha, 1.0 - alpha)
    if given["weights"] is not None:
        given["weights"] = tuple(given["weights"])
    try:
        return FusionSpec(**given)
    except InputError as e:
        raise HTTPException(422, str(e)) from e


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
    keys: KeyRing = field(default_factory=KeyRing)
    read_only: bool = False
    unknown_words: str = "accept"  # or "refuse": documents with words the vocabulary lacks
    encode_pool: EncodePool | None = None  # document encoding in worker processes, if any
    metrics: Metrics | None = None
    worker: WorkerPlace | None = None  # with several worker processes: this one's place
    search_threads: int | None = None  # the search thread pool's size (None: the cores)
    extra_encoders: dict = field(default_factory=dict)  # extra representations' encoders
    fusion: FusionSpec | None = None  # the collection's tuned fusion (lsr tune-fusion)
    _stop: threading.Event = field(default_factory=threading.Event)
    _refresher: threading.Thread | None = None

    @property
    def relays_writes(self) -> bool:
        """Whether this is a reader whose gateway relays writes to a writer process."""
        return self.worker is not None and self.worker.relays_writes

    @property
    def sharded(self) -> bool:
        """Whether the collection is a cluster of shards (lsr serve --ray)."""
        return getattr(self.live, "sharded", False)

    def __post_init__(self) -> None:
        self.position = {t: i for i, t in enumerate(self.live.vocab)}
        if self.metrics is None:
            self.metrics = Metrics(self.live.stats)
        # encoders say whether their queries run through a model (SPLADE) or a table
        # (BM25, inference-free); one that does not say is taken to need a model
        self.batcher = None
        if getattr(self.encoder, "queries_need_model", True):
            self.batcher = QueryBatcher(self.encoder, self.metrics, self.limits.max_batch)
        self.search_threads = self.search_threads or os.cpu_count() or 2
        self.executor = ThreadPoolExecutor(self.search_threads, thread_name_prefix="lsr-search")

    # ---- searches ------------------------------------------------------------------------

    def query_texts(self, requests: Sequence[SearchRequest]) -> list[str]:
        """The requests' query texts, after checking each request against the limits."""
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
        return texts

    def query_vectors(self, requests: Sequence[SearchRequest]) -> sp.csr_array:
        """The requests' query vectors, one row each, after checking each request against
        the limits; text queries are encoded in one encoder call."""
        return self._vectors(requests, self.query_texts(requests), None)

    def _vectors(
        self, requests: Sequence[SearchRequest], texts: list[str], encoded: sp.csr_array | None
    ) -> sp.csr_array:
        """The query vectors of ``requests``, whose ``texts`` are encoded (in order) in
        ``encoded``, or here in one encoder call when None."""
        if texts and encoded is None:
            encoded = self.encoder.encode_queries(texts)
        if len(texts) == len(requests):  # text only: the encoder's batch, as it is
            return encoded if isinstance(encoded, sp.csr_array) else sp.csr_array(encoded)
        text_rows = iter(range(len(texts)))
        rows = [
            encoded[[next(text_rows)]] if req.query is not None else self._vector_row(req.vector)
            for req in requests
        ]
        return sp.csr_array(sp.vstack(rows, format="csr"), dtype=np.float32)

    async def asearch(self, requests: Sequence[SearchRequest]) -> list[dict]:
        """:meth:`search` for the event loop: queries for a model batched with other
        requests', light searches inline, heavy ones in the thread pool, all within the
        requests' deadline (the shortest ``timeout_ms`` of a batch; 504 past it)."""
        if any(r.mode != "sparse" or r.retrievers for r in requests):
            return await self._asearch_modes(requests)
        texts = self.query_texts(requests)
        budget, deadline = self._deadline([r.timeout_ms for r in requests])
        encoded = None
        if texts and self.batcher is not None:
            started = time.perf_counter()
            encoded = await self._within(self.batcher.encode(texts), deadline, budget)
            self.metrics.encode_seconds.observe(time.perf_counter() - started)
        vectors = self._vectors(requests, texts, encoded)  # a table lookup: here, microseconds
        started = time.perf_counter()
        if self._light(requests, vectors):
            results = self.search(requests, vectors)
        else:
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(self.executor, self.search, requests, vectors)
            results = await self._within(work, deadline, budget)
        self.metrics.search_seconds.observe(time.perf_counter() - started)
        return results

    async def _asearch_modes(self, requests: Sequence[SearchRequest]) -> list[dict]:
        """Requests that ask for dense or hybrid search (or a named representation): each
        encoded by the encoders of its representations and searched, in the thread pool."""
        texts = self.query_texts(requests)
        if len(texts) != len(requests) and any(r.mode != "sparse" for r in requests):
            raise HTTPException(422, "dense and hybrid searches take query text, not a vector")
        budget, deadline = self._deadline([r.timeout_ms for r in requests])
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        work = loop.run_in_executor(self.executor, self._search_modes, requests)
        results = await self._within(work, deadline, budget)
        self.metrics.search_seconds.observe(time.perf_counter() - started)
        return results

    def _search_modes(self, requests: Sequence[SearchRequest]) -> list[dict]:
        from lsr.pipeline.hybrid import retrievers_for, search_mode

        encoders = {self.live.main_name: self.encoder, **self.extra_encoders}
        out = []
        for req in requests:
            if req.query is None:  # a vector for a named sparse representation
                raise HTTPException(422, "a search by representation name takes query text")
            fusion = _fusion_of(req, self.fusion)
            try:
                names = retrievers_for(self.live, req.mode, req.retrievers, fusion)
                results = search_mode(
                    self.live, encoders, [req.query], req.k, req.mode, names, fusion,
                    filter=req.filter, fields=_fields_key(req),
                    **({} if req.mode == "dense" else {"algorithm": req.algorithm}),
                )  # fmt: skip
            except InputError as e:
                raise HTTPException(422, str(e)) from e
            row = results[0]
            hits = _hit_dicts(row.ids, row.scores, row.documents)
            if req.explain and results.contributions is not None:
                for hit, parts in zip(hits, results.contributions[0], strict=True):
                    hit["retrievers"] = dict(zip(names, parts, strict=True))
            out.append({"hits": hits})
        return out

    def encode_extras(self, texts: Sequence[str]) -> dict:
        """The documents' vectors in each extra representation (what a write needs)."""
        return {
            name: enc.encode_documents(list(texts)) for name, enc in self.extra_encoders.items()
        }

    async def aencode(
        self, texts: Sequence[str], kind: str, timeout_ms: int | None = None
    ) -> sp.csr_array:
        """``texts`` encoded as queries (batched with other requests' for a model) or as
        documents (in the thread pool), within the deadline."""
        budget, deadline = self._deadline([timeout_ms])
        if kind == "query" and self.batcher is not None:
            return await self._within(self.batcher.encode(list(texts)), deadline, budget)
        encode = self.encoder.encode_queries if kind == "query" else self.encoder.encode_documents
        work = asyncio.get_running_loop().run_in_executor(self.executor, encode, list(texts))
        return await self._within(work, deadline, budget)

    def _deadline(self, asked: Sequence[int | None]) -> tuple[float, float]:
        """The seconds a request may take (its shortest ``timeout_ms``, else the server's)
        and the monotonic time they end."""
        given = [t for t in asked if t is not None]
        limit = self.limits.timeout_ms
        if any(t > limit for t in given):
            raise HTTPException(422, f"timeout_ms must be at most {limit} (the server's)")
        budget = min(given, default=limit) / 1e3
        return budget, time.monotonic() + budget

    def _light(self, requests: Sequence[SearchRequest], vectors: sp.csr_array) -> bool:
        """Whether searching ``vectors`` is microseconds of work, cheaper than a thread hop."""
        if any(r.filter is not None or r.explain for r in requests):
            return False
        return self.live.postings_of(vectors.indices) <= INLINE_POSTINGS

    async def _within(self, work: Awaitable, deadline: float, budget: float):
        try:
            return await asyncio.wait_for(work, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            self.metrics.deadlines.inc()
            raise DeadlineExceeded(
                f"the request did not finish within its deadline of {budget * 1e3:.0f} ms "
                "(timeout_ms)"
            ) from None

    def _vector_row(self, vector: dict[str, float]) -> sp.csr_array:
        unknown = [t for t in vector if t not in self.position]
        if unknown:
            raise HTTPException(422, f"terms not in the index vocabulary: {unknown[:10]}")
        weights = np.asarray(list(vector.values()), dtype=np.float32)
        cols = np.asarray([self.position[t] for t in vector], dtype=np.int64)
        return sp.csr_array(
            (weights, (np.zeros(len(cols), dtype=np.int64), cols)), shape=(1, len(self.position))
        )

    def search(
        self, requests: Sequence[SearchRequest], vectors: sp.csr_array | None = None
    ) -> list[dict]:
        """Each request's ``{"hits": [...]}``: one batched kernel call per algorithm asked for
        (top max-k, cut to each request's k), explanations for the first hits on request."""
        if vectors is None:
            vectors = self.query_vectors(requests)
        out: list[dict | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            try:
                condition = None if req.filter is None else parse_filter(req.filter)
            except InputError as e:
                raise HTTPException(422, str(e)) from e
            partial = req.allow_partial and self.sharded
            key = (req.algorithm, condition.key() if condition else None, _fields_key(req),
                   partial)  # fmt: skip
            groups.setdefault(key, []).append(i)
        for (algorithm, _, fields, partial), rows in groups.items():
            k = max(requests[i].k for i in rows)
            batch = vectors if len(rows) == len(requests) else vectors[rows]
            condition = requests[rows[0]].filter
            options = {"allow_partial": True} if partial else {}
            try:
                results = self.live.search(
                    batch, k, filter=condition, fields=fields, algorithm=algorithm, **options
                )
            except InputError as e:  # a filter on a field the collection does not store
                raise HTTPException(422, str(e)) from e
            for j, i in enumerate(rows):
                out[i] = self._hits(requests[i], vectors, i, results, j)
                if results.partial:
                    out[i].update(partial=True, missing_shards=results.partial)
        return out

    def _hits(
        self, req: SearchRequest, vectors: sp.csr_array, i: int, results: SearchResults, j: int
    ) -> dict:
        """Request ``i``'s hits (row ``j`` of ``results``), explained on request."""
        row = results[j]
        ids, scores = row.ids[: req.k], row.scores[: req.k]
        if not all(math.isfinite(s) for s in scores):
            raise HTTPException(422, "the query's weights are too large: scores overflow")
        hits = _hit_dicts(ids, scores, row.documents)
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
        if self.batcher is not None:
            self.batcher.close()
        self.executor.shutdown(wait=True)
        if self.encode_pool is not None:
            self.encode_pool.close()
        self.live.close()
