"""The one JSON error body (``{"error": ..., "detail": ...}``) for every failure, and the
API-key check each route declares.

Errors: a project input error is a 400 (422 for a bad document id), a refused key 401, 403
or 429 (:mod:`lsr.service.auth`), a write the disk cannot take now a 503 with
``Retry-After`` (nothing was stored; reads keep working), a search past its deadline 504,
anything else a 500 that is logged with its traceback, since it is a bug. The same mapping
serves the FastAPI routes (exception handlers) and the gateway's fast path
(:mod:`lsr.service.gateway`), so both answer alike.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lsr.errors import LSRError
from lsr.index.errors import (
    InvalidDocumentIdError,
    ShardsUnavailableError,
    WriteUnavailableError,
)
from lsr.service.auth import AuthError

logger = logging.getLogger(__name__)

# declares the X-API-Key scheme in the OpenAPI document (the "Authorize" button of /docs);
# the key itself is checked by the service's key ring, with scopes and rate limits
API_KEY = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key with the endpoint's scope (read, write or admin); reads need "
    "one only when the server protects them.",
)


class DeadlineExceeded(Exception):
    """A search or encoding that did not finish within the request's ``timeout_ms``."""


def requires(scope: str):
    """A route dependency: the request's key (if any) may act in ``scope``; raises 401, 403
    or 429 otherwise (and 403 for writes to a read-only server)."""

    async def check(request: Request, _key: str | None = Security(API_KEY)) -> None:
        state = request.app.state.service
        headers = request.scope.get("lsr.headers") or dict(request.scope["headers"])
        request.scope["lsr.key"] = state.keys.authorize(headers, scope)
        if scope == "write" and state.read_only:
            raise HTTPException(403, "this server is read-only; send writes to the writer")

    check.__name__ = f"requires_{scope}"
    return check


def validation_detail(errors: list[dict], prefix: tuple = ()) -> list[dict]:
    """pydantic's errors as the API reports them: location, message, type (never the input,
    which may be large or secret)."""
    detail = []
    for e in errors:
        msg = str(e["msg"]).removeprefix("Value error, ")  # a model validator's own sentence
        detail.append({"loc": [*prefix, *e["loc"]], "msg": msg, "type": e["type"]})
    return detail


def error_response(exc: BaseException, method: str, path: str) -> tuple[int, dict, dict]:
    """The status, JSON body and headers that answer ``exc`` (raised answering ``method
    path``); anything unexpected is logged with its traceback, since it is a bug."""
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, {"error": exc.detail}, dict(exc.headers or {})
    if isinstance(exc, AuthError):
        return exc.status, {"error": str(exc)}, exc.headers()
    if isinstance(exc, RequestValidationError):
        return 422, {"error": "invalid request", "detail": validation_detail(exc.errors())}, {}
    if isinstance(exc, ValidationError):  # the fast path validates the body itself
        detail = validation_detail(exc.errors(), ("body",))
        return 422, {"error": "invalid request", "detail": detail}, {}
    if isinstance(exc, InvalidDocumentIdError):
        return 422, {"error": str(exc)}, {}
    if isinstance(exc, WriteUnavailableError):
        retry = str(max(1, math.ceil(exc.retry_after)))
        return 503, {"error": str(exc)}, {"Retry-After": retry}
    if isinstance(exc, ShardsUnavailableError):
        body = {"error": str(exc), "missing_shards": exc.missing}
        return 503, body, {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    if isinstance(exc, DeadlineExceeded):
        return 504, {"error": str(exc)}, {}
    if isinstance(exc, LSRError):
        return 400, {"error": str(exc)}, {}
    logger.exception("unexpected error on %s %s", method, path, exc_info=exc)
    return 500, {"error": "internal server error; see the server log"}, {}


def install(app: FastAPI) -> None:
    """Answer every exception raised in ``app``'s routes with the one error body."""

    async def handle(request: Request, exc: Exception):
        status, body, headers = error_response(exc, request.method, request.url.path)
        return JSONResponse(body, status_code=status, headers=headers)

    for kind in (
        StarletteHTTPException,
        RequestValidationError,
        AuthError,
        InvalidDocumentIdError,
        WriteUnavailableError,
        ShardsUnavailableError,
        DeadlineExceeded,
        LSRError,
        Exception,
    ):
        app.add_exception_handler(kind, handle)
