"""Schedules: re-run a pipeline on a data set's newest raw object on a cron, with events only.

A schedule ``{name, cron, dataset, pipeline, options}`` is kept in the artifact store at ``schedules/<name>.json``
under its namespace's prefix (``knflow manifests`` renders ``default``'s as Knative PingSources from there) and
applied to the broker as a ping source whose data is the schedule: named as the schedule, ``<ns>.<name>`` for a
namespace other than ``default``, whose pings carry the ``namespace`` extension, so the run starts there. The
``schedules`` trigger brings every ping to the built-in ``schedule`` function, which answers the ``data.arrived``
of the data set's newest raw object (in the ping's namespace) for the schedule's pipeline (``functions.schedule``).
Deleting a schedule deletes its ping source: the ticks stop at once.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pydantic

from eventing.events import NAMESPACE
from eventing.sources.ping import NAME, PING_TYPE, Cron
from eventing.triggers import DeliverySpec, Trigger
from functions.arrivals import raw_prefix, takes_arrivals
from functions.contract import LIFECYCLE
from functions.runoptions import parse_options
from infra.auth import auth_headers
from infra.errors import InvalidRequest, NotFound
from infra.httpclient import JsonClient
from infra.namespaces import DEFAULT, prefix
from infra.settings import Settings
from infra.store import ArtifactStore, open_store
from knflow.control import PipelineControl

log = logging.getLogger(__name__)
PREFIX = "schedules/"
SCHEDULE_FUNCTION = "schedule"
SCHEDULE_TRIGGER = "schedules"
#: A tick that fails (say, its data set has no data yet) is retried briefly, then reported as step.failed.
SCHEDULE_DELIVERY = DeliverySpec(retry=2, backoff_delay="PT0.5S", timeout="PT30S")


class Schedule(pydantic.BaseModel):
    """One schedule: which pipeline re-runs on which data set's newest raw object, on which cron."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: str = pydantic.Field(pattern=NAME.pattern)
    cron: Cron
    dataset: str = pydantic.Field(min_length=1, max_length=200)
    pipeline: str = LIFECYCLE
    options: dict[str, Any] | None = None

    @pydantic.field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        try:
            raw_prefix(value)
        except InvalidRequest as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def seconds_level(self) -> bool:
        """Whether the cron has a seconds field (runs locally only: Knative's PingSource takes five fields)."""
        return len(self.cron.split()) == 6

    def ping_data(self) -> dict[str, Any]:
        """The data of each ping: what the ``schedule`` function needs to start the run."""
        return {"schedule": self.name, "dataset": self.dataset, "pipeline": self.pipeline, "options": self.options}


def schedule_key(name: str, namespace: str = DEFAULT) -> str:
    return f"{prefix(namespace)}{PREFIX}{name}.json"


def source_name(name: str, namespace: str) -> str:
    """The broker's ping source of a namespace's schedule: ``<ns>.<name>`` outside ``default``."""
    return name if namespace == DEFAULT else f"{namespace}.{name}"


def schedule_trigger(subscriber: str) -> Trigger:
    """The one trigger that brings every ping to the ``schedule`` function."""
    return Trigger(SCHEDULE_TRIGGER, subscriber, filter={"type": PING_TYPE}, delivery=SCHEDULE_DELIVERY)


class ScheduleControl:
    """Adds, lists and deletes the schedules of one platform: stored specs and the broker's ping sources."""

    def __init__(
        self, settings: Settings, store: ArtifactStore | None = None, pipelines: PipelineControl | None = None
    ):
        self.settings = settings
        self._store = store
        self.pipelines = pipelines or PipelineControl(settings, store)
        self.broker = JsonClient(settings.url(settings.broker_port), timeout=120.0, headers=auth_headers(settings))

    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            self._store = open_store(self.settings.artifacts)
        return self._store

    def add(self, schedule: Schedule, namespace: str = DEFAULT) -> Schedule:
        """Check the schedule can start runs, put its ping source (and the trigger) on the broker, store it."""
        takes_arrivals(self.pipelines.resolve(schedule.pipeline, namespace))
        if schedule.options is not None:
            parse_options(schedule.options, f"schedule {schedule.name} options")
        trigger = schedule_trigger(f"{self.pipelines.functions_url}/functions/{SCHEDULE_FUNCTION}")
        self.broker.call("PUT", f"/triggers/{trigger.name}", trigger.to_spec())
        spec: dict[str, Any] = {"schedule": schedule.cron, "data": schedule.ping_data()}
        if namespace != DEFAULT:
            spec["ceOverrides"] = {"extensions": {NAMESPACE: namespace}}
        self.broker.call("PUT", f"/sources/ping/{source_name(schedule.name, namespace)}", spec)
        body = json.dumps(schedule.model_dump(), sort_keys=True).encode()
        self.store.put(schedule_key(schedule.name, namespace), body, content_type="application/json")
        log.info("schedule %s: %s on %s (%s)", schedule.name, schedule.pipeline, schedule.dataset, schedule.cron)
        return schedule

    def get(self, name: str, namespace: str = DEFAULT) -> Schedule:
        try:
            raw = self.store.get(schedule_key(name, namespace))
        except NotFound:
            raise NotFound(f"no schedule named {name!r}") from None
        return Schedule.model_validate_json(raw)

    def list(self, namespace: str = DEFAULT) -> list[Schedule]:
        """Every stored schedule of a namespace, by name."""
        where = schedule_key("", namespace).removesuffix(".json")
        names = [info.key[len(where) :].removesuffix(".json") for info in self.store.list(where)]
        return [self.get(name, namespace) for name in names if "/" not in name]

    def delete(self, name: str, namespace: str = DEFAULT) -> None:
        """Stop the schedule's ping source and forget it; ``NotFound`` if there is no such schedule."""
        stored = self.store.exists(schedule_key(name, namespace))
        try:
            self.broker.call("DELETE", f"/sources/ping/{source_name(name, namespace)}")
            running = True
        except NotFound:
            running = False
        if not (stored or running):
            raise NotFound(f"no schedule named {name!r}")
        self.store.delete(schedule_key(name, namespace))
        log.info("schedule %s deleted", name)
