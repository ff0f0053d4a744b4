"""The FastAPI app: search, encode and update an index over HTTP.

Searches run in the server's worker threads on an immutable snapshot (the Numba kernels
release the GIL, so several searches use several cores); writes are logged durably before
they are acknowledged (see ``index.live``) and never block searches. Every bad input gets a
4xx answer with a JSON body ``{"error": ..., "detail": ...}``.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from eval.pipeline import ENCODER_DIR
from index import LiveIndex
from index.algorithms import ALGORITHMS
from lsr import load_encoder

logger = logging.getLogger(__name__)


@dataclass
class Limits:
    max_body_bytes: int = 8 * 2**20
    max_k: int = 1000
    max_batch: int = 256
    max_query_chars: int = 4096
    max_documents: int = 1000


class SearchRequest(BaseModel):
    """A query as text (encoded by the server) or as a sparse vector {term: weight}."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"query": "how do bees make honey", "k": 5, "explain": True}]
        },
    )
    query: str | None = Field(None, description="query text; give this or vector")
    vector: dict[str, float] | None = Field(None, description="term -> weight; give this or query")
    k: int = Field(10, ge=1, description="number of hits")
    explain: bool = Field(False, description="return the matching terms and their contributions")
    algorithm: Literal[ALGORITHMS] = "auto"


class BatchSearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"queries": [{"query": "honey bees"}, {"query": "lava"}], "k": 3}]
        },
    )
    queries: list[SearchRequest] = Field(..., min_length=1)
    k: int | None = Field(None, ge=1, description="overrides each query's k")


class EncodeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"texts": ["honey bees"], "kind": "query"}]}
    )
    texts: list[str] = Field(..., min_length=1)
    kind: Literal["query", "document"] = "query"


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(..., min_length=1, max_length=512)
    text: str = ""
    title: str = ""


class UpsertRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"documents": [{"id": "new-1", "title": "Bees", "text": "Bees make honey."}]}
            ]
        },
    )
    documents: list[DocumentIn] = Field(..., min_length=1)


class TermContribution(BaseModel):
    term: str
    query_weight: float
    doc_weight: float
    contribution: float


class Hit(BaseModel):
    id: str
    score: float
    terms: list[TermContribution] | None = Field(None, description="with explain=true")


class SearchResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"hits": [{"id": "d146", "score": 7.35}], "took_ms": 0.4}]}
    )
    hits: list[Hit]
    took_ms: float


class QueryHits(BaseModel):
    hits: list[Hit]


class BatchSearchResponse(BaseModel):
    results: list[QueryHits]
    took_ms: float


class EncodeResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"vectors": [{"honei": 1.0, "bee": 1.0}]}]}
    )
    vectors: list[dict[str, float]]


class DocumentResponse(BaseModel):
    id: str
    vector: dict[str, float] = Field(..., description="the stored term weights")


class UpsertResponse(BaseModel):
    upserted: int
    seq: int = Field(..., description="write-ahead log sequence number of this write")


class DeleteResponse(BaseModel):
    deleted: str
    seq: int


class HealthResponse(BaseModel):
    status: str
    documents: int


class StatsResponse(BaseModel):
    n_docs: int
    base_docs: int
    delta_docs: int
    deleted_or_replaced: int
    vocab_size: int
    postings: int
    last_seq: int
    merged_seq: int
    wal_bytes: int
    encoder: str
    limits: dict[str, int]


class ErrorResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"error": "k must be at most 1000"}]})
    error: str
    detail: list[dict] | None = None


ERRORS = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in [
        (400, "invalid value"),
        (401, "missing or wrong X-API-Key"),
        (404, "not found"),
        (413, "request body too large"),
        (422, "invalid request"),
    ]
}


