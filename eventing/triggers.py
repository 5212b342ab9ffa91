"""Trigger and delivery configuration in Knative's shape: ``Trigger``, ``DeliverySpec`` and their JSON form.

``Trigger.from_spec(name, body)`` reads Knative's Trigger ``spec`` JSON
(``{"filter": {"attributes": {...}}, "filters": [...], "subscriber": {"uri": ...}, "delivery": {...}}``),
bare or as a resource (``{"metadata": {"annotations": {...}}, "spec": {...}}``); ``to_spec()`` and
``to_resource()`` write them back, so the same triggers map one-to-one onto a Knative broker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from eventing.events import NAMESPACE
from infra.durations import format_duration, parse_duration
from infra.errors import InvalidRequest
from infra.namespaces import DEFAULT

EXPONENTIAL = "exponential"
LINEAR = "linear"


def _format(seconds: float | str | None) -> str | None:
    """A duration field in Knative's form (a number once ``DeliverySpec.__post_init__`` parsed it)."""
    return None if seconds is None else format_duration(float(seconds))


@dataclass(frozen=True)
class DeliverySpec:
    """Knative's delivery spec: retries, backoff, per-attempt timeout, dead-letter sink, Retry-After cap."""

    retry: int = 0
    backoff_policy: str = EXPONENTIAL
    backoff_delay: float | str = 0.2
    timeout: float | str | None = None
    dead_letter_sink: str | None = None
    retry_after_max: float | str | None = None

    def __post_init__(self) -> None:
        if self.retry < 0:
            raise InvalidRequest(f"delivery.retry must not be negative, got {self.retry}")
        if self.backoff_policy not in (EXPONENTIAL, LINEAR):
            raise InvalidRequest(f"delivery.backoffPolicy must be exponential or linear, got {self.backoff_policy!r}")
        for name in ("backoff_delay", "timeout", "retry_after_max"):
            object.__setattr__(self, name, parse_duration(getattr(self, name)))

    def backoff(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (0 = first retry, which waits backoffDelay)."""
        delay = float(self.backoff_delay or 0.0)
        if self.backoff_policy == LINEAR:
            return delay * (retry_number + 1)
        return delay * (2**retry_number)

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> DeliverySpec | None:
        """Parse Knative's ``delivery`` object."""
        if not spec:
            return None
        if not isinstance(spec, dict):
            raise InvalidRequest("delivery must be an object")
        sink = spec.get("deadLetterSink")
        return cls(
            retry=int(spec.get("retry", 0)),
            backoff_policy=spec.get("backoffPolicy", EXPONENTIAL),
            backoff_delay=spec.get("backoffDelay", 0.2),
            timeout=spec.get("timeout"),
            dead_letter_sink=_uri(sink, "delivery.deadLetterSink") if sink else None,
            retry_after_max=spec.get("retryAfterMax"),
        )

    def to_spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "retry": self.retry,
            "backoffPolicy": self.backoff_policy,
            "backoffDelay": _format(self.backoff_delay),
        }
        if self.timeout is not None:
            out["timeout"] = _format(self.timeout)
        if self.dead_letter_sink:
            out["deadLetterSink"] = {"uri": self.dead_letter_sink}
        if self.retry_after_max is not None:
            out["retryAfterMax"] = _format(self.retry_after_max)
        return out


def _uri(ref: Any, where: str) -> str:
    if isinstance(ref, str):
        return ref
    if isinstance(ref, dict) and isinstance(ref.get("uri"), str) and ref["uri"]:
        return ref["uri"]
    raise InvalidRequest(f"{where} must be {{'uri': 'http://...'}}")


#: Where a new trigger's consumer group starts: ``latest`` (Knative's default: events accepted after the
#: trigger was created) or ``earliest`` (everything the log still holds). Set per trigger by this annotation.
INITIAL_OFFSET_ANNOTATION = "kafka.eventing.knative.dev/initial.offset"
LATEST = "latest"
EARLIEST = "earliest"

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Trigger:
    """A subscription: events matching the filters are delivered to ``subscriber`` per ``delivery``."""

    name: str
    subscriber: str
    filter: dict[str, str] | None = None
    filters: list[dict[str, Any]] | None = field(default=None, hash=False)
    delivery: DeliverySpec | None = None
    initial_offset: str = LATEST

    def __post_init__(self) -> None:
        if self.initial_offset not in (LATEST, EARLIEST):
            raise InvalidRequest(
                f"trigger {self.name}: {INITIAL_OFFSET_ANNOTATION} must be {LATEST} or {EARLIEST}, "
                f"got {self.initial_offset!r}"
            )
        if not _NAME.match(self.name):
            raise InvalidRequest(f"trigger name {self.name!r} must be a DNS label (lowercase letters, digits, '-')")
        if not self.subscriber.startswith(("http://", "https://")):
            raise InvalidRequest(f"trigger {self.name}: subscriber {self.subscriber!r} must be an http(s) URL")
        from eventing.filters import validate_filters

        if self.filters:
            validate_filters(self.filters)

    @property
    def namespace(self) -> str:
        """The namespace whose events the trigger is limited to (``filters`` win, as in matching); ``default`` for
        one that takes every namespace's (the platform's own and ``default``'s shared pipelines)."""
        if self.filters:
            exact = [e["exact"].get(NAMESPACE) for e in self.filters if isinstance(e.get("exact"), dict)]
            return next((str(ns) for ns in exact if ns), DEFAULT)
        return (self.filter or {}).get(NAMESPACE) or DEFAULT

    @classmethod
    def from_spec(cls, name: str, body: dict[str, Any]) -> Trigger:
        """Parse Knative's Trigger ``spec`` JSON, bare or inside a resource with ``metadata.annotations``."""
        if not isinstance(body, dict):
            raise InvalidRequest("trigger spec must be a JSON object")
        spec = body.get("spec", body)
        if not isinstance(spec, dict):
            raise InvalidRequest("trigger spec must be a JSON object")
        attrs = (spec.get("filter") or {}).get("attributes")
        if attrs is not None and not (isinstance(attrs, dict) and all(isinstance(v, str) for v in attrs.values())):
            raise InvalidRequest("filter.attributes must map attribute names to strings")
        filters = spec.get("filters")
        if filters is not None and not isinstance(filters, list):
            raise InvalidRequest("filters must be a list of filter expressions")
        return cls(
            name=name,
            subscriber=_uri(spec.get("subscriber"), "subscriber"),
            filter=dict(attrs) if attrs else None,
            filters=filters or None,
            delivery=DeliverySpec.from_spec(spec.get("delivery")),
            initial_offset=_annotations(body).get(INITIAL_OFFSET_ANNOTATION, LATEST),
        )

    def to_spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"subscriber": {"uri": self.subscriber}}
        if self.filter:
            out["filter"] = {"attributes": dict(self.filter)}
        if self.filters:
            out["filters"] = list(self.filters)
        if self.delivery:
            out["delivery"] = self.delivery.to_spec()
        return out

    def to_resource(self) -> dict[str, Any]:
        """``{"spec": ...}`` with ``metadata.annotations`` when the trigger has any (the initial offset)."""
        out: dict[str, Any] = {"spec": self.to_spec()}
        if self.initial_offset != LATEST:
            out["metadata"] = {"annotations": {INITIAL_OFFSET_ANNOTATION: self.initial_offset}}
        return out


def _annotations(body: dict[str, Any]) -> dict[str, Any]:
    metadata = body.get("metadata") or {}
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if annotations is None:
        return {}
    if not isinstance(annotations, dict):
        raise InvalidRequest("metadata.annotations must be an object")
    return annotations
