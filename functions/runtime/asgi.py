"""Knative's Python function shape under knflow's host: ``handle(scope, receive, send)`` as func-python calls it.

func-python 0.8.1's cloudevent middleware decodes the request into ``scope["event"]`` (the SDK's
``CloudEvent``), hands the function a ``send`` that takes an event (``await send(event)`` replies
in structured mode, ``send.binary(event)`` in binary mode, ``send.http(message)`` sends a raw ASGI
message) and calls ``start(os.environ copy)``, ``stop()``, ``alive()``, ``ready()`` (each health
check returns a bool or ``(bool, message)``). This adapter does the same, so such a function runs
unchanged. With ``invoke="http"`` (func-python's http middleware) the request is not decoded and
``send`` is the plain ASGI send. A function that sends nothing answers 204 (no reply event).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from eventing.bindings import ReadEvent, to_http_binary, to_http_structured
from eventing.events import continue_run
from functions.runtime.context import Runtime
from functions.runtime.loader import OptionalHooks, Reply, maybe_await


class _Response:
    """Collects the ASGI response messages a function sends."""

    __slots__ = ("body", "headers", "status")

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    async def __call__(self, message: Mapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
            self.headers = {_text(k): _text(v) for k, v in message.get("headers", ())}
            self.headers.pop("content-length", None)
        elif kind == "http.response.body":
            self.body += bytes(message.get("body", b""))


def as_reply(reply: CloudEvent, cause: CloudEvent) -> CloudEvent:
    """A function's reply as it goes back to the broker: within the cause's run (``continue_run``), and with
    ``datacontenttype: application/json`` when it carries structured data and names no type itself (what the
    JSON event format implies, and what the next step needs to get its data back as JSON, not bytes)."""
    reply = continue_run(reply, cause)
    if reply.get_datacontenttype() is None and isinstance(reply.get_data(), dict | list):
        return ReadEvent({**reply.get_attributes(), "datacontenttype": "application/json"}, reply.get_data())
    return reply


def _text(value: bytes | str) -> str:
    """A header name or value as knflow's HTTP paths hold them: UTF-8, other bytes as surrogates (sent as they came)."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes | bytearray) else str(value)


class CloudEventSender:
    """func-python's ``send`` for cloudevent functions: call it with an event, or use ``binary``/``http``."""

    __slots__ = ("_cause", "_response")

    def __init__(self, response: _Response, cause: CloudEvent):
        self._response = response
        self._cause = cause

    async def __call__(self, event: Any, status: int = 200) -> None:
        if isinstance(event, Mapping) and "type" in event and not isinstance(event, CloudEvent):
            await self._response(event)  # a raw ASGI message, tolerated for convenience
        else:
            await self.structured(event, status)

    async def structured(self, event: CloudEvent, status: int = 200) -> None:
        self._set(*to_http_structured(as_reply(event, self._cause)), status)

    async def binary(self, event: CloudEvent, status: int = 200) -> None:
        self._set(*to_http_binary(as_reply(event, self._cause)), status)

    async def http(self, message: Mapping[str, Any]) -> None:
        await self._response(message)

    def _set(self, headers: Mapping[str, str], body: bytes, status: int) -> None:
        self._response.status = status
        self._response.headers = dict(headers)
        self._response.body = body


class AsgiFunction(OptionalHooks):
    """A Knative-shaped function instance (``new()``'s object, or a module with ``handle(scope, receive, send)``)."""

    def __init__(self, name: str, instance: Any, invoke: str = "cloudevent"):
        if not callable(getattr(instance, "handle", None)):
            raise TypeError(f"function {name!r}: the object new() returned has no handle(scope, receive, send)")
        self.name = name
        self.instance = self.hooks = instance
        self.parses_event = invoke == "cloudevent"

    async def start(self, runtime: Runtime, environ: Mapping[str, str]) -> None:
        hook = getattr(self.instance, "start", None)
        if hook is not None:
            await maybe_await(hook(dict(environ)))

    async def call_asgi(self, scope: dict[str, Any], body: bytes, event: CloudEvent | None) -> Reply:
        """Run ``handle`` on one request and return what it sent."""
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        response = _Response()
        if event is not None:
            scope["event"] = event
            send: Any = CloudEventSender(response, event)
        else:
            send = response
        result = self.instance.handle(scope, receive, send)
        if inspect.isawaitable(result):
            await result
        if not response.status:
            return Reply(204, {}, b"")
        return Reply(response.status, response.headers, response.body)


def make_scope(
    method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], client: Any, server: Any
) -> dict[str, Any]:
    """An ASGI 3 HTTP scope for one request; ``headers`` as ASGI asks for them (names lowercased)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": client,
        "server": server,
    }
