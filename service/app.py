"""The FastAPI app: search, encode and update an index over HTTP.

Searches run in the server's worker threads on an immutable snapshot (the Numba kernels
release the GIL, so several searches use several cores); writes are logged durably before
they are acknowledged (see ``index.live``) and never block searches. Every error gets a JSON
body ``{"error": ..., "detail": ...}``: bad input a 4xx, a write the disk cannot take now a
503 with ``Retry-After`` (nothing was stored; reads keep working), a bug a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import scipy.sparse as sp
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from eval.pipeline import ENCODER_DIR
from index import LiveIndex
from index.algorithms import ALGORITHMS
from index.errors import InvalidDocumentIdError, WriteUnavailableError
from index.validation import MAX_ID_BYTES
from lsr import load_encoder

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


class _DocumentIdConvertor(PathConvertor):
    """A path parameter that takes the rest of the path, newlines included (``path`` stops at
    them), so any id reaches the handler, which refuses a bad one with 422."""

    regex = r"[\s\S]+"


register_url_convertor("doc_id", _DocumentIdConvertor())

MAX_QUERY_WEIGHT = 1e6  # beyond it a float32 score could overflow to infinity
QueryWeight = Annotated[float, Field(ge=0, le=MAX_QUERY_WEIGHT, allow_inf_nan=False)]


class SearchRequest(BaseModel):
    """A query as text (encoded by the server) or as a sparse vector {term: weight}: exactly
    one of ``query`` and ``vector``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"query": "how do bees make honey", "k": 5, "explain": True}],
            "oneOf": [{"required": ["query"]}, {"required": ["vector"]}],
        },
    )
    query: str | None = Field(None, description="query text; give exactly one of query, vector")
    vector: dict[str, QueryWeight] | None = Field(
        None,
        description="term -> weight (0 to 1e6); give exactly one of query, vector",
    )
    k: int = Field(10, ge=1, description="number of hits")
    explain: bool = Field(
        False,
        description="return the matching terms and their contributions, for the first hits "
        "(at most the server's max_explain)",
    )
    algorithm: Literal[ALGORITHMS] = "auto"

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchRequest:
        if (self.query is None) == (self.vector is None):
            raise ValueError("give exactly one of 'query' (text) or 'vector' ({term: weight})")
        return self


class BatchSearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"queries": [{"query": "honey bees"}, {"query": "lava"}], "k": 3}]
        },
    )
    queries: list[SearchRequest] = Field(..., min_length=1)
    k: int | None = Field(None, ge=1, description="overrides each query's k")


class EncodeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"texts": ["honey bees"], "kind": "query"}]},
    )
    texts: list[str] = Field(..., min_length=1)
    kind: Literal["query", "document"] = "query"


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: str = Field(
        ...,
        min_length=1,
        max_length=MAX_ID_BYTES,
        description=f"any UTF-8 string of at most {MAX_ID_BYTES} bytes without control "
        "characters; percent-encode it in URL paths",
    )
    text: str = ""
    title: str = ""


class UpsertRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
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
    status: Literal["ok", "degraded"] = Field(
        ..., description="degraded: writes are refused for now or merges are failing; reads work"
    )
    documents: int
    writable: bool
    problems: list[str]


class StatsResponse(BaseModel):
    n_docs: int
    base_docs: int
    delta_docs: int
    deleted_or_replaced: int
    vocab_size: int
    postings: int
    last_seq: int
    merged_seq: int
    log_records: int
    wal_bytes: int
    read_only: bool
    writable: bool
    writes: dict = Field(..., description="failed appends in a row, the last error, back-off")
    merges: dict = Field(..., description="failed merges in a row, the last error, back-off")
    encoder: str
    limits: dict[str, float]


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
        (408, "request headers or body not received in time"),
        (413, "request body too large"),
        (422, "invalid request"),
    ]
}
WRITE_ERRORS = {
    **ERRORS,
    403: {"model": ErrorResponse, "description": "the server is read-only"},
    503: {
        "model": ErrorResponse,
        "description": "the write was not stored (disk full, I/O error); retry after the "
        "Retry-After header's seconds",
    },
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
            "# TYPE lsr_writable gauge",
            f"lsr_writable {int(stats['writable'])}",
            "# TYPE lsr_write_failures gauge",
            f"lsr_write_failures {stats['writes']['failures']}",
            "# TYPE lsr_merge_failures gauge",
            f"lsr_merge_failures {stats['merges']['failures']}",
        ]
        return "\n".join(lines) + "\n"


