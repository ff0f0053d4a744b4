"""The REST API's request and response bodies (pydantic), and the error responses each route
documents. Requests are strict (no coercion, no unknown fields); limits that depend on the
server's settings (k, batch sizes) are checked once per request in :mod:`lsr.service.state`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lsr.index.validation import MAX_ID_BYTES
from lsr.kernels.dispatch import ALGORITHM_NAMES, ALGORITHMS

MAX_QUERY_WEIGHT = 1e6  # beyond it a float32 score could overflow to infinity
QueryWeight = Annotated[float, Field(ge=0, le=MAX_QUERY_WEIGHT, allow_inf_nan=False)]


class FusionRequest(BaseModel):
    """How a hybrid search fuses its retrievers' rankings (lsr.index.fusion)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    method: Literal["convex", "rrf"] = Field(
        "convex", description="convex: weighted sum of normalized scores; rrf: reciprocal rank"
    )
    normalization: Literal["minmax", "zscore", "none"] = Field(
        "minmax", description="convex: per-query score normalization"
    )
    weights: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = Field(
        None, description="one weight per retriever, in order (default equal)"
    )
    alpha: float | None = Field(
        None, ge=0, le=1, description="two retrievers: the first's weight (the second: 1-alpha)"
    )
    k: int = Field(60, ge=1, description="RRF's k")
    depth: int = Field(100, ge=1, le=10_000, description="hits each retriever contributes")

    @model_validator(mode="after")
    def _one_weighting(self) -> FusionRequest:
        if self.alpha is not None and self.weights is not None:
            raise ValueError("give alpha or weights, not both")
        return self


