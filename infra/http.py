"""What knflow's aiohttp servers share at the HTTP edge: JSON answers and the one place errors become them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from infra.errors import KnflowError

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
