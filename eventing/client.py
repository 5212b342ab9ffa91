"""Publishing events into a broker from other processes: ``publish`` (sync, for the CLI) and ``publish_async``.

Both POST the event in HTTP binary mode to the broker's ingress and return once it answered 202
(the event is durably stored). A 4xx answer raises ``InvalidRequest``/``PayloadTooLarge`` with the
broker's reason; a connection failure or 5xx raises ``Unavailable`` (retryable).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import aiohttp
from cloudevents.core.v1.event import CloudEvent

from eventing.bindings import to_http_binary
from infra.errors import InvalidRequest, KnflowError, PayloadTooLarge, Unavailable


def _error(status: int, body: bytes, url: str) -> KnflowError:
    try:
        reason = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        reason = body.decode("utf-8", "replace")[:200]
    if status == 413:
        return PayloadTooLarge(f"broker {url} refused the event: {reason}")
    if 400 <= status < 500:
        return InvalidRequest(f"broker {url} refused the event ({status}): {reason}")
    return Unavailable(f"broker {url} answered {status}: {reason}")


def publish(broker_url: str, event: CloudEvent, timeout: float = 10.0) -> None:
    """Send ``event`` to the broker at ``broker_url`` and wait for it to be stored."""
    headers, body = to_http_binary(event)
    request = urllib.request.Request(broker_url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        raise _error(exc.code, exc.read(), broker_url) from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"broker {broker_url} is not reachable: {exc}") from None


async def publish_async(
    broker_url: str,
    event: CloudEvent,
    session: aiohttp.ClientSession | None = None,
    timeout: float = 10.0,
    credentials: dict[str, str] | None = None,
) -> None:
    """``publish`` for asyncio code; pass a long-lived ``session`` on hot paths (``credentials``: an
    ``Authorization`` header for a broker that asks for one)."""
    headers, body = to_http_binary(event)
    headers |= credentials or {}
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        async with session.post(
            broker_url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            payload = await r.read()
            if r.status >= 300:
                raise _error(r.status, payload, broker_url)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Unavailable(f"broker {broker_url} is not reachable: {exc}") from None
    finally:
        if own:
            await session.close()
