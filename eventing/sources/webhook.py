"""A signed webhook: any JSON ``POST /sources/webhook`` becomes an event of the configured type.

The sender signs with ``X-Knflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``
(the scheme Stripe and others use), exactly that grammar. A request is accepted (202) only with a valid
signature whose timestamp is within ``eventing.webhook_window_s`` of now and whose ``(t, v1)`` pair was not
seen before inside that window — the pairs seen are kept in a file, so a restarted broker still refuses
a replay; otherwise 401. With no ``eventing.webhook_secret`` configured every request is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from eventing.events import PIPELINE, new_event
from infra.atomic import write_json
from infra.errors import InvalidRequest, KnflowError
from infra.guard import access

SIGNATURE_HEADER = "X-Knflow-Signature"
_SIGNATURE = re.compile(r"^t=(0|[1-9][0-9]{0,11}),v1=([0-9a-f]{64})$")


def sign(secret: str, body: bytes, timestamp: float | None = None) -> str:
    """The signature header value for ``body`` (what a sender puts in ``X-Knflow-Signature``)."""
    t = int(time.time() if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, header: str, body: bytes, window_s: float, now: float | None = None) -> str | None:
    """Why the signature is not acceptable, or None when it is."""
    if not secret:
        return "the webhook source has no secret configured (eventing.webhook_secret)"
    pair = parse_signature(header)
    if pair is None:
        return f"missing or malformed {SIGNATURE_HEADER} header (expected t=<seconds>,v1=<64 hex digits>)"
    t, mac = pair
    if abs((time.time() if now is None else now) - t) > window_s:
        return "signature timestamp is outside the replay window"
    expected = sign(secret, body, t).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, mac):
        return "signature does not match the body"
    return None


def parse_signature(header: str) -> tuple[int, str] | None:
    """The ``(t, v1)`` pair of a signature header in the one accepted form, else None."""
    match = _SIGNATURE.match(header)
    return (int(match.group(1)), match.group(2)) if match else None


class WebhookSource:
    """``POST /sources/webhook`` for any JSON body, HMAC-signed."""

    def __init__(self, secret: str, window_s: float, event_type: str, state_path: Path, pipeline: str = "") -> None:
        self.secret, self.window_s, self.event_type = secret, window_s, event_type
        self.state_path, self.pipeline = Path(state_path), pipeline
        self._seen: dict[str, float] = _load_seen(self.state_path)
        self._publish: Any = None

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/sources/webhook", self._handle)]

    async def start(self, publish: Any) -> None:
        self._publish = publish

    async def stop(self) -> None:
        self._publish = None

    @access("open")
    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get(SIGNATURE_HEADER, "")
        reason = verify(self.secret, header, body, self.window_s)
        pair = parse_signature(header)  # verify found it well formed when it gave no reason
        if reason is None and pair is not None and self._replayed(pair):
            reason = "this signature was already used (replay)"
        if reason is not None:
            raise KnflowError(reason, status=401)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidRequest("webhook body is not JSON") from None
        extensions = {PIPELINE: self.pipeline} if self.pipeline else None
        event = new_event(self.event_type, "knflow/webhook", data, extensions=extensions)
        await self._publish(event)
        return web.json_response({"id": event.get_id(), "runid": event.get_extension("runid")}, status=202)

    def _replayed(self, pair: tuple[int, str]) -> bool:
        """Whether the ``(t, v1)`` pair was used inside the window; records it (durably) when not."""
        now = time.time()
        self._seen = {sig: at for sig, at in self._seen.items() if now - at <= 2 * self.window_s}
        key = f"{pair[0]}:{pair[1]}"
        if key in self._seen:
            return True
        self._seen[key] = now
        write_json(self.state_path, self._seen)  # before the event is accepted: a restart keeps refusing it
        return False


def _load_seen(path: Path) -> dict[str, float]:
    try:
        seen = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): float(v) for k, v in seen.items()} if isinstance(seen, dict) else {}
