"""What wraps every request: the body limit and deadline, API-key checks, request metrics,
and the one JSON error body (``{"error": ..., "detail": ...}``) for every failure.

Errors: a project input error is a 400 (422 for a bad document id), a write the disk cannot
take now a 503 with ``Retry-After`` (nothing was stored; reads keep working), anything else a
500 that is logged with its traceback, since it is a bug.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import threading
import time
from collections import defaultdict

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lsr.errors import LSRError
from lsr.index.errors import InvalidDocumentIdError, WriteUnavailableError

logger = logging.getLogger(__name__)


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
            "# TYPE lsr_segments gauge",
            f"lsr_segments {stats['segments']}",
            "# TYPE lsr_deleted_documents gauge",
            f"lsr_deleted_documents {stats['deleted_docs']}",
            "# TYPE lsr_buffer_documents gauge",
            f"lsr_buffer_documents {stats['buffer_docs']}",
            "# TYPE lsr_flushes_total counter",
            f"lsr_flushes_total {stats['flushes']['count']}",
            "# TYPE lsr_flush_failures gauge",
            f"lsr_flush_failures {stats['flushes']['failures']}",
            "# TYPE lsr_merges_total counter",
            f"lsr_merges_total {stats['merges']['count']}",
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


def _check_key(request: Request, required: bool) -> None:
    api_key = request.app.state.service.api_key
    if api_key is None or not required:
        return
    given = request.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), api_key.encode()):
        raise HTTPException(401, "missing or wrong X-API-Key header")


def require_reader(request: Request) -> None:
    """A route dependency: the API key, when the server protects reads."""
    _check_key(request, request.app.state.service.protect_reads)


def require_writer(request: Request) -> None:
    """A route dependency: the API key (when set), and a server that takes writes."""
    _check_key(request, True)
    if request.app.state.service.read_only:
        raise HTTPException(403, "this server is read-only; send writes to the writer")


def install(app: FastAPI, metrics: Metrics, body_limit: int, body_timeout: float) -> None:
    """Add the request metrics, the body limit and the error handlers to ``app``."""

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

    @app.exception_handler(LSRError)
    async def input_error(request: Request, exc: LSRError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal server error; see the server log"}, 500)

    app.add_middleware(RequestBody, limit=body_limit, timeout=body_timeout)