class SearchRequest(BaseModel):
    """A query as text (encoded by the server) or as a sparse vector {term: weight}: exactly
    one of ``query`` and ``vector``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"query": "how do bees make honey", "k": 5, "fields": ["title", "text"]},
                {
                    "query": "neutron stars",
                    "filter": {"field": "title", "in": ["Astronomy 1", "Astronomy 2"]},
                },
            ],
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
    algorithm: Literal[ALGORITHM_NAMES] = Field(
        "auto",
        description="; ".join(f"{a.name}: {a.description}" for a in ALGORITHMS),
    )
    filter: dict[str, Any] | None = Field(
        None,
        description='only documents whose stored fields match: {"field": F, "eq": V}, '
        '{"field": F, "in": [V, ...]}, {"field": F, "gte"|"gt"|"lte"|"lt": number or ISO '
        'date}, {"field": F, "exists": true}, {"and"|"or": [...]}, {"not": {...}}; dotted '
        "names reach into objects (metadata.year). Fewer than k hits when fewer documents "
        "pass.",
    )
    fields: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        description='stored fields to return in each hit\'s "document" (["*"]: all); '
        "omitted: no documents",
    )
    timeout_ms: int | None = Field(
        None,
        ge=1,
        description="deadline for encoding and searching, in milliseconds (at most the "
        "server's --timeout-ms, its default); past it the answer is 504",
    )
    allow_partial: bool = Field(
        False,
        description="a cluster (lsr serve --ray): when shards are down, answer with the "
        "other shards' hits, flagged partial, instead of 503",
    )
    mode: Literal["sparse", "dense", "hybrid"] = Field(
        "sparse",
        description="sparse: the main representation (or the one in retrievers); dense: the "
        "dense one; hybrid: several fused (default all of the collection's, or those tuned "
        "by lsr tune-fusion). dense and hybrid take text queries.",
    )
    retrievers: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        description="the representations to search, by name (GET /stats lists them); for "
        "hybrid, in the order of the fusion's weights",
    )
    fusion: FusionRequest | None = Field(
        None, description="hybrid: how to fuse (default: the collection's tuned fusion)"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchRequest:
        if (self.query is None) == (self.vector is None):
            raise ValueError("give exactly one of 'query' (text) or 'vector' ({term: weight})")
        if self.fusion is not None and self.mode != "hybrid":
            raise ValueError("'fusion' is for mode 'hybrid'")
        if self.vector is not None and self.mode != "sparse":
            raise ValueError(f"mode {self.mode!r} takes query text, not a vector")
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
    timeout_ms: int | None = Field(
        None, ge=1, description="overrides each query's timeout_ms: the batch's deadline"
    )


class EncodeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"texts": ["honey bees"], "kind": "query"}]},
    )
    texts: list[str] = Field(..., min_length=1)
    kind: Literal["query", "document"] = "query"
    timeout_ms: int | None = Field(
        None, ge=1, description="deadline in milliseconds (at most the server's --timeout-ms)"
    )


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
    fields: dict[str, Any] | None = Field(
        None,
        description="other fields to store with the document (numbers, text, booleans, "
        "lists, objects such as metadata), for results and filters",
    )


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

    @model_validator(mode="after")
    def _unique_ids(self) -> UpsertRequest:
        if len({d.id for d in self.documents}) != len(self.documents):
            raise ValueError("document ids must be unique within a request")
        return self


class TermContribution(BaseModel):
    term: str
    query_weight: float
    doc_weight: float
    contribution: float


class Hit(BaseModel):
    id: str
    score: float
    terms: list[TermContribution] | None = Field(None, description="with explain=true")
    document: dict[str, Any] | None = Field(None, description="the stored fields asked for")
    retrievers: dict[str, float | None] | None = Field(
        None,
        description="hybrid with explain=true: each retriever's weighted part of the score "
        "(null: it did not retrieve the document)",
    )


class SearchResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"hits": [{"id": "d146", "score": 7.35}], "took_ms": 0.4}]}
    )
    hits: list[Hit]
    took_ms: float
    partial: bool | None = Field(
        None, description="true when shards of a cluster were down (allow_partial)"
    )
    missing_shards: list[str] | None = Field(None, description="the shards left out")


class QueryHits(BaseModel):
    hits: list[Hit]
    partial: bool | None = None
    missing_shards: list[str] | None = None


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
    document: dict[str, Any] = Field(
        ..., description="the stored document: _id and its stored fields"
    )
    vector: dict[str, float] | None = Field(
        None, description="the stored term weights, with ?vector=true"
    )


class UpsertResponse(BaseModel):
    upserted: int
    seq: int = Field(..., description="write-ahead log sequence number of this write")
    unknown_terms: dict[str, list[str]] | None = Field(
        None,
        description="per document id, its analyzed words that the collection's fixed BM25 "
        "vocabulary lacks: no query finds the document by them (with --unknown-words refuse "
        "such a request is refused instead)",
    )


class DeleteResponse(BaseModel):
    deleted: str
    seq: int


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        ...,
        description="degraded: writes are refused for now or flushes or merges are failing; "
        "reads work",
    )
    documents: int
    writable: bool
    problems: list[str]


class StatsResponse(BaseModel):
    n_docs: int = Field(..., description="live documents (segments and write buffer)")
    segments: int
    segment_docs: int = Field(..., description="documents in segments, deleted ones included")
    deleted_docs: int = Field(..., description="deleted documents a merge has not removed yet")
    buffer_docs: int = Field(..., description="live documents in the write buffer")
    vocab_size: int
    representations: dict[str, str] = Field(
        ..., description="each representation's name and kind (sparse, dense), the main first"
    )
    postings: int
    last_seq: int
    flushed_seq: int = Field(..., description="the last write the segments hold")
    log_records: int
    generation: int = Field(..., description="the current commit point")
    bytes_written: int = Field(
        ..., description="bytes this server wrote: log, segments, deletion files, commit points"
    )
    wal_bytes: int
    read_only: bool
    writable: bool
    writes: dict = Field(..., description="failed appends in a row, the last error, back-off")
    flushes: dict = Field(..., description="flushes done, failures in a row, back-off")
    merges: dict = Field(..., description="merges done and running, failures, back-off")
    encoder: str
    limits: dict[str, float]
    worker: dict | None = Field(
        None,
        description="with several worker processes (lsr serve --workers): the one that "
        "answered (index, role, workers, pid); searches on a reader see writes at its next "
        "refresh",
    )


class RefreshResponse(BaseModel):
    changed: bool = Field(..., description="a segment was flushed, or a newer state was read")
    generation: int
    documents: int


class ErrorResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"error": "k must be at most 1000"}]})
    error: str
    detail: list[dict] | None = None


ERRORS = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in [
        (400, "invalid value"),
        (401, "missing or wrong X-API-Key"),
        (403, "the API key lacks the endpoint's scope"),
        (404, "not found"),
        (408, "request headers or body not received in time"),
        (413, "request body too large"),
        (422, "invalid request"),
        (429, "the API key's rate limit is exceeded; retry after the Retry-After header's seconds"),
    ]
}
WRITE_ERRORS = {
    **ERRORS,
    403: {
        "model": ErrorResponse,
        "description": "the API key lacks the write scope, or the server is read-only",
    },
    503: {
        "model": ErrorResponse,
        "description": "the write was not stored (disk full, I/O error); retry after the "
        "Retry-After header's seconds",
    },
}
SEARCH_ERRORS = {
    **ERRORS,
    504: {
        "model": ErrorResponse,
        "description": "the search or encoding did not finish within its deadline (timeout_ms)",
    },
}
