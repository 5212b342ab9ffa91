"""The floor under any Python HTTP server on this machine: uvloop and llhttp answering each POST with a fixed reply.

No CloudEvent is read or built and no function runs: what is left is the event loop, the HTTP parser and the
sockets. ``bench/functions/run.py`` loads it beside the hosts, so the share of a host's time that is its own work
(not the I/O) reads off the same run. Usage: ``LISTEN_ADDRESS=127.0.0.1:PORT python bench/functions/bare.py``.
"""

from __future__ import annotations

import asyncio
import os
from typing import cast

import httptools
import uvloop

REPLY_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nce-specversion: 1.0\r\nce-id: bare\r\n"
    b"ce-source: /bench/bare\r\nce-type: dev.knflow.bench.pong\r\nContent-Length: %d\r\n\r\n"
)


class Echo(asyncio.Protocol):
    """Each request's body back, in a binary-mode reply with fixed attributes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream connection's
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        self.body.clear()
        self.transport.write(REPLY_HEAD % len(body) + body)


async def main() -> None:
    host, _, port = os.environ["LISTEN_ADDRESS"].rpartition(":")
    server = await asyncio.get_running_loop().create_server(Echo, host, int(port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main())
