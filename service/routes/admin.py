"""``GET /health``, ``GET /stats`` and ``GET /metrics`` (Prometheus text format)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from lsr.service.middleware import require_reader, require_writer
from lsr.service.schemas import ERRORS, HealthResponse, RefreshResponse, StatsResponse
from lsr.service.state import service_state

router = APIRouter()


@router.get("/health")
def health(request: Request) -> HealthResponse:
    """Reads work whenever this answers; ``degraded`` says why writes may not."""
    state = service_state(request)
    stats = state.live.stats()
    problems = []
    if state.read_only:
        problems.append("read-only: writes go to the writer")
    elif not stats["writable"]:
        problems.append(f"writes refused for now: {stats['writes']['last_error']}")
    for work in ("flushes", "merges"):
        if stats[work]["failures"]:
            problems.append(f"{work} failing: {stats[work]['last_error']}")
    return {
        "status": "degraded" if problems and not state.read_only else "ok",
        "documents": stats["n_docs"],
        "writable": stats["writable"],
        "problems": problems,
    }


@router.get("/stats", dependencies=[Depends(require_reader)], responses=ERRORS)
def stats(request: Request) -> StatsResponse:
    state = service_state(request)
    return {
        **state.live.stats(),
        "encoder": getattr(state.encoder, "name", type(state.encoder).__name__),
        "limits": asdict(state.limits),
    }


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus(request: Request) -> str:
    state = service_state(request)
    return state.metrics.render(state.live.stats())


@router.post("/refresh", dependencies=[Depends(require_reader)], responses=ERRORS)
def refresh(request: Request) -> RefreshResponse:
    """The writer flushes its write buffer into a new segment (its searches already see every
    write); a read-only server opens the writer's latest commit point and log now instead
    of at its next periodic refresh."""
    state = service_state(request)
    if not state.read_only and state.api_key is not None:
        require_writer(request)
    changed = state.live.refresh()
    stats = state.live.stats()
    return {"changed": changed, "generation": stats["generation"], "documents": stats["n_docs"]}
