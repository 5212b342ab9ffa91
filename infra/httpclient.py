"""knflow's synchronous HTTP client for its own APIs, and the one map from an error answer back to an error.

Every knflow server answers errors as ``{"error": reason}`` with the status of a ``KnflowError``;
``error_from_answer`` turns such an answer into the same kind of error on the client side, so a 400 is
an ``InvalidRequest`` with the server's reason wherever the call was made.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import urllib3

from infra.errors import Conflict, InvalidRequest, KnflowError, NotFound, PayloadTooLarge, Unavailable

BY_STATUS: dict[int, type[KnflowError]] = {
    400: InvalidRequest,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    503: Unavailable,
}


def error_from_answer(what: str, status: int, body: bytes) -> KnflowError:
    """The knflow error for an error answer: its ``error`` reason (or the raw body) and its status."""
    try:
        reason = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        reason = body.decode("utf-8", "replace")[:500]
    kind = BY_STATUS.get(status, InvalidRequest if 400 <= status < 500 else KnflowError)
    error = kind(f"{what}: {reason}", status=status)
    if status >= 500:
        error.retryable = True
    return error


class JsonClient:
    """JSON calls to one knflow server (``http://host:port``), pooled, with knflow's errors."""

    def __init__(self, base_url: str, timeout: float = 30.0, headers: dict[str, str] | None = None):
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self._http = urllib3.PoolManager(retries=False, timeout=timeout, maxsize=16)

    def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | Iterable[bytes] | None = None, **headers: str
    ) -> Any:
        """The decoded JSON answer (None for an empty one); ``Unavailable`` when the server cannot be reached.
        ``raw`` is sent as the body instead of ``body`` as JSON (an iterable is streamed)."""
        data = raw if raw is not None else (None if body is None else orjson.dumps(body))
        sent = {"content-type": "application/json", **self.headers, **headers}
        try:
            answer = self._http.request(method, self.base_url + path, body=data, headers=sent)
        except urllib3.exceptions.HTTPError as exc:
            raise Unavailable(f"{self.base_url} is not reachable: {exc}") from None
        if answer.status >= 400:
            raise error_from_answer(f"{method} {path}", answer.status, answer.data)
        return orjson.loads(answer.data) if answer.data else None

    def alive(self, path: str) -> bool:
        """Whether something answers ``GET path`` below 500."""
        try:
            return self._http.request("GET", self.base_url + path, timeout=1.0).status < 500
        except urllib3.exceptions.HTTPError:
            return False
