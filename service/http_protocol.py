"""uvicorn's HTTP protocols with a deadline for a request's headers, and one send per answer.

uvicorn bounds the idle time between keep-alive requests, but not the time a client takes to
send a request's headers: a client that sends half a header and waits (slowloris) holds a
connection open for ever. These protocols answer ``408`` and close the connection when the
headers of a request are not complete ``header_timeout`` seconds after its first byte (or
after the connection opened). The body's deadline is the gateway's (``lsr.service.gateway``).

Two parsers: ``httptools`` (C, llhttp; what ``uvicorn[standard]`` installs and what the
server uses when it is there: several times the requests per second of the pure-Python
parser) and ``h11`` (pure Python, uvicorn's fallback).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json


def _json_response(status: bytes, message: str) -> bytes:
    """A whole response in the service's one error body, closing the connection."""
    body = json.dumps({"error": message}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


_TIMEOUT_RESPONSE = _json_response(b"408 Request Timeout", "request headers not received in time")


class _CoalescingTransport:
    """A transport whose writes within one turn of the event loop leave in one send.

    uvicorn writes a response's status line and headers, then its body: two system calls
    per answer where one does, and for a BM25 search they are the largest single cost left
    in the server (about a fifth of a worker's time under load). Writes are held until the
    loop's next turn (``call_soon``) and sent joined; ``close`` and ``write_eof`` send what is
    held first. Everything else is the wrapped transport's."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = [data]
            self._loop.call_soon(self._send_held)
        else:
            self._held.append(data)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def _send_held(self) -> None:
        held, self._held = self._held, None
        if held:
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def get_write_buffer_size(self) -> int:
        held = sum(len(d) for d in self._held) if self._held else 0
        return held + self._transport.get_write_buffer_size()

    def write_eof(self) -> None:
        self._send_held()
        self._transport.write_eof()

    def close(self) -> None:
        self._send_held()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class _HeaderDeadline:
    """The timer: armed when a connection opens and when a request begins, disarmed when
    the request's headers are complete; at expiry it answers 408 and closes. A request the
    parser cannot read gets 400 in the same JSON error body as every other error (uvicorn
    answers it in plain text)."""

    header_timeout: float = 10.0
    _header_deadline: asyncio.TimerHandle | None = None
    _awaiting_headers: bool = True

    def _arm(self) -> None:
        self._awaiting_headers = True
        if self._header_deadline is None and not self.transport.is_closing():
            self._header_deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        self._awaiting_headers = False
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def send_400_response(self, msg: str) -> None:
        self.transport.write(_json_response(b"400 Bad Request", msg))
        self.transport.close()

    def _expire(self) -> None:
        self._header_deadline = None
        if self._awaiting_headers and not self.transport.is_closing():
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()


def _h11_class():
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class H11HeaderTimeout(_HeaderDeadline, H11Protocol):
        def connection_made(self, transport):  # type: ignore[override]
            super().connection_made(_CoalescingTransport(transport, self.loop))
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                self._arm()  # a request has begun and its headers are not complete yet
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return H11HeaderTimeout


def _httptools_class():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsHeaderTimeout(_HeaderDeadline, HttpToolsProtocol):
        def connection_made(self, transport):  # type: ignore[override]
            super().connection_made(_CoalescingTransport(transport, self.loop))
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HttpToolsHeaderTimeout


def default_parser() -> str:
    """``httptools`` when it is installed, else ``h11``."""
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def protocol_with_header_timeout(seconds: float, parser: str | None = None) -> type:
    """The protocol class to pass as uvicorn's ``http`` setting."""
    parser = parser or default_parser()
    base = {"httptools": _httptools_class, "h11": _h11_class}[parser]()
    return type(base.__name__, (base,), {"header_timeout": seconds})