class RequestBody:
    """ASGI middleware that reads a request's whole body before the app sees it: over
    ``limit`` bytes (announced or streamed in chunks) it answers 413, and 408 when the client
    pauses longer than ``timeout`` seconds between two chunks. The app then reads the body
    from memory, so no half-read body reaches a handler (where FastAPI would answer 400)."""

    def __init__(self, app, limit: int, timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _json_error(send, 413, f"request body larger than {self.limit} bytes")
        chunks, seen, more = [], 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                return await _json_error(send, 408, "request body not received in time")
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                return await _json_error(send, 413, f"request body larger than {self.limit} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as usual

        return await self.app(scope, replay, send)


async def _json_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
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
    read_only: bool = False,
) -> FastAPI:
    """The app serving the index at ``index_dir`` (with its saved encoder unless ``encoder``).

    The app is the collection's writer (it holds the writer lock until shutdown) unless
    ``read_only``, which serves the collection as it was at start-up and refuses writes."""
    limits = limits or Limits()
    live = LiveIndex(index_dir, merge_threshold=merge_threshold, read_only=read_only)
    try:
        enc = load_encoder(encoder or Path(index_dir) / ENCODER_DIR)
        if list(enc.vocab) != live.vocab:
            raise ValueError(f"The encoder's vocabulary differs from the index at {index_dir}.")
        _warm_up(live)
    except BaseException:
        live.close()
        raise
    position = {t: i for i, t in enumerate(live.vocab)}
    metrics = Metrics()
    merging = threading.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        with merging:  # let a background merge finish, then checkpoint and unlock
            live.close()

    app = FastAPI(
        title="lsr",
        version="0.1.0",
        description="Learned sparse retrieval: search, encode and update a sparse index.",
        lifespan=lifespan,
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
        if read_only:
            raise HTTPException(403, "this server is read-only; send writes to the writer")

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

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        detail = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        for d in detail:  # the message of a model validator, without pydantic's prefix
            d["msg"] = str(d["msg"]).removeprefix("Value error, ")
        return JSONResponse({"error": "invalid request", "detail": detail}, status_code=422)

    @app.exception_handler(InvalidDocumentIdError)
    async def bad_id(request: Request, exc: InvalidDocumentIdError):
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(WriteUnavailableError)
    async def write_unavailable(request: Request, exc: WriteUnavailableError):
        retry = str(max(1, math.ceil(exc.retry_after)))
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": retry})

    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal server error; see the server log"}, 500)

    def query_vector(req: SearchRequest) -> sp.csr_array:
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
        cols = np.asarray([position[t] for t in req.vector], dtype=np.int64)
        return sp.csr_array(
            (weights, (np.zeros(len(cols), dtype=np.int64), cols)), shape=(1, len(position))
        )

    def hits(req: SearchRequest, vector: sp.csr_array, result) -> dict:
        if not all(math.isfinite(s) for s in result.scores):
            raise HTTPException(422, "the query's weights are too large: scores overflow")
        out = [{"id": d, "score": s} for d, s in zip(result.ids, result.scores, strict=True)]
        if req.explain and out:
            q = sp.csr_array(vector)
            explained = out[: limits.max_explain]
            doc_w = live.explain([h["id"] for h in explained], q.indices)
            for hit, row in zip(explained, doc_w, strict=True):
                hit["terms"] = sorted(
                    (
                        {
                            "term": live.vocab[t],
                            "query_weight": float(qw),
                            "doc_weight": float(dw),
                            "contribution": float(qw * dw),
                        }
                        for t, qw, dw in zip(q.indices, q.data, row, strict=True)
                        if dw > 0
                    ),
                    key=lambda x: -x["contribution"],
                )
        return {"hits": out}

    @app.post("/search", dependencies=[Depends(reader)], responses=ERRORS)
    def search(req: SearchRequest) -> SearchResponse:
        """Top-k documents for one query (text or vector)."""
        start = time.perf_counter()
        vector = query_vector(req)
        [result] = live.search(vector, req.k, algorithm=req.algorithm)
        return {**hits(req, vector, result), "took_ms": (time.perf_counter() - start) * 1e3}

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
            results.append(hits(q, vector, result))
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

    @app.get("/documents/{doc_id:doc_id}", dependencies=[Depends(reader)], responses=ERRORS)
    def get_document(doc_id: str) -> DocumentResponse:
        """A document's stored vector. Percent-encode the id (``/`` as ``%2F``, ``.`` as
        ``%2E``), so that every id, ``a/b`` and ``..`` included, can be addressed."""
        vector = live.get(doc_id)
        if vector is None:
            raise HTTPException(404, f"no document {doc_id!r}")
        return {"id": doc_id, "vector": vector}

    @app.post("/documents", dependencies=[Depends(writer)], responses=WRITE_ERRORS)
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

    @app.delete(
        "/documents/{doc_id:doc_id}", dependencies=[Depends(writer)], responses=WRITE_ERRORS
    )
    def delete(doc_id: str) -> DeleteResponse:
        """Delete a document (percent-encode the id, as for GET); durable when this returns."""
        seq, gone = live.delete([doc_id])
        if not gone:
            raise HTTPException(404, f"no document {doc_id!r}")
        maybe_merge()
        return {"deleted": doc_id, "seq": seq}

    def maybe_merge() -> None:
        """Start a background merge when enough changed and no failed merge is backing off."""
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
        """Reads work whenever this answers; ``degraded`` says why writes may not."""
        stats = live.stats()
        problems = []
        if read_only:
            problems.append("read-only: writes go to the writer")
        elif not stats["writable"]:
            problems.append(f"writes refused for now: {stats['writes']['last_error']}")
        if stats["merges"]["failures"]:
            problems.append(f"merges failing: {stats['merges']['last_error']}")
        return {
            "status": "degraded" if problems and not read_only else "ok",
            "documents": stats["n_docs"],
            "writable": stats["writable"],
            "problems": problems,
        }

    @app.get("/stats", dependencies=[Depends(reader)], responses=ERRORS)
    def stats() -> StatsResponse:
        return {
            **live.stats(),
            "encoder": getattr(enc, "name", type(enc).__name__),
            "limits": asdict(limits),
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> str:
        return metrics.render(live.stats())

    app.add_middleware(RequestBody, limit=limits.max_body_bytes, timeout=limits.body_timeout_s)
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
    for index in (tiny, live.snapshot.base):  # the lookups of GET /documents and explain
        if index.n_docs:
            index.term_weights(np.zeros(1, np.int64), q.indices)
            index.document_vector(0)
