"""The ASGI layer every request passes first: request id, body limits, metrics, access log,
and the fast path for searches.

It is plain ASGI (Starlette's ``BaseHTTPMiddleware`` costs a task and a stream per
request), and it answers ``POST /search`` and ``POST /search/batch`` itself: read the body,
check the key, validate with the same pydantic models the OpenAPI document shows (in
pydantic-core, from the bytes), search, and write the answer with orjson; FastAPI's routing,
dependency solving and response-model round trip cost several times the search of a BM25
query. Everything else goes to the FastAPI app, whose routes (those two included, for the
documentation and as the reference the tests compare with) answer alike.

Per request: an ``X-Request-Id`` (the client's, when it sends a sane one, else a new one)
echoed in the answer and the access log; the whole body read before any handler (over
``max_body_bytes``: 413; a pause longer than ``body_timeout`` between two chunks: 408);
latency per endpoint template into the histograms of :mod:`lsr.service.metrics`; one access
log line (``lsr.access`` logger; text or JSON lines) with the request id, client, method,
path, status, latency, the key's name (never the key), and for searches k and the hits.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

import orjson

from lsr.service.forward import (
    KEY_HEADER,
    TOKEN_HEADER,
    WriterLink,
    WriterUnavailable,
    forwarded_endpoint,
)
from lsr.service.metrics import Metrics
from lsr.service.middleware import error_response

access_logger = logging.getLogger("lsr.access")
logger = logging.getLogger(__name__)

FastHandler = Callable[[dict, bytes], Awaitable[tuple[int, bytes]]]
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_JSON = (b"content-type", b"application/json")


class Gateway:
    """The ASGI app the server runs: wraps the FastAPI ``app`` (outside all of its
    middleware, whose layers cost more than a search); ``fast`` maps ``(method, path)`` to
    handlers that take the ASGI scope and the body and return the status and the JSON body.
    ``cors``: the options of Starlette's ``CORSMiddleware`` for the fast path's answers (the
    FastAPI app carries its own).

    With several worker processes (:mod:`lsr.service.forward`): a reader's gateway relays
    writes, reads by id and ``/metrics`` to the ``writer``; the writer's
    gateway knows the relayed requests by ``forward_token`` and leaves them to the reader's
    access log and metrics."""

    def __init__(
        self,
        app,
        metrics: Metrics,
        fast: dict[tuple[str, str], FastHandler],
        max_body_bytes: int,
        body_timeout: float,
        access_log: str | None = None,
        cors: dict | None = None,
        writer: WriterLink | None = None,
        forward_token: str | None = None,
    ) -> None:
        if access_log not in (None, "text", "json"):
            raise ValueError(f"access_log must be None, 'text' or 'json', got {access_log!r}")
        self.app = app
        self.metrics = metrics
        self.fast = fast
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.access_log = access_log
        self.writer = writer
        self.forward_token = forward_token.encode() if forward_token else None
        self._fast_app = self._answer_fast
        if cors:
            from starlette.middleware.cors import CORSMiddleware

            self._fast_app = CORSMiddleware(self._answer_fast, **cors)
        # request ids: this process's random prefix and a counter (unique without a uuid4
        # per request, which costs as much as a search)
        self._id_prefix = uuid.uuid4().hex[:12].encode()
        self._counter = itertools.count(1)
        self._series: dict[tuple, tuple] = {}  # labelled metrics, looked up once

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        headers = scope["lsr.headers"] = dict(scope["headers"])
        given = headers.get(b"x-request-id")
        if given is None or not _REQUEST_ID.fullmatch(given):
            given = b"%s-%x" % (self._id_prefix, next(self._counter))
        request_id = given
        status = [None]
        relayed = self.forward_token is not None and hmac.compare_digest(
            headers.get(TOKEN_HEADER, b""), self.forward_token
        )

        async def reply(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                extra = [(b"x-request-id", request_id)]
                if relayed and scope.get("lsr.key"):
                    extra.append((KEY_HEADER, scope["lsr.key"].encode()))
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        if relayed:  # the reader that relayed it logs and counts it
            return await self.app(scope, receive, reply)

        self.metrics.in_flight.inc()
        body = None
        try:
            body = await self._read_body(headers, receive, reply)
            if body is None:
                return None
            handler = self.fast.get((scope["method"], scope["path"]))
            relay = self.writer and forwarded_endpoint(scope["method"], scope["path"])
            if relay:
                scope["lsr.endpoint"] = relay
                await self._relay(scope, body, request_id, reply)
            elif handler is not None:
                scope["lsr.endpoint"] = scope["path"]
                scope["lsr.handler"], scope["lsr.body"] = handler, body
                await self._fast_app(scope, receive, reply)
            else:
                await self.app(scope, _replay(body, receive), reply)
        finally:
            self.metrics.in_flight.dec()
            # no answer: the client went away while sending (499, as nginx logs it) or a bug
            answered = status[0] or (499 if body is None else 500)
            self._record(scope, answered, time.perf_counter() - start, request_id)
        return None

    async def _read_body(self, headers: dict, receive, send) -> bytes | None:
        """The whole request body, or None after answering 413 or 408 (or a disconnect)."""
        limit = self.max_body_bytes
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_json(send, 413, {"error": f"request body larger than {limit} bytes"}, True)
            return None
        chunks, seen, more = [], 0, True
        while more:
            try:
                async with _deadline(self.body_timeout):
                    message = await receive()
            except asyncio.TimeoutError:
                await _send_json(send, 408, {"error": "request body not received in time"}, True)
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await _send_json(
                    send, 413, {"error": f"request body larger than {limit} bytes"}, True
                )
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @property
    def state(self):
        """The FastAPI app's state (``state.service``: the collection, encoder, keys)."""
        return self.app.state

    async def _answer_fast(self, scope: dict, receive, send) -> None:
        try:
            status, payload = await scope["lsr.handler"](scope, scope["lsr.body"])
            extra = {}
        except Exception as exc:
            status, answer, extra = error_response(exc, scope["method"], scope["path"])
            payload = orjson.dumps(answer)
        await _send(send, status, payload, extra)

    async def _relay(self, scope: dict, body: bytes, request_id: bytes, send) -> None:
        """Pass the request to the writer process and its answer back to the client."""
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        try:
            status, headers, payload = await self.writer.request(
                scope["method"], target, scope["headers"], body, request_id
            )
        except WriterUnavailable as e:
            logger.warning("the writer process did not take a request: %s", e)
            message = "the writer process is not available (restarting?); retry shortly"
            await _send(send, 503, orjson.dumps({"error": message}), {"retry-after": "1"})
            return
        kept = [(b"content-length", str(len(payload)).encode())]
        for name, value in headers:
            if name == KEY_HEADER:  # which key the writer accepted, for the access log
                scope["lsr.key"] = value.decode("utf-8", "replace")
            else:
                kept.append((name, value))
        await send({"type": "http.response.start", "status": status, "headers": kept})
        await send({"type": "http.response.body", "body": payload})

    def _record(self, scope: dict, status: int, seconds: float, request_id: bytes) -> None:
        route = scope.get("route")
        endpoint = scope.get("lsr.endpoint") or getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        series = self._series.get((endpoint, method, status))
        if series is None:
            series = self._series[(endpoint, method, status)] = (
                self.metrics.requests.labels(endpoint, method, str(status)),
                self.metrics.latency.labels(endpoint, method),
            )
        series[0].inc()
        series[1].observe(seconds)
        if self.access_log is None:
            return
        client = scope.get("client")
        entry = {
            "request_id": request_id.decode(),
            "client": f"{client[0]}:{client[1]}" if client else None,
            "method": method,
            "path": scope["path"],
            "status": status,
            "ms": round(seconds * 1e3, 3),
            "key": scope.get("lsr.key"),
            **scope.get("lsr.log", {}),
        }
        if self.access_log == "json":
            entry = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **entry}
            access_logger.info(orjson.dumps(entry).decode())
        else:
            extra = " ".join(
                f"{k}={v}" for k, v in entry.items() if k not in _TEXT_FIRST and v is not None
            )
            access_logger.info(
                '%s "%s %s" %s %.2fms %s',
                entry["client"] or "-", method, entry["path"], status, entry["ms"], extra,
            )  # fmt: skip


