"""Gateway ↔ replica transport: length-prefixed frames over a unix socket, many requests in flight per connection.

Request frame:  u32 request id, u32 body length, body (the V2 JSON exactly as the client sent it).
Response frame: u32 request id, u16 HTTP status, u32 body length, body.
"""

from __future__ import annotations

import asyncio
import struct

REQUEST = struct.Struct("!II")
RESPONSE = struct.Struct("!IHI")


async def read_request(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next request frame (``IncompleteReadError`` at end of stream)."""
    rid, length = REQUEST.unpack(await reader.readexactly(REQUEST.size))
    return rid, await reader.readexactly(length)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """The next response frame: request id, status, body."""
    rid, status, length = RESPONSE.unpack(await reader.readexactly(RESPONSE.size))
    return rid, status, await reader.readexactly(length)


def request_frame(rid: int, body: bytes) -> bytes:
    return REQUEST.pack(rid, len(body)) + body


def response_frame(rid: int, status: int, body: bytes) -> bytes:
    return RESPONSE.pack(rid, status, len(body)) + body
