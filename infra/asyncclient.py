"""knflow's asynchronous HTTP client: ``JsonClient``'s calls for code on an event loop, with the same ``Answer`` and
the same map from an error answer back to a knflow error (``error_from_answer``).

``http://`` URLs (and every URL when the client is given a Unix socket) go over ``infra.http1``'s lean keep-alive
connections; only ``https://`` goes over aiohttp, imported on the first such call, so a process that never calls an
``https://`` URL (a function host emitting to its broker) does without aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from infra.errors import Unavailable
from infra.http1 import Http1Pool
from infra.httpclient import Answer, error_from_answer

if TYPE_CHECKING:
    import aiohttp


def transport_failure(exc: BaseException, timeout: float | None) -> str:
    """What went wrong when a request got no answer: ``timed out after 2s``, or the error's type and text."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g}s" if timeout is not None else "timed out"
    return f"{type(exc).__name__}: {exc}"


class AsyncClient:
    """Calls to one server (``base_url``), or to any URL given whole instead of a path, pooled, with knflow's
    errors. ``name`` says what the server is ("gateway", "broker") in the error when it cannot be reached;
    ``headers`` go with every call; ``timeout`` bounds each call whole (None: no limit); ``unix_socket`` sends every
    call to that socket (the URL's host is then only the ``Host`` header); ``session`` is an aiohttp session for
    ``https://`` calls (the caller's to close; by default the client opens one on its first such call)."""

    def __init__(
        self,
        base_url: str = "",
        *,
        timeout: float | None = 30.0,
        headers: dict[str, str] | None = None,
        name: str = "",
        unix_socket: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.name = name
        self.timeout = timeout
        self.unix_socket = unix_socket
        self._pool = Http1Pool(unix_socket)
        self._session = session
        self._own_session = session is None

    async def send(
        self,
        method: str,
        path: str,
        data: bytes = b"",
        *,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """The answer to ``data`` whatever its status (header names lower-cased; ``raw_headers`` as sent);
        ``Unavailable`` (retryable, caused by the transport's error) when no answer came. ``timeout`` and ``headers``
        for this call only; ``path`` may be a whole URL."""
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        sent = headers if not self.headers else {**self.headers, **headers} if headers else self.headers
        limit = self.timeout if timeout is None else timeout
        try:
            if self.unix_socket is not None or url.startswith("http://"):
                return await self._pool.request(method, url, sent or {}, data, limit)
            return await self._secure(method, url, sent or {}, data, limit)
        except (OSError, TimeoutError) as exc:  # OSError covers ConnectionError; aiohttp's are caught in _secure
            raise self._unreachable(url, exc, limit) from exc

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The decoded JSON answer (None for an empty one) to ``body`` as JSON, or to ``raw`` as it is (with its own
        content type in ``headers``); an error answer raises its knflow error (``error_from_answer``)."""
        if raw is None:
            raw = b"" if body is None else orjson.dumps(body)
            headers = {"content-type": "application/json", **(headers or {})}
        answer = await self.send(method, path, raw, timeout=timeout, headers=headers)
        if answer.status >= 400:
            raise error_from_answer(f"{method} {path}", answer.status, answer.data)
        return orjson.loads(answer.data) if answer.data else None

    async def close(self) -> None:
        """Close the pooled connections, and the aiohttp session if the client opened it."""
        await self._pool.close()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _secure(
        self, method: str, url: str, headers: dict[str, str], data: bytes, timeout: float | None
    ) -> Answer:
        import aiohttp  # the first https:// call brings it in

        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            limit = aiohttp.ClientTimeout(total=timeout)
            async with self._session.request(method, url, data=data, headers=headers, timeout=limit) as response:
                body = await response.read()
        except aiohttp.ClientError as exc:
            raise self._unreachable(url, exc, timeout) from exc
        raw = tuple(response.headers.items())
        lowered = {name.lower(): value for name, value in raw}
        return Answer(response.status, lowered, body, response.reason or "", raw)

    def _unreachable(self, url: str, exc: BaseException, timeout: float | None) -> Unavailable:
        where = self.base_url or url
        where = f"{self.name} {where}" if self.name else where
        return Unavailable(f"{where} is not reachable: {transport_failure(exc, timeout)}")
