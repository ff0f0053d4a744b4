"""``POST /search``, ``POST /search/batch`` and ``POST /encode``.

The two search endpoints are answered by the gateway's fast path (:func:`fast_routes`: the
body validated by the same models, the answer written with orjson); the FastAPI routes below
document them and answer alike when called without the gateway.
"""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request

from lsr.service.middleware import requires
from lsr.service.schemas import (
    SEARCH_ERRORS,
    BatchSearchRequest,
    BatchSearchResponse,
    EncodeRequest,
    EncodeResponse,
    SearchRequest,
    SearchResponse,
)
from lsr.service.state import ServiceState, service_state

router = APIRouter(
    dependencies=[Depends(requires("read"))], responses=SEARCH_ERRORS, tags=["search"]
)


async def run_search(state: ServiceState, req: SearchRequest, scope: dict) -> dict:
    start = time.perf_counter()
    [hits] = await state.asearch([req])
    scope["lsr.log"] = {"k": req.k, "hits": len(hits["hits"])}
    return {**hits, "took_ms": (time.perf_counter() - start) * 1e3}


async def run_batch(state: ServiceState, req: BatchSearchRequest, scope: dict) -> dict:
    if len(req.queries) > state.limits.max_batch:
        raise HTTPException(422, f"at most {state.limits.max_batch} queries per batch")
    start = time.perf_counter()
    update = {
        name: value for name, value in (("k", req.k), ("timeout_ms", req.timeout_ms)) if value
    }
    queries = [q.model_copy(update=update) for q in req.queries] if update else req.queries
    results = await state.asearch(queries)
    scope["lsr.log"] = {"queries": len(queries), "hits": sum(len(r["hits"]) for r in results)}
    return {"results": results, "took_ms": (time.perf_counter() - start) * 1e3}


@router.post("/search", response_model_exclude_unset=True)  # as the fast path: no nulls added
async def search(req: SearchRequest, request: Request) -> SearchResponse:
    """Top-k documents for one query (text or vector)."""
    return await run_search(service_state(request), req, request.scope)


@router.post("/search/batch", response_model_exclude_unset=True)
async def search_batch(req: BatchSearchRequest, request: Request) -> BatchSearchResponse:
    """Several queries in one request (at most the server's batch limit), searched together:
    one batched, parallel kernel call per algorithm asked for."""
    return await run_batch(service_state(request), req, request.scope)


def fast_routes(state: ServiceState) -> dict:
    """The gateway's handlers for the two search endpoints: the key, the body, the search."""

    def handler(model, run):
        async def answer(scope: dict, body: bytes) -> tuple[int, bytes]:
            scope["lsr.key"] = state.keys.authorize(scope["lsr.headers"], "read")
            req = model.model_validate_json(body)
            return 200, orjson.dumps(await run(state, req, scope))

        return answer

    return {
        ("POST", "/search"): handler(SearchRequest, run_search),
        ("POST", "/search/batch"): handler(BatchSearchRequest, run_batch),
    }


@router.post("/encode")
async def encode(req: EncodeRequest, request: Request) -> EncodeResponse:
    """Sparse vectors ({term: weight}) of texts, as queries or as documents."""
    state = service_state(request)
    limits, enc = state.limits, state.encoder
    if len(req.texts) > limits.max_batch:
        raise HTTPException(422, f"at most {limits.max_batch} texts per request")
    if any(len(t) > limits.max_query_chars * 16 for t in req.texts):
        raise HTTPException(422, "a text is too long")
    vectors = await state.aencode(req.texts, req.kind, req.timeout_ms)
    return {"vectors": [dict(enc.decode(vectors[[i]])) for i in range(vectors.shape[0])]}
