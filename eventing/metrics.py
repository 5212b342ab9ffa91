"""The broker's metrics: events accepted (by type and source kind), and per trigger deliveries, retries, dead
letters, delivery time and lag (events in the log the trigger has not delivered yet)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence

from cloudevents.core.v1.event import CloudEvent
from prometheus_client.core import Metric

from infra.metrics import Tally, Timing, gauge

#: Distinct (type, source kind) pairs counted apart; events are client input, so the rest count as ``other``.
MAX_ACCEPTED_SERIES = 1000
OTHER = ("other", "other")


@functools.lru_cache(maxsize=4096)
def source_kind(source: str) -> str:
    """The part of a CloudEvents ``source`` that names its kind, not its instance: ``knflow/ping/nightly`` ->
    ``knflow/ping``, ``/functions/train`` -> ``functions/train``, ``https://host/a/b`` -> ``host/a``."""
    path = source.split("://", 1)[-1].strip("/")
    return "/".join(path.split("/")[:2])[:100]


class BrokerMetrics:
    """Counts kept by the broker's ingress and its deliverer; ``families`` adds each trigger's lag at scrape time."""

    def __init__(self) -> None:
        self.accepted = Tally("knflow_broker_events_accepted_total", "events stored in the log", ("type", "source"))
        self.delivered = Tally("knflow_broker_deliveries_total", "events delivered (2xx)", ("trigger",))
        self.retried = Tally("knflow_broker_retries_total", "delivery attempts after the first", ("trigger",))
        self.dead = Tally(
            "knflow_broker_dead_letters_total",
            "events whose retries were spent (dead-letter sink, step.failed)",
            ("trigger",),
        )
        self.duration = Timing(
            "knflow_broker_delivery_duration_seconds", "time to deliver an event, retries included", ("trigger",)
        )

    def accept(self, events: Sequence[CloudEvent]) -> None:
        values = self.accepted.values
        for event in events:
            key = (event.get_type(), source_kind(event.get_source()))
            if key not in values and len(values) >= MAX_ACCEPTED_SERIES:
                key = OTHER  # a client inventing types must not grow the broker's memory and every scrape
            values[key] += 1

    def delivery(self, trigger: str, ok: bool, attempts: int, seconds: float) -> None:
        """One event's delivery to ``trigger``: delivered or dead-lettered after ``attempts`` attempts."""
        key = (trigger,)
        (self.delivered if ok else self.dead).values[key] += 1
        if attempts > 1:
            self.retried.values[key] += attempts - 1
        self.duration.add(key, seconds)

    def families(self, lags: Mapping[str, int], triggers: Iterable[str]) -> list[Metric]:
        """Every family; ``lags``: events not delivered yet per trigger, ``triggers``: every trigger's name."""
        known = {(name,): 0 for name in triggers}
        for tally in (self.delivered, self.retried, self.dead):  # a trigger shows 0 before its first delivery
            for key in known:
                tally.values.setdefault(key, 0)
        lag = gauge(
            "knflow_broker_trigger_lag",
            "events in the log not yet delivered",
            ("trigger",),
            known | {(name,): n for name, n in lags.items()},
        )
        return [self.accepted.family(), self.delivered.family(), self.retried.family(), self.dead.family(),
                self.duration.family(), lag]  # fmt: skip
