"""knflow's synchronous HTTP client for its own APIs, and the one map from an error answer back to an error.

Every knflow server answers errors as ``{"error": reason}`` with the status of a ``KnflowError``;
``error_from_answer`` turns such an answer into the same kind of error on the client side, so a 400 is
an ``InvalidRequest`` with the server's reason wherever the call was made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from infra.errors import Conflict, InvalidRequest, KnflowError, NotFound, PayloadTooLarge, Unavailable

if TYPE_CHECKING:
    import urllib3  # imported on a client's first use: the error map alone is wanted where every ms of a start counts

BY_STATUS: dict[int, type[KnflowError]] = {
    400: InvalidRequest,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: Unavailable,  # too many requests: the same call later may pass
    503: Unavailable,
}


def retryable_status(status: int) -> bool:
    """Whether a call answered ``status`` may pass if made again: a 5xx or a 429, not another refusal."""
    return status >= 500 or status == 429


def error_from_answer(what: str, status: int, body: bytes) -> KnflowError:
    """The knflow error for an error answer: its ``error`` reason (or the raw body) and its status."""
    try:
        reason = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        reason = body.decode("utf-8", "replace")[:500]
    kind = BY_STATUS.get(status, InvalidRequest if 400 <= status < 500 else KnflowError)
    return kind(f"{what}: {reason}", status=status, retryable=retryable_status(status))


@dataclass(frozen=True)
class Answer:
    """One answer as it came, whatever its status; ``raw_headers`` keeps the names as sent, in order (when the
    client read them so)."""

    status: int
    headers: dict[str, str]
    data: bytes
    reason: str = ""
    raw_headers: tuple[tuple[str, str], ...] = ()


def split_url(url: str) -> tuple[str, str]:
    """``http://host:port/a/b?q`` as the server part and the path (with its query) a ``JsonClient`` takes."""
    parts = urlsplit(url)
    path = parts.path or "/"
    return f"{parts.scheme}://{parts.netloc}", path + (f"?{parts.query}" if parts.query else "")


class JsonClient:
    """JSON calls to one knflow server (``http://host:port``), pooled, with knflow's errors. ``name`` says what the
    server is ("gateway", "broker") in the error when it cannot be reached."""

    def __init__(
        self,
        base_url: str,
        timeout: float | urllib3.Timeout = 30.0,
        headers: dict[str, str] | None = None,
        name: str = "",
    ):
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.name = name
        self.timeout = timeout
        import urllib3

        self._http = urllib3.PoolManager(retries=False, timeout=timeout, maxsize=16)

    def send(
        self,
        method: str,
        path: str,
        data: bytes | Iterable[bytes] | None = None,
        *,
        timeout: float | urllib3.Timeout | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """The answer to ``data`` (an iterable is streamed) whatever its status; ``Unavailable`` when the server
        cannot be reached. ``timeout`` and ``headers`` for this call only."""
        import urllib3

        sent = {**self.headers, **(headers or {})}
        try:
            answer = self._http.request(
                method, self.base_url + path, body=data, headers=sent, timeout=timeout or self.timeout
            )
        except urllib3.exceptions.HTTPError as exc:
            where = f"{self.name} {self.base_url}" if self.name else self.base_url
            raise Unavailable(f"{where} is not reachable: {exc}") from None
        return Answer(answer.status, dict(answer.headers), answer.data, answer.reason or "")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | Iterable[bytes] | None = None,
        timeout: float | urllib3.Timeout | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The decoded JSON answer (None for an empty one) to ``body`` as JSON, or to ``raw`` as it is (with its own
        content type in ``headers``); an error answer raises its knflow error (``error_from_answer``)."""
        if raw is None:
            raw = None if body is None else orjson.dumps(body)
            headers = {"content-type": "application/json", **(headers or {})}
        answer = self.send(method, path, raw, timeout=timeout, headers=headers)
        if answer.status >= 400:
            raise error_from_answer(f"{method} {path}", answer.status, answer.data)
        return orjson.loads(answer.data) if answer.data else None

    def alive(self, path: str, timeout: float = 1.0) -> bool:
        """Whether something answers ``GET path`` below 500."""
        import urllib3

        try:
            return self._http.request("GET", self.base_url + path, timeout=timeout).status < 500
        except urllib3.exceptions.HTTPError:
            return False
