"""Gateway ↔ replica transport: length-prefixed frames over a unix socket, many requests in flight per connection.

Request frame:  u32 request id, u8 codec, u32 body length, body (the request exactly as the client sent it;
                the codec says how to read it, see ``serving.dataplane``).
Response frame: u32 request id, u16 HTTP status, u32 body length, body. Status ``STARTED`` (0, empty body)
                is not an answer: the replica says it has begun running that request, so the gateway knows
                which requests a replica that dies had not yet started (and may retry those elsewhere).

Both ends are ``asyncio.Protocol``s that cut every frame out of each received chunk at once,
so a burst of requests costs one wakeup, not one coroutine step per frame.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import cast

REQUEST = struct.Struct("!IBI")
RESPONSE = struct.Struct("!IHI")
STARTED = 0


def request_frame(rid: int, codec: int, body: bytes) -> bytes:
    return REQUEST.pack(rid, codec, len(body)) + body


def started_frame(rid: int) -> bytes:
    return RESPONSE.pack(rid, STARTED, 0)


def response_frame(rid: int, status: int, body: bytes) -> bytes:
    return RESPONSE.pack(rid, status, len(body)) + body


class FrameProtocol(asyncio.Protocol):
    """Cuts frames with a fixed header out of the byte stream and hands each to ``on_frame``."""

    header: struct.Struct

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream connection's transport

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        size = self.header.size
        start = 0
        while len(buf) - start >= size:
            rid, field, length = self.header.unpack_from(buf, start)
            end = start + size + length
            if len(buf) < end:
                break
            self.on_frame(rid, field, bytes(buf[start + size : end]))
            start = end
        if start:
            del buf[:start]
        self.on_burst_end()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def on_frame(self, rid: int, field: int, body: bytes) -> None:
        """One frame: its request id, its header's second field (codec or status) and its body."""
        raise NotImplementedError

    def on_burst_end(self) -> None:
        """Called after each received chunk's frames are handed over (also when it held only part of a frame)."""


class RequestReader(FrameProtocol):
    """Replica side: each request frame becomes ``on_request(protocol, rid, codec, body)``."""

    header = REQUEST

    def __init__(self, on_request: Callable[[RequestReader, int, int, bytes], None], on_burst: Callable[[], None]):
        super().__init__()
        self.on_request = on_request
        self.on_burst = on_burst

    def on_frame(self, rid: int, codec: int, body: bytes) -> None:
        self.on_request(self, rid, codec, body)

    def on_burst_end(self) -> None:
        self.on_burst()


class ResponseReader(FrameProtocol):
    """Gateway side: each response frame becomes ``on_response(rid, status, body)``."""

    header = RESPONSE

    def __init__(self, on_response: Callable[[int, int, bytes], None], on_lost: Callable[[], None]):
        super().__init__()
        self.on_response = on_response
        self.on_lost = on_lost

    def on_frame(self, rid: int, status: int, body: bytes) -> None:
        self.on_response(rid, status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.on_lost()
