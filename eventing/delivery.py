"""Delivery of one event to one trigger's subscriber with Knative's delivery semantics.

Retried: network errors and timeouts, 5xx, 404, 408, 409, 429 (not other 4xx or 3xx), waiting
``DeliverySpec.backoff(n)`` before retry n (exponential: backoffDelay, 2x, 4x ...; linear:
backoffDelay, 2x, 3x ...); with ``retryAfterMax`` a ``Retry-After`` on 429/503 is honoured up to
that cap. A 2xx reply carrying a CloudEvent (binary or structured) is published back into the
broker. When retries are spent the event goes to the ``deadLetterSink`` with Knative's
``knativeerrordest``/``knativeerrorcode``/``knativeerrordata`` extensions, AND a
``dev.knflow.step.failed`` event is published into the broker (except for step.failed events
themselves), so the lifecycle sees every failure whether or not a sink is configured.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from cloudevents.core.v1.event import CloudEvent

from eventing.events import NAMESPACE, RUNID, STEP_FAILED, TRACEPARENT, InvalidEvent, describe, namespace_of, new_event
from eventing.metrics import BrokerMetrics
from eventing.triggers import DeliverySpec, Trigger
from eventing.wire import from_http, to_http_binary
from infra import tracing
from infra.asyncclient import AsyncClient, transport_failure
from infra.errors import Unavailable
from infra.httpclient import retryable_status
from infra.namespaces import DEFAULT, of_extension
from infra.settings import EventingSettings

log = logging.getLogger(__name__)

RETRIED_STATUSES = frozenset({404, 408, 409})  # retried besides what any knflow client retries (5xx, 429)
BROKER_SOURCE = "knflow/broker"
Publish = Callable[[CloudEvent], Awaitable[None]]


@dataclass(frozen=True)
class Attempt:
    """The outcome of one HTTP attempt; ``status`` is 0 for a network error or timeout."""

    status: int
    body: bytes = b""
    error: str = ""
    retry_after: float | None = None
    reply: CloudEvent | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status == 0 or retryable_status(self.status) or self.status in RETRIED_STATUSES


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


#: Knative's default when a trigger has no delivery spec: one attempt (built once, not per event).
NO_RETRIES = DeliverySpec()


class Deliverer:
    """Sends events to subscribers (``infra.asyncclient``: its lean pool for http://, ``session`` for https://);
    ``publish`` feeds the broker."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        publish: Publish,
        default_timeout: float = EventingSettings.delivery_timeout_s,
        credentials: Callable[[str], dict[str, str]] | None = None,
        metrics: BrokerMetrics | None = None,
    ):
        self.session, self.publish, self.default_timeout = session, publish, default_timeout
        self.metrics = metrics or BrokerMetrics()
        self.credentials = credentials or (lambda url: {})  # the platform's token, for its own subscribers only
        self.client = AsyncClient(session=session)  # each send passes its own delivery timeout

    async def deliver(self, trigger: Trigger, event: CloudEvent) -> Attempt:
        """Deliver with retries; publish the reply, or dead-letter and report the failure (traced when tracing is
        on: one span per delivery, a child of the event's ``traceparent``; retries and failures are events on it)."""
        span = None
        if tracing.enabled():
            attributes = {
                "knflow.trigger": trigger.name,
                "cloudevents.event_type": event.get_type(),
                "cloudevents.event_id": event.get_id(),
                "knflow.runid": event.get_extension(RUNID) or "",
            }
            name = f"deliver {trigger.name}"
            span = tracing.start_span(name, event.get_extension(TRACEPARENT), kind="consumer", attributes=attributes)
        result = Attempt(0, error="delivery bookkeeping failed")
        try:
            result = await self._deliver(trigger, event, span)
            return result
        finally:
            if span is not None:
                span.set_attribute("http.response.status_code", result.status)
                tracing.end_span(span, None if result.ok else f"status {result.status} {result.error}".strip())

    async def _deliver(self, trigger: Trigger, event: CloudEvent, span: Any) -> Attempt:
        spec = trigger.delivery or NO_RETRIES
        headers, body = to_http_binary(event)
        headers |= self.credentials(trigger.subscriber)
        if span is not None:
            headers[tracing.TRACEPARENT_HEADER] = tracing.traceparent_of(span)  # the subscriber's span: its child
        began = time.monotonic()
        result, attempts = await self._send(trigger.subscriber, headers, body, spec, span)
        self.metrics.delivery(trigger.name, result.ok, attempts, time.monotonic() - began)
        if result.ok and result.reply is not None:
            result = _keeps_namespace(result, event)
        if result.ok:
            if result.reply is not None:
                await self.publish(result.reply)
            return result
        log.warning(
            "delivery of %s to trigger %s failed after %d attempt(s): status %s %s",
            describe(event),
            trigger.name,
            attempts,
            result.status,
            result.error,
        )
        with tracing.activated(span):  # the failure report is a child of this delivery
            await self._fail(trigger, event, spec, result, attempts)
        return result

    async def _send(
        self, url: str, headers: dict[str, str], body: bytes, spec: DeliverySpec, span: Any = None
    ) -> tuple[Attempt, int]:
        """POST with the spec's retries and backoff; the last attempt's outcome and how many attempts were made
        (with ``span``, each attempt of a delivery that was retried or failed is an event on it)."""
        retry = 0
        while True:
            result = await self.attempt(url, headers, body, spec)
            if span is not None and (retry or not result.ok):
                span.add_event("attempt", {"attempt": retry + 1, "status": result.status, "error": result.error})
            if result.ok or not result.retryable or retry >= spec.retry:
                return result, retry + 1
            await asyncio.sleep(self._delay(spec, retry, result))
            retry += 1

    def _delay(self, spec: DeliverySpec, retry: int, result: Attempt) -> float:
        delay = spec.backoff(retry)
        if spec.retry_after_max is not None and result.status in (429, 503) and result.retry_after is not None:
            delay = max(delay, min(result.retry_after, float(spec.retry_after_max)))
        return delay

    async def attempt(self, url: str, headers: dict[str, str], body: bytes, spec: DeliverySpec) -> Attempt:
        """One POST; never raises for delivery failures."""
        timeout = float(spec.timeout or self.default_timeout)
        try:
            answer = await self.client.send("POST", url, body, timeout=timeout, headers=headers)
        except Unavailable as exc:  # the transport's own error says what happened, as Knative's reports do
            return Attempt(0, error=transport_failure(exc.__cause__ or exc, timeout))
        return _attempt(answer.status, answer.reason, answer.headers, answer.data)

    async def _fail(self, trigger: Trigger, event: CloudEvent, spec: DeliverySpec, result: Attempt, attempts: int):
        if spec.dead_letter_sink:
            await self._dead_letter(trigger, event, spec, result)
        if event.get_type() == STEP_FAILED:
            return  # never report the failure of a failure report: that could loop
        await self.publish(step_failed_event(trigger, event, result, attempts, spec.dead_letter_sink))

    async def _dead_letter(self, trigger: Trigger, event: CloudEvent, spec: DeliverySpec, result: Attempt) -> None:
        attributes = dict(event.get_attributes())
        attributes["knativeerrordest"] = trigger.subscriber
        attributes["knativeerrorcode"] = str(result.status)
        if result.body:
            attributes["knativeerrordata"] = base64.b64encode(result.body).decode()
        headers, body = to_http_binary(CloudEvent(attributes, event.get_data()))
        assert spec.dead_letter_sink is not None, "dead letters go only to a spec's sink"
        outcome, _ = await self._send(spec.dead_letter_sink, headers, body, spec)
        if outcome.ok:
            return
        log.error("dead-letter sink %s refused %s: status %s", spec.dead_letter_sink, describe(event), outcome.status)


