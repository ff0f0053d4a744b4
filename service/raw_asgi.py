"""The HTTP limit of this stack: a minimal ASGI app that answers every request with a fixed
127-byte JSON body (the size of a short search answer), served by uvicorn like ``lsr serve``
(httptools and uvloop when installed). ``lsr loadtest`` starts it beside the server it
measures and reports both, so the server's requests per second read as a share of what
the HTTP layer alone allows.

Run: ``python -m lsr.service.raw_asgi PORT [WORKERS]`` (loopback only; WORKERS processes,
as many as the server it is compared with).
"""

from __future__ import annotations

import sys

BODY = (
    b'{"hits":[{"id":"4983","score":12.5},{"id":"5836","score":11.25},'
    b'{"id":"7912","score":10.0},{"id":"1","score":1.0}],"took":0.05}'
)
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # the request's body, as a real endpoint reads it
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main(port: int, workers: int = 1) -> None:
    import importlib.util

    import uvicorn

    uvicorn.run(
        "lsr.service.raw_asgi:app" if workers > 1 else app,
        workers=workers,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1)
