"""``GET /health``, ``GET /stats`` and ``GET /metrics`` (Prometheus text format)."""

from __future__ import annotations

import os
from dataclasses import asdict

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from lsr.service.metrics import CONTENT_TYPE
from lsr.service.middleware import requires
from lsr.service.schemas import ERRORS, HealthResponse, RefreshResponse, StatsResponse
from lsr.service.state import service_state

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health(request: Request) -> HealthResponse:
    """Reads work whenever this answers; ``degraded`` says why writes may not."""
    state = service_state(request)
    stats = state.live.stats()
    problems = []
    writable = stats["writable"] or state.relays_writes  # a reader relays them to the writer
    if state.read_only and not state.relays_writes:
        problems.append("read-only: writes go to the writer")
    elif not writable:
        problems.append(f"writes refused for now: {stats['writes']['last_error']}")
    for work in ("flushes", "merges"):
        if stats[work]["failures"]:
            problems.append(f"{work} failing: {stats[work]['last_error']}")
    return {
        "status": "degraded" if problems and not state.read_only else "ok",
        "documents": stats["n_docs"],
        "writable": writable,
        "problems": problems,
    }


@router.get("/stats", dependencies=[Depends(requires("read"))], responses=ERRORS)
async def stats(request: Request) -> StatsResponse:
    state = service_state(request)
    return {
        **state.live.stats(),
        "encoder": getattr(state.encoder, "name", type(state.encoder).__name__),
        "limits": asdict(state.limits),
        "worker": None if state.worker is None else {
            "index": state.worker.index, "role": state.worker.role,
            "workers": state.worker.count, "pid": os.getpid(),
        },
    }  # fmt: skip


@router.get(
    "/metrics",
    dependencies=[Depends(requires("read"))],
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def prometheus(request: Request) -> Response:
    """Request counts and latency histograms per endpoint, search and encoding time, the
    collection's figures, the process's memory and CPU (Prometheus text format)."""
    return Response(service_state(request).metrics.render(), media_type=CONTENT_TYPE)


@router.post("/refresh", dependencies=[Depends(requires("admin"))], responses=ERRORS)
def refresh(request: Request) -> RefreshResponse:
    """The writer flushes its write buffer into a new segment (its searches already see every
    write); a read-only server opens the writer's latest commit point and log now instead
    of at its next periodic refresh."""
    state = service_state(request)
    changed = state.live.refresh()
    stats = state.live.stats()
    return {"changed": changed, "generation": stats["generation"], "documents": stats["n_docs"]}
