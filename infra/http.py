"""What knflow's aiohttp servers share at the HTTP edge: JSON answers, JSON bodies, and the one place errors become
answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import HttpVersion11, web, web_urldispatcher

from infra.errors import InvalidRequest, KnflowError, PayloadTooLarge

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON answer serialized with orjson."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def error_middleware(json_prefix: str = "/") -> Any:
    """Turn ``KnflowError`` (and aiohttp's 4xx/5xx under ``json_prefix``) into ``{"error": reason}``."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except KnflowError as exc:
            return json_response({"error": exc.message}, exc.status)
        except web.HTTPException as exc:
            if exc.status < 400 or not request.path.startswith(json_prefix):
                raise
            return json_response({"error": exc.reason}, exc.status)

    return errors


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """Answer ``Expect``: ``100-continue`` lets the body come; any other value is a 417 naming it (escaped, so a
    non-UTF-8 value cannot break the answer as it breaks aiohttp's own handler, which runs outside every middleware)."""
    expect = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        return json_response({"error": f"unknown Expect: {expect!a}"}, 417)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim answer is not part of the response's size
    return None


def answer_expect(app: web.Application) -> web.Application:
    """Use ``expect_continue`` on every route of ``app`` (call it when all routes are added) and on the routes aiohttp
    makes per request for an unknown path or method (404, 405), which take the library's default."""
    # no public hook for the default
    web_urldispatcher._default_expect_handler = expect_continue  # type: ignore[assignment]  # typed None; answers 417 too
    for route in app.router.routes():
        route._expect_handler = expect_continue  # aiohttp sets it only per add_route
    return app


async def read_json(request: web.Request, limit: int, what: str) -> Any:
    """The request's JSON body; ``PayloadTooLarge`` above ``limit`` bytes, ``InvalidRequest`` naming ``what`` when it
    is not JSON."""
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"{what} may be {limit} bytes at most")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}") from None
