"""Requests a reader process passes on to the writer process (``lsr serve --workers N``).

With several worker processes one of them is the collection's writer (it holds the writer
lock and the write-ahead log) and the others open the collection read-only. A reader
answers searches itself and relays to the writer, over a Unix socket in the server's
private runtime folder, what only the writer can answer exactly:

- writes (``POST /documents``, ``DELETE /documents/{id}``, ``POST /refresh``): acknowledged
  by the writer once durable, as with one process;
- ``GET /documents/{id}``: a real-time read, like OpenSearch's get (a reader's searches
  see writes at its next refresh, as an OpenSearch search sees them after the index's
  refresh interval);
- ``GET /metrics``: the writer adds up every worker's request figures and reports the
  collection's own (flushes, merges, log size).

The relayed request carries the client's headers (the API key included: the writer checks
it, and the rate limits are shared by all workers), the reader's request id, and a token
only the workers know, by which the writer leaves the request out of its access log and
metrics (the reader logs and counts it once, with the writer's status). Writes are
idempotent (add-or-replace by id, delete by id), so a request on a kept-alive connection
that the writer closed in the meantime is sent again once on a new one.

When the writer is away (restarting after a crash) the reader answers 503 with
``Retry-After``; nothing was acknowledged, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from dataclasses import dataclass

import h11

TOKEN_HEADER = b"x-lsr-forwarded"
KEY_HEADER = b"x-lsr-key"  # the writer tells the reader which key a request used (for its log)
FORWARD_TIMEOUT_S = 300.0  # a write of many documents encoded by a model takes a while
IDLE_S = 2.0  # a kept-alive connection to the writer idle longer than this is not reused

_DOCUMENT = re.compile(r"/documents/.+", re.S)
# hop-by-hop and per-connection headers: each side of the relay sets its own
_DROPPED_REQUEST = {
    b"host", b"connection", b"keep-alive", b"content-length", b"transfer-encoding", b"te",
    b"upgrade", b"expect", b"x-request-id", TOKEN_HEADER, KEY_HEADER,
}  # fmt: skip
_DROPPED_RESPONSE = {
    b"connection", b"keep-alive", b"content-length", b"transfer-encoding", b"date",
    b"server", b"x-request-id",
}  # fmt: skip


class WriterUnavailable(Exception):
    """The writer process did not take the request (not running, or restarting)."""


def forwarded_endpoint(method: str, path: str) -> str | None:
    """The endpoint template of a request a reader relays to the writer, else None."""
    if path == "/documents" and method == "POST":
        return "/documents"
    if method in ("GET", "DELETE") and _DOCUMENT.fullmatch(path):
        return "/documents/{doc_id:doc_id}"  # the route's template, as the writer labels it
    if path == "/refresh" and method == "POST":
        return "/refresh"
    if path == "/metrics" and method == "GET":
        return "/metrics"
    return None


class WriterLink:
    """HTTP/1.1 to the writer's Unix socket, with a few kept-alive connections."""

    def __init__(self, socket_path: str, token: str, tls: bool = False, pool: int = 8) -> None:
        self.socket_path = socket_path
        self.token = token.encode()
        self.pool = pool
        self._idle: list[tuple[float, tuple]] = []  # (last used, connection), newest last
        self._ssl = None
        if tls:  # the writer's listeners all speak TLS when the server does
            self._ssl = ssl.create_default_context()
            self._ssl.check_hostname = False  # a socket in the server's own private folder
            self._ssl.verify_mode = ssl.CERT_NONE

    async def request(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
        request_id: bytes,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:  # fmt: skip
        """The writer's status, headers and body for this request."""
        sent = [(k, v) for k, v in headers if k not in _DROPPED_REQUEST]
        sent += [
            (b"host", b"writer"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id),
            (TOKEN_HEADER, self.token),
        ]
        message = h11.Request(method=method, target=target, headers=sent)
        connection = self._take_idle()
        for _ in range(2):
            reused = connection is not None
            if not reused:
                connection = await self._connect()
            try:
                answer = await asyncio.wait_for(
                    _exchange(connection, message, body), FORWARD_TIMEOUT_S
                )
            except asyncio.TimeoutError as e:
                _close(connection)
                raise WriterUnavailable(
                    f"the writer did not answer within {FORWARD_TIMEOUT_S:.0f} s"
                ) from e
            except (OSError, h11.ProtocolError, _Closed) as e:
                _close(connection)
                if reused and not isinstance(e, h11.RemoteProtocolError):
                    connection = None  # the writer closed it while idle: once more, on a new one
                    continue
                raise WriterUnavailable(str(e) or type(e).__name__) from e
            except BaseException:
                _close(connection)
                raise
            status, got, payload = answer
            if connection[2].our_state is h11.DONE and connection[2].their_state is h11.DONE:
                connection[2].start_next_cycle()
                if len(self._idle) < self.pool:
                    self._idle.append((time.monotonic(), connection))
                else:
                    _close(connection)
            else:
                _close(connection)
            return status, [(k, v) for k, v in got if k not in _DROPPED_RESPONSE], payload
        raise AssertionError("unreachable")

    def _take_idle(self) -> tuple | None:
        """The most recently used kept-alive connection, unless idle too long (the writer's
        server closes a connection idle for 5 s; older ones are closed here first)."""
        now = time.monotonic()
        while self._idle:
            used, connection = self._idle.pop()
            if now - used < IDLE_S:
                return connection
            _close(connection)
        return None

    async def _connect(self) -> tuple:
        try:
            reader, writer = await asyncio.open_unix_connection(
                self.socket_path, ssl=self._ssl, server_hostname="writer" if self._ssl else None
            )
        except OSError as e:
            raise WriterUnavailable(e.strerror or str(e)) from e
        return reader, writer, h11.Connection(h11.CLIENT)


class _Closed(Exception):
    """The writer closed the connection before answering."""


async def _exchange(connection: tuple, message: h11.Request, body: bytes):
    reader, writer, state = connection
    writer.write(
        state.send(message) + state.send(h11.Data(data=body)) + state.send(h11.EndOfMessage())
    )
    await writer.drain()
    status, headers, chunks = None, [], []
    while True:
        event = state.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            state.receive_data(data)
            if not data and state.their_state is not h11.DONE:
                raise _Closed("the writer closed the connection")
            continue
        if isinstance(event, h11.Response):
            status, headers = event.status_code, list(event.headers)
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return status, headers, b"".join(chunks)
        elif isinstance(event, h11.ConnectionClosed):
            raise _Closed("the writer closed the connection")


def _close(connection: tuple) -> None:
    connection[1].close()


@dataclass(frozen=True)
class WorkerPlace:
    """Where one worker process stands among the server's workers."""

    index: int  # 0, 1, ...: the writer is 0
    role: str  # "writer" or "reader"
    count: int  # worker processes in all
    token: str  # known to the workers only: marks requests relayed by a reader
    writer_socket: str | None  # the writer's Unix socket (None: no writer, all read-only)
    workers_file: str  # the supervisor's JSON list of the workers (for the memory metrics)
    tls: bool = False  # whether the writer's socket speaks TLS (as the server does)

    @property
    def relays_writes(self) -> bool:
        """Whether this worker is a reader with a writer to relay to."""
        return self.role == "reader" and self.writer_socket is not None

    def link(self) -> WriterLink | None:
        """A reader's link to the writer, None for the writer or without one."""
        if not self.relays_writes:
            return None
        return WriterLink(self.writer_socket, self.token, tls=self.tls)
