"""Running the app under uvicorn: checks before loading, the listening socket, the startup
line, the access log, graceful shutdown.

What can be refused cheaply is refused before the collection and the encoder load (which
can take seconds, or minutes for a model): a collection path that is missing, unreadable or
not a collection, a port that is busy or not ours to take; each is one line and exit status
2 (``lsr.errors.ConfigError``). The socket is bound here and handed to uvicorn, so nothing
can take the port between the check and the start.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections, lets the requests in flight
finish (up to ``graceful_timeout`` seconds), then the app's shutdown closes the collection:
a flush in progress finishes, a merge in progress stops at its next safe point, the log's
checkpoint is written and the writer lock released.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from lsr.errors import ConfigError
from lsr.index.storage import is_index_dir


def check_collection(path: str | Path) -> Path:
    """``path`` when it is a readable collection (or an index of formats 1-3)."""
    root = Path(path)
    if not root.exists():
        raise ConfigError(f"No index at {root} (build one with lsr index).")
    if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
        raise ConfigError(f"cannot read the collection at {root}: not a readable directory.")
    try:
        found = is_index_dir(root)
    except PermissionError as e:
        raise ConfigError(f"cannot read the collection at {root}: {e.strerror}.") from e
    if not found:
        raise ConfigError(f"{root} is not a collection (no commit point; build it with lsr index).")
    return root


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (IPv4 or IPv6), or one clear error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"cannot listen on {host}:{port}: unknown host ({e.strerror}).") from e
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        why = {
            errno.EADDRINUSE: "the port is in use (is another server running? choose another "
            "--port)",
            errno.EACCES: "permission denied (ports below 1024 need privileges)",
            errno.EADDRNOTAVAIL: "the address is not one of this machine's",
        }.get(e.errno, e.strerror)
        raise ConfigError(f"cannot listen on {host}:{port}: {why}.") from e
    sock.set_inheritable(True)
    return sock


def configure_access_log(mode: str) -> None:
    """Send the ``lsr.access`` lines to stderr (``text`` with a timestamp, ``json`` as is)."""
    log = logging.getLogger("lsr.access")
    log.propagate = False
    log.handlers.clear()
    if mode == "off":
        log.setLevel(logging.WARNING)
        return
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(message)s" if mode == "json" else "%(asctime)s %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def server_facts(app) -> dict:
    """What the startup line says about an app (plain values: a worker process sends them
    to the supervisor, which prints the line)."""
    state = app.state.service
    stats = state.live.stats()
    return {
        "collection": str(state.live.path),
        "documents": stats["n_docs"],
        "segments": stats["segments"],
        "encoder": getattr(state.encoder, "name", type(state.encoder).__name__),
        "representations": list(state.extra_encoders),
        "auth": state.keys.describe(),
        "role": "read-only" if state.read_only else "writer",
        "search_threads": state.search_threads,
        "shards": len(stats["shards"]) if "shards" in stats else None,
    }


def startup_line(facts: dict, url: str, access_log: str, workers: str | None = None) -> str:
    """One line saying what the server serves and how (``facts``: :func:`server_facts`;
    ``workers``: how the worker processes share the work, when there are several)."""
    segments = facts["segments"]
    parts = [
        f"lsr serve: {url}",
        f"collection {facts['collection']} ({facts['documents']:,} documents, "
        + (f"{facts['shards']} shards on Ray, " if facts.get("shards") else "")
        + f"{segments} segment{'s' * (segments != 1)})",
        f"encoder {facts['encoder']}"
        + "".join(f" + {name}" for name in facts.get("representations", [])),
        facts["auth"],
        workers or facts["role"],
        f"{facts['search_threads']} search threads{' each' * bool(workers)}",
        f"access log {access_log}",
    ]
    return " | ".join(parts)


def bind_unix(path: str) -> socket.socket:
    """A listening Unix socket at ``path`` (a stale one from a process that died is
    replaced)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(512)
    return sock


def run(app, sock: socket.socket | list[socket.socket], *, parser: str, header_timeout: float,
        graceful_timeout: float, ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None) -> None:  # fmt: skip
    """Serve ``app`` on ``sock`` (or several sockets) until SIGTERM or Ctrl-C, then drain
    and close."""
    import uvicorn

    from lsr.service.http_protocol import protocol_with_header_timeout

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        http=protocol_with_header_timeout(header_timeout, parser),
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        timeout_graceful_shutdown=graceful_timeout,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    # uvicorn handles SIGTERM and SIGINT itself (drain, then the app's shutdown) and then
    # raises the signal again for the handler it replaced: this one, so that a graceful
    # shutdown ends the command normally (exit 0, the final line) instead of killing it
    previous = {sig: signal.signal(sig, _drained) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.Server(config).run(sockets=sock if isinstance(sock, list) else [sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _drained(signum, frame) -> None:
    """The signal after uvicorn's graceful shutdown: nothing left to do."""
