"""What a knflow function's ``handle(event, ctx)`` gets besides the event: store, settings, logger, fan-out.

Contract (stable; user functions rely on it, see docs/functions.md)::

    async def handle(event: CloudEvent, ctx: Context) -> CloudEvent | None
    def handle(event: CloudEvent, ctx: Context) -> CloudEvent | None   # sync: runs in a thread executor

A function in Knative's shape (``handle(scope, receive, send)``) finds the same context in ``scope["knflow"]``;
``context_of(scope)`` returns it typed.

``ctx.store`` is the artifact store (opened on first use), ``ctx.settings`` the host's settings,
``ctx.step_settings`` the settings a pipeline step gave this function (``settings:`` in the spec, ``{}`` when
none),
``ctx.log`` a logger whose records carry the event's ``runid``, ``ctx.function`` the function's
name, and ``await ctx.emit(event)`` posts an extra event to the broker ingress (``K_SINK`` when
set at start, as a Knative SinkBinding provides, else ``Settings.url(broker_port)``), retrying a
refusal or an unreachable broker with backoff before failing the event. A sync
handler running in the executor uses ``ctx.emit_sync(event)`` instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from eventing.bindings import to_http_binary
from eventing.events import RUNID, namespace_of
from infra.asyncclient import AsyncClient
from infra.auth import auth_headers
from infra.errors import ConfigError, InvalidRequest, Unavailable
from infra.httpclient import error_from_answer
from infra.namespaces import scoped
from infra.settings import Settings
from infra.store import ArtifactStore, open_store

#: A pipeline step's settings, as JSON, in the environment of the function hosting it (``ctx.step_settings``).
SETTINGS_ENV = "KNFLOW_STEP_SETTINGS"
#: Where a Knative-shaped function finds its ``Context`` in the ASGI scope.
SCOPE_KEY = "knflow"
#: Waits between attempts of ``emit`` (5 attempts over ~3 s: a broker restarting or busy joining is back by then).
EMIT_BACKOFF_S = (0.1, 0.3, 0.9, 2.0)


class Runtime:
    """Per-process state shared by every event's context: settings, the store, the emit client."""

    def __init__(
        self, function: str, settings: Settings, sink: str | None = None, step_settings: Mapping[str, Any] | None = None
    ):
        self.function = function
        self.settings = settings
        self.step_settings: dict[str, Any] = dict(step_settings or {})
        self.sink = sink or settings.url(settings.broker_port, "/")
        self.logger = logging.getLogger(f"functions.{function}")
        self.loop: asyncio.AbstractEventLoop | None = None
        self._store: ArtifactStore | None = None
        self._client: AsyncClient | None = None  # made on the first emit

    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            self._store = open_store(self.settings.artifacts)
        return self._store

    async def emit(self, event: CloudEvent) -> None:
        """POST ``event`` in binary mode to the sink, retrying refusals (5xx, 429, network) with backoff
        (``EMIT_BACKOFF_S``); when every attempt failed, ``Unavailable`` (retryable: the event is redelivered)."""
        if self._client is None:
            self._client = AsyncClient(timeout=30.0, headers=auth_headers(self.settings), name="sink")
        headers, body = to_http_binary(event)
        for attempt, delay in enumerate((*EMIT_BACKOFF_S, None)):
            try:
                answer = await self._client.send("POST", self.sink, body, headers=headers)
                if answer.status < 300:
                    return
                refused = f"sink {self.sink} refused event {event.get_id()} ({answer.status})"
                error = error_from_answer(refused, answer.status, answer.data)
                if not error.retryable:  # the event itself is wrong: retrying will not help
                    raise InvalidRequest(error.message)
                error = Unavailable(error.message)
            except Unavailable as unreachable:
                error = unreachable
            if delay is None:
                raise error
            self.logger.warning("emit of %s failed (attempt %d): %s", event.get_id(), attempt + 1, error)
            await asyncio.sleep(delay)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class Context:
    """One event's view of the runtime; cheap to make (slots, logger adapter bound to the runid)."""

    __slots__ = ("_log", "_runtime", "event")

    def __init__(self, runtime: Runtime, event: CloudEvent | None):
        self._runtime = runtime
        #: The event being handled (None for a Knative-shaped function invoked as plain HTTP).
        self.event: CloudEvent | None = event
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry this event's ``runid`` (made on first use)."""
        if self._log is None:
            runid = self.event.get_extension(RUNID) if self.event is not None else None
            self._log = logging.LoggerAdapter(self._runtime.logger, {RUNID: runid})
        return self._log

    @property
    def function(self) -> str:
        """The name this function is hosted under."""
        return self._runtime.function

    @property
    def settings(self) -> Settings:
        """The platform's settings (``infra.settings.Settings``), as the host loaded them."""
        return self._runtime.settings

    @property
    def store(self) -> ArtifactStore:
        """The artifact store (``infra.store.ArtifactStore``: get, put, list, exists, stat, delete, ...) as the event's
        namespace sees it: its keys are under the namespace's prefix (``infra.namespaces``), the same layout inside."""
        if self.event is None:
            return self._runtime.store
        return scoped(self._runtime.store, namespace_of(self.event))

    @property
    def step_settings(self) -> dict[str, Any]:
        """The settings of the pipeline step this function runs as (``settings:`` in the spec; ``{}`` when none)."""
        return self._runtime.step_settings

    async def emit(self, event: CloudEvent) -> None:
        """Send an extra event to the broker (fan-out); raises ``Unavailable`` if it is refused."""
        await self._runtime.emit(event)

    def emit_sync(self, event: CloudEvent, timeout: float = 30.0) -> None:
        """``emit`` from a sync handler running in the executor thread."""
        loop = self._runtime.loop
        if loop is None:
            raise RuntimeError("emit_sync needs the host's event loop")
        asyncio.run_coroutine_threadsafe(self._runtime.emit(event), loop).result(timeout)

    def __repr__(self) -> str:
        runid = self.event.get_extension(RUNID) if self.event is not None else None
        return f"Context(function={self.function!r}, runid={runid!r})"


def context_of(scope: Mapping[str, Any]) -> Context:
    """The knflow ``Context`` of a Knative-shaped function's request (``scope["knflow"]``)."""
    ctx = scope.get(SCOPE_KEY)
    if not isinstance(ctx, Context):
        raise ConfigError("this request has no knflow context: the function is not hosted by knflow's host")
    return ctx
