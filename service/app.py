"""The FastAPI app: search, encode and update a collection over HTTP.

Searches run on an immutable snapshot, light ones on the event loop and heavy ones in a
thread pool (the Numba kernels release the GIL, so several searches use several cores);
writes are logged durably before they are acknowledged (see ``lsr.index.live``) and never
block searches. The pieces: :mod:`~lsr.service.gateway` (request ids, body limits, metrics,
access log, the fast path for searches), :mod:`~lsr.service.auth` (API keys, scopes, rate
limits), :mod:`~lsr.service.middleware` (the one JSON error body),
:mod:`~lsr.service.schemas` (request and response bodies), :mod:`~lsr.service.routes` (one
router per concern), :mod:`~lsr.service.docs` (``/docs`` and ``/redoc`` without internet) and
:mod:`~lsr.service.state` (what the routes share).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI

from lsr import __version__, load_encoder
from lsr.dense import is_dense
from lsr.errors import ConfigError
from lsr.index import LiveIndex
from lsr.index.fusion import read_fusion
from lsr.pipeline import ENCODER_DIR
from lsr.pipeline.hybrid import load_encoders
from lsr.service import docs, middleware
from lsr.service.auth import KeyRing, load_key_ring
from lsr.service.encode_pool import EncodePool
from lsr.service.forward import WorkerPlace
from lsr.service.gateway import Gateway
from lsr.service.metrics import Metrics
from lsr.service.routes import ROUTERS
from lsr.service.routes.search import fast_routes
from lsr.service.state import Limits, ServiceState

__all__ = ["Limits", "create_app"]

TAGS = [
    {"name": "search", "description": "Search (text or vectors), in batches, and encode texts."},
    {"name": "documents", "description": "Stored documents: read, add or replace, delete."},
    {"name": "operations", "description": "Health, statistics, metrics, refresh."},
]


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
    keys: KeyRing | None = None,
    access_log: str | None = None,
    cors_origins: Sequence[str] = (),
    worker: WorkerPlace | None = None,
    search_threads: int | None = None,
    ray_address: str | None = None,
    shard_timeout: float = 5.0,
) -> Gateway:
    """The ASGI app serving the collection at ``index_dir`` (with its saved encoder unless
    ``encoder``): a :class:`~lsr.service.gateway.Gateway` in front of the FastAPI app
    (``.app``); ``.state.service`` is what the routes share.

    API keys: ``keys`` (see :mod:`lsr.service.auth`), or the single ``api_key`` of earlier
    releases (every scope); ``protect_reads`` asks a key for reads too. ``access_log``:
    None, ``"text"`` or ``"json"`` lines on the ``lsr.access`` logger. ``cors_origins``:
    the browser origins allowed to call the API (none by default; ``["*"]`` for any).
    ``search_threads``: the pool that runs searches too large for the event loop (default:
    one per core).

    The app is the collection's writer (it holds the writer lock until shutdown; new
    segments are flushed every ``flush_threshold`` documents and merged in the background)
    unless ``read_only``, which refuses writes and looks for the writer's new commit points
    and log records every ``refresh_seconds`` (0: serve the collection as it was at start).
    ``unknown_words``: ``accept`` or ``refuse`` documents with words outside a fitted BM25
    vocabulary (see ``lsr serve --unknown-words``). ``encode_workers``: processes that encode
    the documents of writes at a lower CPU priority, so searches stay fast during an ingest
    (:mod:`lsr.service.encode_pool`; 0: in this process).

    ``worker``: this app's place among the worker processes of ``lsr serve --workers N``
    (:mod:`lsr.service.workers`): a reader opens the collection read-only and relays writes
    to the writer (:mod:`lsr.service.forward`).

    ``ray_address``: ``index_dir`` is a cluster of collections (``lsr index --shards``),
    served from one Ray actor per shard on that Ray cluster (:mod:`lsr.pipeline.cluster`):
    the same API, searches scattered to every shard and merged exactly, writes routed to
    the owning shard; a shard silent for ``shard_timeout`` seconds makes searches answer 503
    (or partial hits, with ``allow_partial``)."""
    if unknown_words not in ("accept", "refuse"):
        raise ConfigError(f"unknown_words must be 'accept' or 'refuse', got {unknown_words!r}.")
    if (
        isinstance(refresh_seconds, bool)
        or not isinstance(refresh_seconds, (int, float))
        or not (refresh_seconds >= 0)
    ):
        raise ConfigError(f"refresh_seconds must be a number >= 0, got {refresh_seconds!r}.")
    if (
        isinstance(encode_workers, bool)
        or not isinstance(encode_workers, int)
        or (encode_workers < 0)
    ):
        raise ConfigError(f"encode_workers must be an integer >= 0, got {encode_workers!r}.")
    limits = limits or Limits()
    relay = worker.link() if worker is not None else None
    read_only = read_only or (worker is not None and worker.role == "reader")
    if keys is None:
        keys = load_key_ring(api_key, protect_reads=protect_reads, environ={})
    if ray_address is not None:
        from lsr.index.cluster import read_manifest
        from lsr.pipeline.cluster import open_cluster

        if read_only or worker is not None:
            raise ConfigError("A cluster on Ray is served by its shards' actors: no read-only "
                              "server, no worker processes.")  # fmt: skip
        live = open_cluster(index_dir, ray_address, shard_timeout, flush_threshold=flush_threshold)
        default_encoder = read_manifest(index_dir).shard_path(index_dir, 0) / ENCODER_DIR
    else:
        live = LiveIndex(index_dir, flush_threshold=flush_threshold, read_only=read_only)
        default_encoder = Path(index_dir) / ENCODER_DIR
    pool = None
    try:
        spec = encoder or default_encoder
        enc = load_encoder(spec)
        if is_dense(enc):
            raise ConfigError(
                f"{spec} is a dense encoder; the main encoder of a collection is sparse "
                "(its dense representations come with it: lsr index --dense)."
            )
        if list(enc.vocab) != live.vocab:
            raise ConfigError(f"The encoder's vocabulary differs from the index at {index_dir}.")
        extra_encoders = load_encoders(index_dir, live)
        fusion = read_fusion(index_dir)
        live.warm_up()
        if encode_workers and not read_only:
            pool = EncodePool(str(spec), encode_workers)
    except BaseException:
        live.close()
        raise
    metrics = Metrics(live.stats, worker.workers_file if worker else None)
    state = ServiceState(live, enc, limits, keys, read_only, unknown_words=unknown_words,
                         encode_pool=pool, metrics=metrics, worker=worker,
                         search_threads=search_threads, extra_encoders=extra_encoders,
                         fusion=fusion)  # fmt: skip

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
        openapi_tags=TAGS,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = state
    for router in ROUTERS:
        app.include_router(router)
    docs.install(app)
    middleware.install(app)
    cors = None
    if cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        cors = {
            "allow_origins": list(cors_origins),
            "allow_methods": ["GET", "POST", "DELETE"],
            "allow_headers": ["content-type", "x-api-key", "x-request-id"],
            "expose_headers": ["x-request-id", "retry-after"],
        }
        app.add_middleware(CORSMiddleware, **cors)
    return Gateway(
        app,
        metrics=state.metrics,
        fast=fast_routes(state),
        max_body_bytes=limits.max_body_bytes,
        body_timeout=limits.body_timeout_s,
        access_log=access_log,
        cors=cors,
        writer=relay,
        forward_token=worker.token if worker else None,
    )
