"""A signed webhook: any JSON ``POST /sources/webhook`` becomes an event of the configured type.

The sender signs with ``X-Knflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``
(the scheme Stripe and others use). A request is accepted (202) only with a valid signature whose
timestamp is within ``eventing.webhook_window_s`` of now and that was not seen before inside that
window; otherwise 401. With no ``eventing.webhook_secret`` configured every request is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import orjson
from aiohttp import web

from eventing.events import new_event

SIGNATURE_HEADER = "X-Knflow-Signature"


def sign(secret: str, body: bytes, timestamp: float | None = None) -> str:
    """The signature header value for ``body`` (what a sender puts in ``X-Knflow-Signature``)."""
    t = int(time.time() if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, header: str, body: bytes, window_s: float, now: float | None = None) -> str | None:
    """Why the signature is not acceptable, or None when it is."""
    if not secret:
        return "the webhook source has no secret configured (eventing.webhook_secret)"
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return f"missing or malformed {SIGNATURE_HEADER} header"
    if abs((time.time() if now is None else now) - t) > window_s:
        return "signature timestamp is outside the replay window"
    expected = sign(secret, body, t).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        return "signature does not match the body"
    return None


class WebhookSource:
    """``POST /sources/webhook`` for any JSON body, HMAC-signed."""

    def __init__(self, secret: str, window_s: float, event_type: str):
        self.secret, self.window_s, self.event_type = secret, window_s, event_type
        self._seen: dict[str, float] = {}
        self._publish: Any = None

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/sources/webhook", self._handle)]

    async def start(self, publish: Any) -> None:
        self._publish = publish

    async def stop(self) -> None:
        self._publish = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get(SIGNATURE_HEADER, "")
        reason = verify(self.secret, header, body, self.window_s)
        if reason is None and self._replayed(header):
            reason = "this signature was already used (replay)"
        if reason is not None:
            return web.json_response({"error": reason}, status=401)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return web.json_response({"error": "webhook body is not JSON"}, status=400)
        event = new_event(self.event_type, "knflow/webhook", data)
        await self._publish(event)
        return web.json_response({"id": event.get_id(), "runid": event.get_extension("runid")}, status=202)

    def _replayed(self, header: str) -> bool:
        now = time.time()
        self._seen = {sig: at for sig, at in self._seen.items() if now - at <= 2 * self.window_s}
        if header in self._seen:
            return True
        self._seen[header] = now
        return False