def _keeps_namespace(result: Attempt, event: CloudEvent) -> Attempt:
    """A reply stays in the namespace of the event it answers: one naming none gets it; one naming another makes the
    delivery fail (reported as step.failed), so a subscriber cannot publish into a namespace it was not given."""
    reply = result.reply
    assert reply is not None, "only a delivery that has a reply is checked"
    namespace, claimed = namespace_of(event), reply.get_extension(NAMESPACE)
    if claimed is None:
        if namespace == DEFAULT:
            return result
        return Attempt(
            result.status,
            result.body,
            reply=CloudEvent({**reply.get_attributes(), NAMESPACE: namespace}, reply.get_data()),
        )
    if of_extension(claimed) == namespace:
        return result
    why = f"the reply claims namespace {claimed!r}; the event it answers is of {namespace!r}"
    return Attempt(502, why.encode(), why)


def _attempt(status: int, reason: str, headers: Any, body: bytes) -> Attempt:
    if not 200 <= status < 300:
        return Attempt(status, body, reason, _retry_after(headers.get("Retry-After") or headers.get("retry-after")))
    return Attempt(status, body, reply=_reply(headers, body))


def _reply(headers: Mapping[str, str], body: bytes) -> CloudEvent | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    if "ce-specversion" not in lowered and not lowered.get("content-type", "").startswith("application/cloudevents"):
        return None
    try:
        return from_http(lowered, body)
    except InvalidEvent as exc:
        log.warning("subscriber replied with an invalid event, dropped: %s", exc)
        return None


def step_failed_event(
    trigger: Trigger, event: CloudEvent, result: Attempt, attempts: int, dead_letter_sink: str | None
) -> CloudEvent:
    """The ``dev.knflow.step.failed`` event reporting that ``event`` could not be delivered to ``trigger``."""
    data = {
        "event_id": event.get_id(),
        "event_type": event.get_type(),
        "trigger": trigger.name,
        "subscriber": trigger.subscriber,
        "status": result.status,
        "error": result.body.decode("utf-8", "replace") if result.body else result.error,
        "attempts": attempts,
        "dead_letter_sink": dead_letter_sink,
    }
    return new_event(STEP_FAILED, BROKER_SOURCE, data, cause=event, subject=trigger.name)