def _deadline(seconds: float):
    """``asyncio.timeout`` (Python 3.11+: a timer, where ``wait_for`` also makes a task,
    which costs as much as a search), else an equivalent through ``wait_for``."""
    if hasattr(asyncio, "timeout"):
        return asyncio.timeout(seconds)
    return _WaitForDeadline(seconds)


class _WaitForDeadline:
    """``asyncio.timeout`` for Python 3.10: cancels the task running the block."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        self._expired = False

        def expire() -> None:
            self._expired = True
            task.cancel()

        self._handle = loop.call_later(self.seconds, expire)

    async def __aexit__(self, kind, error, tb):
        self._handle.cancel()
        if kind is asyncio.CancelledError and self._expired:
            raise asyncio.TimeoutError from error
        return False


_TEXT_FIRST = ("client", "method", "path", "status", "ms")


def _replay(body: bytes, receive):
    """A ``receive`` that gives the app the body read already, then waits as usual."""
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as usual

    return replay


async def _send(send, status: int, payload: bytes, extra: dict[str, str] | None = None) -> None:
    """A whole JSON answer (``extra``: more headers)."""
    headers = [_JSON, (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _send_json(send, status: int, body: dict, close: bool = False) -> None:
    await _send(send, status, orjson.dumps(body), {"connection": "close"} if close else None)
