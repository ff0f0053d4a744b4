"""``POST /search``, ``POST /search/batch`` and ``POST /encode``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request

from lsr.service.middleware import require_reader
from lsr.service.schemas import (
    ERRORS,
    BatchSearchRequest,
    BatchSearchResponse,
    EncodeRequest,
    EncodeResponse,
    SearchRequest,
    SearchResponse,
)
from lsr.service.state import service_state

router = APIRouter(dependencies=[Depends(require_reader)], responses=ERRORS)


@router.post("/search")
def search(req: SearchRequest, request: Request) -> SearchResponse:
    """Top-k documents for one query (text or vector)."""
    start = time.perf_counter()
    [hits] = service_state(request).search([req])
    return {**hits, "took_ms": (time.perf_counter() - start) * 1e3}


@router.post("/search/batch")
def search_batch(req: BatchSearchRequest, request: Request) -> BatchSearchResponse:
    """Several queries in one request (at most the server's batch limit), searched together:
    one batched, parallel kernel call per algorithm asked for."""
    state = service_state(request)
    if len(req.queries) > state.limits.max_batch:
        raise HTTPException(422, f"at most {state.limits.max_batch} queries per batch")
    start = time.perf_counter()
    queries = [q.model_copy(update={"k": req.k}) if req.k else q for q in req.queries]
    results = state.search(queries)
    return {"results": results, "took_ms": (time.perf_counter() - start) * 1e3}


@router.post("/encode")
def encode(req: EncodeRequest, request: Request) -> EncodeResponse:
    """Sparse vectors ({term: weight}) of texts, as queries or as documents."""
    state = service_state(request)
    limits, enc = state.limits, state.encoder
    if len(req.texts) > limits.max_batch:
        raise HTTPException(422, f"at most {limits.max_batch} texts per request")
    if any(len(t) > limits.max_query_chars * 16 for t in req.texts):
        raise HTTPException(422, "a text is too long")
    vectors = (
        enc.encode_queries(req.texts) if req.kind == "query" else enc.encode_documents(req.texts)
    )
    return {"vectors": [dict(enc.decode(vectors[[i]])) for i in range(vectors.shape[0])]}
