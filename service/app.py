"""The FastAPI app: search, encode and update a collection over HTTP.

Searches run in the server's worker threads on an immutable snapshot (the Numba kernels
release the GIL, so several searches use several cores); writes are logged durably before
they are acknowledged (see ``lsr.index.live``) and never block searches. The pieces:
:mod:`~lsr.service.schemas` (request and response bodies), :mod:`~lsr.service.middleware`
(body limits, API keys, metrics, the one JSON error body), :mod:`~lsr.service.routes` (one
router per concern) and :mod:`~lsr.service.state` (what the routes share).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from fastapi import FastAPI

from lsr import __version__, load_encoder
from lsr.errors import ConfigError
from lsr.index import LiveIndex
from lsr.index.buffer import WriteBuffer
from lsr.pipeline import ENCODER_DIR
from lsr.service import middleware
from lsr.service.encode_pool import EncodePool
from lsr.service.routes import ROUTERS
from lsr.service.state import Limits, ServiceState

__all__ = ["Limits", "create_app"]


def create_app(
    index_dir: str | Path,
    encoder: str | None = None,
    api_key: str | None = None,
    protect_reads: bool = False,
    limits: Limits | None = None,
    flush_threshold: int = 10_000,
    read_only: bool = False,
    unknown_words: str = "accept",
    refresh_seconds: float = 1.0,
    encode_workers: int = 0,
) -> FastAPI:
    """The app serving the collection at ``index_dir`` (with its saved encoder unless
    ``encoder``).

    The app is the collection's writer (it holds the writer lock until shutdown; new
    segments are flushed every ``flush_threshold`` documents and merged in the background)
    unless ``read_only``, which refuses writes and looks for the writer's new commit points
    and log records every ``refresh_seconds`` (0: serve the collection as it was at start).
    ``unknown_words``: ``accept`` or ``refuse`` documents with words outside a fitted BM25
    vocabulary (see ``lsr serve --unknown-words``). ``encode_workers``: processes that encode
    the documents of writes at a lower CPU priority, so searches stay fast during an ingest
    (:mod:`lsr.service.encode_pool`; 0: in this process)."""
    if unknown_words not in ("accept", "refuse"):
        raise ConfigError(f"unknown_words must be 'accept' or 'refuse', got {unknown_words!r}.")
    if isinstance(refresh_seconds, bool) or not isinstance(refresh_seconds, (int, float)) or not (
        refresh_seconds >= 0
    ):
        raise ConfigError(f"refresh_seconds must be a number >= 0, got {refresh_seconds!r}.")
    if isinstance(encode_workers, bool) or not isinstance(encode_workers, int) or (
        encode_workers < 0
    ):
        raise ConfigError(f"encode_workers must be an integer >= 0, got {encode_workers!r}.")
    limits = limits or Limits()
    live = LiveIndex(index_dir, flush_threshold=flush_threshold, read_only=read_only)
    pool = None
    try:
        spec = encoder or Path(index_dir) / ENCODER_DIR
        enc = load_encoder(spec)
        if list(enc.vocab) != live.vocab:
            raise ConfigError(f"The encoder's vocabulary differs from the index at {index_dir}.")
        _warm_up(live)
        if encode_workers and not read_only:
            pool = EncodePool(str(spec), encode_workers)
    except BaseException:
        live.close()
        raise
    state = ServiceState(live, enc, limits, api_key, protect_reads, read_only,
                         unknown_words=unknown_words, encode_pool=pool)  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start_refreshing(refresh_seconds)
        yield
        state.close()

    app = FastAPI(
        title="lsr",
        version=__version__,
        description="Learned sparse retrieval: search, encode and update a sparse index.",
        lifespan=lifespan,
    )
    app.state.service = state
    for router in ROUTERS:
        app.include_router(router)
    middleware.install(app, state.metrics, limits.max_body_bytes, limits.body_timeout_s)
    return app


def _warm_up(live: LiveIndex) -> None:
    """Compile (or load from Numba's cache) the kernels for the segments and for the write
    buffer before the first request, so no request pays for compilation."""
    q = sp.csr_array((np.ones(1, np.float32), ([0], [0])), shape=(1, len(live.vocab)))
    live.search(q, 1)
    live.search(sp.vstack([q, q], format="csr"), 1)
    buffer = WriteBuffer(len(live.vocab))
    buffer.append("warm-up", q.indices, q.data, None, 1)
    buffer.view(1).search(q, 1)
    segment = next((s for s in live.segments if s.n_docs), None)
    if segment is not None:  # the lookups of GET /documents and explain
        segment.term_weights(np.zeros(1, np.int64), q.indices)
        segment.document_vector(0)
