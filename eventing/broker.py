"""The broker server: CloudEvents ingress, triggers, delivery and event history over one event log.

Run it as its own process with ``python -m eventing.broker`` (or ``knflow broker``): it reads
``load_settings()`` and listens on ``settings.host:settings.broker_port``. In-process (tests)::

    async with BrokerServer(settings, [Trigger("ingest", "http://127.0.0.1:9000/")]) as broker:
        broker.url  # http://127.0.0.1:PORT

HTTP API:
  ``POST /`` and ``POST /{namespace}/{broker}``  a CloudEvent (binary or structured), or a batch of them
      (``application/cloudevents-batch+json``, stored together): 202 once durably stored, 400 with the reason for
      an invalid event (a batch with one is refused whole), 413 above ``eventing.max_event_bytes`` (the request).
  ``GET /triggers``, ``PUT /triggers/{name}`` (Knative Trigger spec JSON, bare or as a resource with
      ``metadata.annotations``), ``DELETE /triggers/{name}``; triggers are persisted (``triggers.json`` in
      the embedded log's directory, else in data_dir). A PUT answers once the trigger's start position is
      recorded: 200 when its consumer group has also joined, 202 when it is still joining.
  ``GET /events?runid=R&type=T&after=CURSOR&limit=N&wait=SECONDS``  history for watchers:
      ``{"events": [structured CloudEvent JSON + "cursor"], "next": CURSOR}`` (long-polls with ``wait``).
  ``GET /health``  200 when every trigger is ready (joined and positioned), else 503 naming those pending.
Sources (``eventing.sources``) add their own endpoints under ``/sources/``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from cloudevents.core.v1.event import CloudEvent
from prometheus_client.core import Metric

from eventing.bindings import BATCH_CONTENT_TYPE, to_json
from eventing.delivery import Deliverer
from eventing.dispatcher import Dispatcher
from eventing.eventlog import EventLog, open_event_log
from eventing.events import namespace_of
from eventing.ingress import Answer, IngressServer
from eventing.metrics import BrokerMetrics
from eventing.registry import TriggerFile, state_dir
from eventing.triggers import Trigger
from eventing.wire import from_batch, from_http
from infra import tracing
from infra.auth import own_credentials
from infra.errors import InvalidRequest, KnflowError, NotFound
from infra.guard import access, guard_for, scope_of_headers, server_middlewares
from infra.http import answer_expect, error_answer, read_body, read_json
from infra.metrics import metrics_handler, registry_of
from infra.namespaces import ALL, DEFAULT, Scope, scope_of
from infra.outbound import Outbound
from infra.serve import run_server, serve_until_signalled
from infra.settings import Settings

log = logging.getLogger(__name__)


class BrokerServer:
    """The broker as an async context manager; ``url`` is its ingress once started."""

    def __init__(
        self,
        settings: Settings,
        triggers: Iterable[Trigger] = (),
        *,
        sources: Sequence[Any] | None = None,
        port: int | None = None,
        event_log: EventLog | None = None,
    ):
        self.settings = settings
        self.log = event_log or open_event_log(settings)
        self.port = settings.broker_port if port is None else port
        self.trigger_file = TriggerFile(state_dir(settings) / "triggers.json")
        self.outbound = Outbound(settings)
        self._initial = list(triggers)
        self._sources = sources
        self._dispatchers: dict[str, Dispatcher] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._runner: web.AppRunner | None = None
        self._ingress_server: IngressServer | None = None
        self._session: aiohttp.ClientSession | None = None
        self.metrics = BrokerMetrics()
        self._guard = guard_for(settings)
        self._open_ingress = self._guard.open_ingress or self._guard.open_all
        self.metrics_registry = registry_of(self._metric_families)
        self.url = ""

    @property
    def triggers(self) -> dict[str, Trigger]:
        """The triggers being delivered, by name."""
        return {name: d.trigger for name, d in self._dispatchers.items()}

    def pending(self) -> list[str]:
        """Names of the triggers whose consumer group has not joined yet."""
        return sorted(name for name, d in self._dispatchers.items() if not d.ready)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every trigger is ready; whether they are."""
        ready = await asyncio.gather(*(d.wait_ready(timeout) for d in list(self._dispatchers.values())))
        return all(ready)

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> BrokerServer:
        await self.log.start()
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=512)
        self._session = aiohttp.ClientSession(connector=connector)
        self.deliverer = Deliverer(
            self._session,
            self.publish,
            self.settings.eventing.delivery_timeout_s,
            own_credentials(self.settings),
            self.metrics,
        )
        persisted = self.trigger_file.load()
        for trigger in self._initial:
            persisted[trigger.name] = trigger
        await asyncio.gather(*(self._run_trigger(t) for t in persisted.values()))
        self.trigger_file.save(self.triggers)
        app = web.Application(
            middlewares=server_middlewares(self.settings),
            client_max_size=self.settings.eventing.max_event_bytes + 1024 * 1024,
        )
        app.add_routes(self._routes())
        if self._sources is None:
            from eventing.sources import default_sources

            self._sources = default_sources(self.settings)
        for source in self._sources:
            app.add_routes(source.routes())
        self._runner = web.AppRunner(answer_expect(app), access_log=None)
        await self._runner.setup()
        assert self._runner.server is not None
        limit = self.settings.eventing.max_event_bytes
        taken = {r.canonical.split("/")[1] for r in app.router.resources() if r.canonical not in INGRESS_PATHS}
        is_ingress = functools.partial(is_ingress_path, taken=frozenset(taken))
        self._ingress_server = IngressServer(self._accept, is_ingress, self._runner.server, limit, self._guard)
        self.port = await self._ingress_server.start(self.settings.host, self.port)
        self.url = self.settings.url(self.port)
        for source in self._sources:
            await source.start(self.publish)
        log.info(
            "broker listening on %s over %s with %d trigger(s)", self.url, self.settings.broker.url, len(self.triggers)
        )
        return self

    async def stop(self) -> None:
        for source in self._sources or ():
            await source.stop()
        if self._ingress_server is not None:
            await self._ingress_server.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._ingress_server is not None:
            await self._ingress_server.wait_closed()
        for dispatcher in list(self._dispatchers.values()):
            await dispatcher.stop()
        self._dispatchers.clear()
        if self._session is not None:
            await self.deliverer.client.close()
            await self._session.close()
        await self.log.close()

    async def __aenter__(self) -> BrokerServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the broker's operations ----------------------------------------------
    async def publish(self, event: CloudEvent) -> None:
        """Put an event into the broker (durable when this returns)."""
        await self.append([event])

    async def append(self, events: list[CloudEvent]) -> None:
        """Store events in the log (durable when this returns) and count them."""
        await self.log.append(events)
        self.metrics.accept(events)

    def _owner_of_series(self, labels: Mapping[str, str]) -> str | None:
        """The namespace of a trigger's series (a trigger gone since: the platform's, ``*``); None for the rest."""
        if "trigger" not in labels:
            return None
        dispatcher = self._dispatchers.get(labels["trigger"])
        return dispatcher.trigger.namespace if dispatcher else ALL

    def _metric_families(self) -> list[Metric]:
        lags = {name: d.consumer.lag() for name, d in self._dispatchers.items()}
        return self.metrics.families(lags, self._dispatchers) + tracing.metric_families()

    async def set_trigger(self, trigger: Trigger, ready_timeout: float = 0.0) -> bool:
        """Add or replace a trigger at runtime (persisted); putting the same trigger again changes nothing.

        Returns once the trigger's start position is recorded (every event accepted afterwards reaches
        it), after waiting up to ``ready_timeout`` seconds for its group to join; whether it has. Triggers
        of different names are set in parallel. Replacing a trigger stops its dispatcher, which waits for
        the deliveries in flight; an unchanged trigger must not wait for them (a long training step would
        hold the caller).
        """
        async with self._locks.setdefault(trigger.name, asyncio.Lock()):
            running = self._dispatchers.get(trigger.name)
            if running is None or running.trigger != trigger:
                old = self._dispatchers.pop(trigger.name, None)
                if old is not None:
                    await old.stop()
                await self._run_trigger(trigger)
                self.trigger_file.save(self.triggers)
            dispatcher = self._dispatchers[trigger.name]
        return await dispatcher.wait_ready(ready_timeout)

    async def remove_trigger(self, name: str) -> None:
        """Remove a trigger and forget its offsets."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            dispatcher = self._dispatchers.pop(name, None)
            if dispatcher is None:
                raise NotFound(f"no trigger named {name!r}")
            await dispatcher.stop()
            self.trigger_file.save(self.triggers)
            await self.log.drop_group(name)

    async def _run_trigger(self, trigger: Trigger) -> None:
        dispatcher = Dispatcher(trigger, self.log.consumer(trigger.name, trigger.initial_offset), self.deliverer)
        await dispatcher.start()
        self._dispatchers[trigger.name] = dispatcher

    # -- HTTP ------------------------------------------------------------------
    def _routes(self) -> list[web.RouteDef]:
        return [
            *(web.post(path, self._ingress) for path in INGRESS_PATHS),
            web.get("/health", self._health),
            web.get("/triggers", self._list_triggers),
            web.put("/triggers/{name}", self._put_trigger),
            web.delete("/triggers/{name}", self._delete_trigger),
            web.get("/events", self._events),
            web.get("/metrics", metrics_handler(self.metrics_registry, "viewer", self._owner_of_series)),
        ]

    async def _accept(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """The fast ingress path (``eventing.ingress``): status and JSON body for one POSTed event."""
        try:
            events = events_of(headers, body)
            claims_only(events, lambda: scope_of_headers(self._guard, headers.get), self._open_ingress)
            await self.append(events)
        except KnflowError as exc:
            return Answer(*error_answer(exc))
        return Answer(202)

    @access("ingress")
    async def _ingress(self, request: web.Request) -> web.Response:
        """What ``_accept`` does, on aiohttp (its errors answered by the error middleware, through the same table)."""
        events = events_of(request.headers, await read_body(request, self.settings.eventing.max_event_bytes, "event"))
        claims_only(events, lambda: scope_of(request), self._open_ingress)
        await self.append(events)
        return web.Response(status=202)

    @access("open")
    async def _health(self, request: web.Request) -> web.Response:
        pending = self.pending()
        body: dict[str, Any] = {"status": "starting" if pending else "ok", "broker": self.settings.broker.url}
        body |= {"triggers": len(self._dispatchers), "ready": len(self._dispatchers) - len(pending)}
        if pending:  # the names of the caller's own namespaces' triggers only (the count is everyone's)
            scope = scope_of(request)
            body["pending"] = [n for n in pending if scope.sees(self._dispatchers[n].trigger.namespace)]
        return web.json_response(body, status=503 if pending else 200)

    @access("viewer")
    async def _list_triggers(self, request: web.Request) -> web.Response:
        scope = scope_of(request)  # a team sees its own namespaces' triggers only
        items = [
            {"name": name, **d.trigger.to_resource(), "ready": d.ready}
            for name, d in sorted(self._dispatchers.items())
            if scope.sees(d.trigger.namespace)
        ]
        return web.json_response({"items": items})

    @access("platform")
    async def _put_trigger(self, request: web.Request) -> web.Response:
        spec = await read_json(request, self.settings.eventing.max_event_bytes, "trigger spec")
        trigger = Trigger.from_spec(request.match_info["name"], spec)
        await self.outbound.check(trigger.subscriber, f"trigger {trigger.name}: subscriber")
        if trigger.delivery and trigger.delivery.dead_letter_sink:
            await self.outbound.check(trigger.delivery.dead_letter_sink, f"trigger {trigger.name}: dead-letter sink")
        ready = await self.set_trigger(trigger, self.settings.eventing.trigger_ready_timeout_s)
        body = {"name": trigger.name, **trigger.to_resource(), "ready": ready}
        return web.json_response(body, status=200 if ready else 202)

    @access("platform")
    async def _delete_trigger(self, request: web.Request) -> web.Response:
        await self.remove_trigger(request.match_info["name"])
        return web.Response(status=204)

    @access("viewer")
    async def _events(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit, wait = int(query.get("limit", "100")), float(query.get("wait", "0"))
        except ValueError:
            raise InvalidRequest("limit and wait must be numbers") from None
        if not 1 <= limit <= 1000 or not 0 <= wait <= 60:
            raise InvalidRequest("limit must be 1..1000 and wait 0..60 seconds")
        history = functools.partial(
            self.log.history, after=query.get("after"), limit=limit, runid=query.get("runid"), type=query.get("type")
        )
        events, cursor = await history()
        deadline = asyncio.get_running_loop().time() + wait
        while not events and (left := deadline - asyncio.get_running_loop().time()) > 0:
            await self.log.wait_for_append(left)
            events, cursor = await history()
        scope = scope_of(request)  # a team's token reads its own namespaces' events only
        if ALL not in scope.namespaces:
            events = [(c, e) for c, e in events if scope.sees(namespace_of(e))]
        out = [b'{"cursor":' + orjson.dumps(c) + b"," + to_json(e)[1:] for c, e in events]
        body = b'{"events":[' + b",".join(out) + b'],"next":' + orjson.dumps(cursor) + b"}"
        return web.Response(body=body, content_type="application/json")


INGRESS_PATHS = ("/", "/{namespace}/{broker}")


def claims_only(events: Sequence[CloudEvent], scope: Callable[[], Scope], open_ingress: bool) -> None:
    """``NotFound`` unless every event belongs to a namespace the caller acts for. Open ingress takes ``default``'s
    from anyone; another namespace's need a token that has it (``scope`` is read only then), so a local process
    cannot start a run, or feed a step, of a team it does not belong to."""
    claimed = {namespace_of(e) for e in events} - ({DEFAULT} if open_ingress else set())
    if claimed and (outside := sorted(ns for ns in claimed if not scope().sees(ns))):
        raise NotFound(f"no namespace {outside[0]!r}")


def events_of(headers: Mapping[str, str], body: bytes) -> list[CloudEvent]:
    """The events of one ingress POST: a batch (``application/cloudevents-batch+json``) or one event."""
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if content_type.lower().startswith(BATCH_CONTENT_TYPE):
        return from_batch(body)
    return [from_http(headers, body)]


def is_ingress_path(path: str, taken: frozenset[str]) -> bool:
    """``/`` or ``/{namespace}/{broker}`` where no other route starts with that namespace (``/sources/...``)."""
    if path == "/":
        return True
    parts = path.split("/")
    return len(parts) == 3 and parts[1] != "" and parts[2] != "" and parts[1] not in taken


async def serve_until_signal(settings: Settings) -> bool:
    """Run the broker until SIGINT or SIGTERM, then stop it cleanly (commits flushed); whether it stopped in time."""
    broker = BrokerServer(settings)
    return await serve_until_signalled(broker.start, broker.stop, name="broker")


def main() -> int:
    """``python -m eventing.broker``."""
    from infra.settings import load_settings

    settings = load_settings()
    return run_server(lambda: serve_until_signal(settings), settings, service="broker")


if __name__ == "__main__":
    sys.exit(main())