class Metrics:
    """Request counters and latency sums in the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            self.seconds[route] += seconds

    def render(self, stats: dict) -> str:
        lines = ["# TYPE lsr_requests_total counter"]
        with self._lock:
            for (route, status), n in sorted(self.requests.items()):
                lines.append(f'lsr_requests_total{{route="{route}",status="{status}"}} {n}')
            lines.append("# TYPE lsr_request_seconds_total counter")
            for route, s in sorted(self.seconds.items()):
                lines.append(f'lsr_request_seconds_total{{route="{route}"}} {s:.6f}')
        lines += [
            "# TYPE lsr_documents gauge",
            f"lsr_documents {stats['n_docs']}",
            "# TYPE lsr_wal_bytes gauge",
            f"lsr_wal_bytes {stats['wal_bytes']}",
            "# TYPE lsr_last_seq gauge",
            f"lsr_last_seq {stats['last_seq']}",
        ]
        return "\n".join(lines) + "\n"


class BodyLimit:
    """ASGI middleware refusing request bodies over ``limit`` bytes with 413 (streamed too)."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _too_large(send, self.limit)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _too_large(send, self.limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    body = (f'{{"error":"request body larger than {limit} bytes"}}').encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    index_dir: str | Path,
    encoder: str | None = None,
    api_key: str | None = None,
    protect_reads: bool = False,
    limits: Limits | None = None,
    merge_threshold: int = 10_000,
) -> FastAPI:
    """The app serving the index at ``index_dir`` (with its saved encoder unless ``encoder``)."""
    limits = limits or Limits()
    live = LiveIndex(index_dir, merge_threshold=merge_threshold)
    enc = load_encoder(encoder or Path(index_dir) / ENCODER_DIR)
    if list(enc.vocab) != live.vocab:
        raise ValueError(f"The encoder's vocabulary differs from the index at {index_dir}.")
    position = {t: i for i, t in enumerate(live.vocab)}
    _warm_up(live)
    metrics = Metrics()
    merging = threading.Lock()
    app = FastAPI(
        title="lsr",
        version="0.1.0",
        description="Learned sparse retrieval: search, encode and update a sparse index.",
    )
    app.state.live = live

    def check_key(request: Request, required: bool) -> None:
        if api_key is None or not required:
            return
        given = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    def writer(request: Request) -> None:
        check_key(request, True)

    def reader(request: Request) -> None:
        check_key(request, protect_reads)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.observe(
            getattr(route, "path", "unmatched"), response.status_code, time.perf_counter() - start
        )
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        detail = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "detail": detail}, status_code=422)

    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    def query_vector(req: SearchRequest) -> sp.csr_array:
        if (req.query is None) == (req.vector is None):
            raise HTTPException(
                422, "give exactly one of 'query' (text) or 'vector' ({term: weight})"
            )
        if req.k > limits.max_k:
            raise HTTPException(422, f"k must be at most {limits.max_k}")
        if req.query is not None:
            if not req.query.strip():
                raise HTTPException(422, "the query text is empty")
            if len(req.query) > limits.max_query_chars:
                raise HTTPException(
                    422, f"the query is longer than {limits.max_query_chars} characters"
                )
            return enc.encode_queries([req.query])
        unknown = [t for t in req.vector if t not in position]
        if unknown:
            raise HTTPException(422, f"terms not in the index vocabulary: {unknown[:10]}")
        weights = np.asarray(list(req.vector.values()), dtype=np.float32)
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise HTTPException(422, "vector weights must be finite and >= 0")
        cols = np.asarray([position[t] for t in req.vector], dtype=np.int64)
        return sp.csr_array(
            (weights, (np.zeros(len(cols), dtype=np.int64), cols)), shape=(1, len(position))
        )

    def hits(req: SearchRequest, vector: sp.csr_array, result, k: int) -> dict:
        out = []
        q = sp.csr_array(vector)
        for doc_id, score in zip(result.ids, result.scores, strict=True):
            hit = {"id": doc_id, "score": score}
            if req.explain:
                doc_w = live.explain(doc_id, q.indices)
                hit["terms"] = sorted(
                    (
                        {
                            "term": live.vocab[t],
                            "query_weight": float(qw),
                            "doc_weight": float(dw),
                            "contribution": float(qw * dw),
                        }
                        for t, qw, dw in zip(q.indices, q.data, doc_w, strict=True)
                        if dw > 0
                    ),
                    key=lambda x: -x["contribution"],
                )
            out.append(hit)
        return {"hits": out[:k]}

    @app.post("/search", dependencies=[Depends(reader)], responses=ERRORS)
    def search(req: SearchRequest) -> SearchResponse:
        """Top-k documents for one query (text or vector)."""
        start = time.perf_counter()
        vector = query_vector(req)
        [result] = live.search(vector, req.k, algorithm=req.algorithm)
        return {**hits(req, vector, result, req.k), "took_ms": (time.perf_counter() - start) * 1e3}

    @app.post("/search/batch", dependencies=[Depends(reader)], responses=ERRORS)
    def search_batch(req: BatchSearchRequest) -> BatchSearchResponse:
        """Several queries in one request (at most the server's batch limit)."""
        if len(req.queries) > limits.max_batch:
            raise HTTPException(422, f"at most {limits.max_batch} queries per batch")
        start = time.perf_counter()
        results = []
        for q in req.queries:
            k = req.k or q.k
            q = q.model_copy(update={"k": k})
            vector = query_vector(q)
            [result] = live.search(vector, k, algorithm=q.algorithm)
            results.append(hits(q, vector, result, k))
        return {"results": results, "took_ms": (time.perf_counter() - start) * 1e3}

    @app.post("/encode", dependencies=[Depends(reader)], responses=ERRORS)
    def encode(req: EncodeRequest) -> EncodeResponse:
        """Sparse vectors ({term: weight}) of texts, as queries or as documents."""
        if len(req.texts) > limits.max_batch:
            raise HTTPException(422, f"at most {limits.max_batch} texts per request")
        if any(len(t) > limits.max_query_chars * 16 for t in req.texts):
            raise HTTPException(422, "a text is too long")
        vectors = (
            enc.encode_queries(req.texts)
            if req.kind == "query"
            else enc.encode_documents(req.texts)
        )
        return {"vectors": [dict(enc.decode(vectors[[i]])) for i in range(vectors.shape[0])]}

    @app.get("/documents/{doc_id}", dependencies=[Depends(reader)], responses=ERRORS)
    def get_document(doc_id: str) -> DocumentResponse:
        """A document's stored vector."""
        vector = live.get(doc_id)
        if vector is None:
            raise HTTPException(404, f"no document {doc_id!r}")
        return {"id": doc_id, "vector": vector}

    @app.post("/documents", dependencies=[Depends(writer)], responses=ERRORS)
    def upsert(req: UpsertRequest) -> UpsertResponse:
        """Add or replace documents (encoded by the server); durable when this returns."""
        if len(req.documents) > limits.max_documents:
            raise HTTPException(422, f"at most {limits.max_documents} documents per request")
        ids = [d.id for d in req.documents]
        if len(set(ids)) != len(ids):
            raise HTTPException(422, "document ids must be unique within a request")
        texts = [f"{d.title} {d.text}".strip() for d in req.documents]
        seq = live.upsert(enc.encode_documents(texts), ids)
        maybe_merge()
        return {"upserted": len(ids), "seq": seq}

    @app.delete("/documents/{doc_id}", dependencies=[Depends(writer)], responses=ERRORS)
    def delete(doc_id: str) -> DeleteResponse:
        """Delete a document; durable when this returns."""
        seq, gone = live.delete([doc_id])
        if not gone:
            raise HTTPException(404, f"no document {doc_id!r}")
        maybe_merge()
        return {"deleted": doc_id, "seq": seq}

    def maybe_merge() -> None:
        if live.needs_merge() and merging.acquire(blocking=False):

            def run():
                try:
                    live.merge()
                except Exception:
                    logger.exception("background merge failed; updates stay in the log")
                finally:
                    merging.release()

            threading.Thread(target=run, daemon=True).start()

    @app.get("/health")
    def health() -> HealthResponse:
        return {"status": "ok", "documents": live.stats()["n_docs"]}

    @app.get("/stats", dependencies=[Depends(reader)], responses=ERRORS)
    def stats() -> StatsResponse:
        return {
            **live.stats(),
            "encoder": getattr(enc, "name", type(enc).__name__),
            "limits": limits.__dict__,
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> str:
        return metrics.render(live.stats())

    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    return app


def _warm_up(live: LiveIndex) -> None:
    """Compile (or load from Numba's cache) the kernels for the base index and for the float32
    delta index before the first request, so no request pays for compilation."""
    from index import Index

    q = sp.csr_array((np.ones(1, np.float32), ([0], [0])), shape=(1, len(live.vocab)))
    live.search(q, 1)
    live.search(sp.vstack([q, q], format="csr"), 1)
    tiny = Index.build(q, ["warm-up"], live.vocab, quantization="float32")
    tiny.search(q, 1)
    tiny.search(sp.vstack([q, q], format="csr"), 1)
