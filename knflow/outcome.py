"""What a run did, read from its events, and the one way to follow a run until it is deployed, not deployed or failed.

``follow`` reads pages of a run's events from any history (the broker's ``GET /events``, the knflow server's
``GET /api/runs/{runid}/events``); deploy answers no event when its policy keeps the production version, so
after ``model.registered`` a ``declined`` lookup (the registry's audit trail) tells that, else the follower
gives deploy ``DEPLOY_GRACE_S``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from eventing.events import STEP_FAILED
from functions.contract import (
    DATA_ARRIVED,
    DATASET_INGESTED,
    FEATURES_READY,
    MODEL_DEPLOYED,
    MODEL_REGISTERED,
    MODEL_TRAINED,
    TRIAL_REQUESTED,
    TUNE_COMPLETED,
)
from infra.errors import Unavailable
from knflow.follow import SeenEvent

RUNNING, DEPLOYED, NOT_DEPLOYED, FAILED = "running", "deployed", "not-deployed", "failed"

#: After model.registered, how long to wait for model.deployed before taking it that the deployment
#: policy chose not to deploy (deploy then answers no event).
DEPLOY_GRACE_S = 30.0

#: One page of a run's events after a cursor, waiting up to some seconds: (events, next cursor).
Pages = Callable[[str | None, float], tuple[list[SeenEvent], str | None]]


def is_fatal(event: SeenEvent) -> bool:
    """A failure that ends the run: a step.failed (except a trial's, which tune absorbs) or a failed training."""
    data = event.data if isinstance(event.data, dict) else {}
    if event.type == STEP_FAILED:
        return data.get("event_type") != TRIAL_REQUESTED
    return event.type == MODEL_TRAINED and data.get("status") == "Failed" and not data.get("trial")


@dataclass
class RunOutcome:
    """What a run did, read from its events."""

    runid: str
    key: str
    events: list[SeenEvent] = field(default_factory=list)
    declined: str | None = None  # why deploy kept the production version, when it did
    gave_up: bool = False  # registered, but no model.deployed came within the grace

    def last(self, type_: str) -> SeenEvent | None:
        return next((e for e in reversed(self.events) if e.type == type_), None)

    def data(self, type_: str) -> dict[str, Any] | None:
        """The data of the last event of ``type_``, if there was one."""
        event = self.last(type_)
        return event.data if event else None

    @property
    def failure(self) -> SeenEvent | None:
        """The fatal failure that ended the run, if one did."""
        return next((e for e in reversed(self.events) if is_fatal(e)), None)

    @property
    def failure_reason(self) -> str | None:
        failure = self.failure
        if failure is None:
            return None
        data = failure.data if isinstance(failure.data, dict) else {}
        return f"{data.get('trigger') or failure.type}: {data.get('error') or data.get('reason')}"

    @property
    def deployed(self) -> dict[str, Any] | None:
        return self.data(MODEL_DEPLOYED)

    @property
    def registered(self) -> dict[str, Any] | None:
        return self.data(MODEL_REGISTERED)

    @property
    def tuning(self) -> dict[str, Any] | None:
        return self.data(TUNE_COMPLETED)

    @property
    def features(self) -> dict[str, Any] | None:
        return self.data(FEATURES_READY)

    @property
    def status(self) -> str:
        """``deployed``, ``not-deployed`` (registered, kept out of production), ``failed`` or ``running``."""
        if self.failure:
            return FAILED
        if self.deployed:
            return DEPLOYED
        if self.registered and (self.declined or self.gave_up):
            return NOT_DEPLOYED
        return RUNNING

    @property
    def model(self) -> str | None:
        """The registered (and maybe deployed) model's name."""
        return (self.deployed or self.registered or {}).get("name")

    @property
    def version(self) -> int | None:
        return (self.deployed or self.registered or {}).get("version")

    @property
    def endpoint(self) -> str | None:
        """The V2 inference URL of the deployed model (None unless deployed)."""
        return (self.deployed or {}).get("endpoint")

    def summary(self) -> dict[str, Any]:
        """The outcome as JSON: status, model, version, endpoint and the reason when not deployed or failed."""
        reason = self.failure_reason or self.declined or ("no model.deployed event came" if self.gave_up else None)
        return {
            "runid": self.runid,
            "key": self.key,
            "status": self.status,
            "model": self.model,
            "version": self.version,
            "endpoint": self.endpoint,
            "reason": reason,
            "events": len(self.events),
        }

    def phases(self) -> list[tuple[str, float]]:
        """(step, seconds) between the milestones of the run, in order."""
        marks = [
            ("arrived", DATA_ARRIVED),
            ("ingest", DATASET_INGESTED),
            ("featurize", FEATURES_READY),
            ("train + tune", None),
            ("register", MODEL_REGISTERED),
            ("deploy", MODEL_DEPLOYED),
        ]
        trained = self.last(TUNE_COMPLETED) or self.last(MODEL_TRAINED)
        times: list[tuple[str, float]] = []
        for step, type_ in marks:
            event = trained if type_ is None else next((e for e in self.events if e.type == type_), None)
            if event is not None and event.time is not None:  # the platform's own events always carry a time
                times.append((step, event.time.timestamp()))
        return [(step, t - times[i][1]) for i, (step, t) in enumerate(times[1:])]


def follow(
    pages: Pages, outcome: RunOutcome, *, timeout: float, declined: Callable[[dict[str, Any]], str | None]
) -> Iterator[SeenEvent]:
    """Yield the run's events as they come (recording them in ``outcome``) until it is deployed, failed or not
    deployed; ``Unavailable`` when it has not even registered a model within ``timeout`` seconds."""
    deadline, after = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        events, after = pages(after, min(2.0, max(0.1, deadline - time.monotonic())))
        for event in events:
            outcome.events.append(event)
            yield event
            if event.type == MODEL_REGISTERED:
                deadline = min(deadline, time.monotonic() + DEPLOY_GRACE_S)
        if outcome.status != RUNNING:
            return
        if outcome.registered:
            outcome.declined = declined(outcome.registered)
            if outcome.declined:
                return
    if outcome.registered is None:
        raise Unavailable(f"run {outcome.runid} did not finish within {timeout:.0f}s")
    outcome.gave_up = True
