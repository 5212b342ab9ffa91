"""What knflow's servers share at the HTTP edge: JSON answers, JSON bodies, and the one table that turns errors into
answers, used by the aiohttp middleware and by every lean HTTP/1.1 path alike. aiohttp is imported by the helpers
that work on its requests, not here: a lean path (a fresh function host) answers errors without it."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from infra.errors import InvalidRequest, KnflowError, PayloadTooLarge, Unavailable

if TYPE_CHECKING:
    from aiohttp import web

Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]
JSON_TYPE = "application/json"
log = logging.getLogger(__name__)


class ErrorAnswer(NamedTuple):
    """An error as an HTTP answer: the status, the body ``{"error": reason}`` and the headers (a lean path's
    ``Answer`` takes the three as they are)."""

    status: int
    body: bytes
    headers: Mapping[str, str]


def error_body(reason: str) -> bytes:
    """The body of every error answer of every knflow server."""
    return orjson.dumps({"error": reason})


def error_answer(exc: BaseException, headers: Mapping[str, str] | None = None) -> ErrorAnswer:
    """The one table from a failure to its answer: a ``KnflowError`` carries its status (``Retry-After: 1`` when
    retrying may succeed), aiohttp's HTTP errors theirs, a request cut by the server stopping is 503 (the sender
    tries again), anything else is 500 naming only the kind (the reason is in the server's log)."""
    if isinstance(exc, asyncio.CancelledError):
        exc = Unavailable("the server is stopping")
    if isinstance(exc, KnflowError):
        status, reason = exc.status, exc.message
    elif _is_aiohttp_error(exc):
        status, reason = exc.status, exc.reason  # type: ignore[attr-defined]  # an aiohttp HTTPException, checked above
    else:
        status, reason = 500, type(exc).__name__
    out = {"Content-Type": JSON_TYPE}
    if isinstance(exc, KnflowError) and exc.retryable:
        out["Retry-After"] = "1"
    return ErrorAnswer(status, error_body(reason), out | dict(headers or {}))


def _is_aiohttp_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of aiohttp's HTTP errors (there can be none before aiohttp is imported)."""
    exceptions = sys.modules.get("aiohttp.web_exceptions")
    return exceptions is not None and isinstance(exc, exceptions.HTTPException)


def error_response(exc: BaseException, headers: Mapping[str, str] | None = None) -> web.Response:
    """``error_answer`` as an aiohttp response, for a handler that answers an error with extra headers."""
    from aiohttp import web

    status, body, out = error_answer(exc, headers)
    return web.Response(status=status, body=body, headers=out)


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON answer serialized with orjson."""
    from aiohttp import web

    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON_TYPE, headers=headers)


def error_middleware(json_prefix: str = "/") -> Any:
    """Answer every failure of a request under ``json_prefix`` through ``error_answer`` (knflow's errors, aiohttp's
    4xx/5xx, and a bug, logged); elsewhere only knflow's errors (aiohttp keeps its pages)."""
    from aiohttp import web

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except KnflowError as exc:
            return error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400 or not request.path.startswith(json_prefix):
                raise
            return error_response(exc)
        except Exception as exc:
            if not request.path.startswith(json_prefix):
                raise
            log.error("%s %s failed", request.method, request.path, exc_info=exc)
            return error_response(exc)

    return errors


def answer_errors(
    handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """``handler`` under ``error_middleware``, for a low-level ``web.Server`` (which takes no middlewares and hands
    its handler a ``BaseRequest``)."""
    errors = error_middleware()
    return lambda request: errors(request, handler)


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """Answer ``Expect``: ``100-continue`` lets the body come; any other value is a 417 naming it (escaped, so a
    non-UTF-8 value cannot break the answer as it breaks aiohttp's own handler, which runs outside every middleware)."""
    from aiohttp import HttpVersion11

    expect = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        return error_response(KnflowError(f"unknown Expect: {expect!a}", status=417))
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim answer is not part of the response's size
    return None


def answer_expect(app: web.Application) -> web.Application:
    """Use ``expect_continue`` on every route of ``app`` (call it when all routes are added) and on the routes aiohttp
    makes per request for an unknown path or method (404, 405), which take the library's default."""
    from aiohttp import web_urldispatcher

    # no public hook for the default
    web_urldispatcher._default_expect_handler = expect_continue  # type: ignore[assignment]  # typed None; answers 417 too
    for route in app.router.routes():
        route._expect_handler = expect_continue  # aiohttp sets it only per add_route
    return app


async def read_body(request: web.BaseRequest, limit: int, what: str) -> bytes:
    """The request's body, whole; ``PayloadTooLarge`` naming ``what`` above ``limit`` bytes, with the same reason
    whether the body came with a Content-Length or chunked (a lean path hands the first kind over to aiohttp)."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"{what} is larger than the limit of {limit} bytes")
    if length is not None:
        return await request.content.readexactly(length) if length else b""
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"{what} is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: web.Request, limit: int, what: str) -> Any:
    """The request's JSON body; ``PayloadTooLarge`` above ``limit`` bytes, ``InvalidRequest`` naming ``what`` when it
    is not JSON."""
    body = await read_body(request, limit, what)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}") from None
