"""Publishing events into a broker from other processes: ``publish`` (sync, for the CLI) and ``publish_async``.

Both POST the event in HTTP binary mode to the broker's ingress and return once it answered 202
(the event is durably stored). An error answer raises the knflow error of its status (``error_from_answer``:
``InvalidRequest``, ``NotFound``, ``PayloadTooLarge``...) with the broker's reason; a connection failure or a
5xx is retryable.
"""

from __future__ import annotations

from cloudevents.core.v1.event import CloudEvent

from eventing.bindings import to_http_binary
from infra.asyncclient import AsyncClient
from infra.errors import KnflowError
from infra.httpclient import JsonClient, error_from_answer, split_url


def _error(status: int, body: bytes, url: str) -> KnflowError:
    """The broker's refusal as knflow's error for its status (``error_from_answer``), worded for an event."""
    if status >= 500:
        return error_from_answer(f"broker {url} answered {status}", status, body)
    refused = f"broker {url} refused the event" + ("" if status == 413 else f" ({status})")
    return error_from_answer(refused, status, body)


def publish(broker_url: str, event: CloudEvent, timeout: float = 10.0) -> None:
    """Send ``event`` to the broker at ``broker_url`` and wait for it to be stored."""
    headers, body = to_http_binary(event)
    server, path = split_url(broker_url)
    answer = JsonClient(server, timeout=timeout, name="broker").send("POST", path, body, headers=headers)
    if answer.status >= 300:
        raise _error(answer.status, answer.data, broker_url)


async def publish_async(
    broker_url: str,
    event: CloudEvent,
    client: AsyncClient | None = None,
    timeout: float = 10.0,
    credentials: dict[str, str] | None = None,
) -> None:
    """``publish`` for asyncio code; pass a long-lived ``client`` on hot paths (``credentials``: an
    ``Authorization`` header for a broker that asks for one)."""
    headers, body = to_http_binary(event)
    headers |= credentials or {}
    own = client is None
    client = client or AsyncClient(name="broker")
    try:
        answer = await client.send("POST", broker_url, body, headers=headers, timeout=timeout)
    finally:
        if own:
            await client.close()
    if answer.status >= 300:
        raise _error(answer.status, answer.data, broker_url)
