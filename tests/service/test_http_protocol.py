"""The coalescing transport under the server's HTTP protocols: what uvicorn writes for one
answer (status line and headers, then the body) leaves in one send, in order, and nothing
held is lost at close. On a real asyncio socket transport (a socket pair); a thin recorder in
front of it counts the sends it receives."""

import asyncio
import socket

from lsr.service.http_protocol import _CoalescingTransport


class _Recorder:
    """The real transport, with a count of the writes that reach it."""

    def __init__(self, transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name):
        return getattr(self.transport, name)


async def _pair():
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    theirs.setblocking(False)
    recorder = _Recorder(transport)
    return loop, _CoalescingTransport(recorder, loop), recorder, theirs


async def _read_all(loop, sock) -> bytes:
    chunks = []
    while chunk := await loop.sock_recv(sock, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_the_writes_of_one_turn_leave_in_one_send_and_close_sends_what_is_held():
    async def scenario():
        loop, coalescing, recorder, theirs = await _pair()
        head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
        coalescing.write(head)
        coalescing.write(b"{}")
        assert recorder.writes == []  # held until the loop's next turn
        assert coalescing.get_write_buffer_size() == len(head) + 2
        await asyncio.sleep(0)
        assert recorder.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        coalescing.writelines([b"second ", b"answer"])
        coalescing.write(b", then closed")
        coalescing.close()  # sends the held bytes first
        assert recorder.writes[1:] == [b"second answer, then closed"]
        await asyncio.sleep(0)  # the scheduled send finds nothing left
        assert len(recorder.writes) == 2 and coalescing.is_closing()
        received = await _read_all(loop, theirs)
        theirs.close()
        return received

    received = asyncio.run(scenario())
    assert received == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}second answer, then closed"


def test_abort_drops_what_is_held():
    async def scenario():
        loop, coalescing, recorder, theirs = await _pair()
        coalescing.write(b"never sent")
        coalescing.abort()
        await asyncio.sleep(0)
        received = await _read_all(loop, theirs)
        theirs.close()
        return recorder.writes, received

    writes, received = asyncio.run(scenario())
    assert writes == [] and received == b""
