"""MinIO arrivals on Knative: a KafkaSource's ``dev.knative.kafka.event`` holding a MinIO bucket notification becomes
the lifecycle's ``data.arrived`` of each object it announces, emitted into the broker.

A KafkaSource cannot do this alone: its events are always of type ``dev.knative.kafka.event`` (``ceOverrides`` may
only add extensions; a CloudEvents attribute such as ``type`` is refused as an extension name), and its data is
MinIO's document as it is — URL-encoded keys, any event name, objects that are not data. This function parses it
with the local broker's code (``eventing.sources.minio.notification_events``, the lifecycle's arrival settings),
so the same objects start runs, with the same event ids, on a laptop and on a cluster. The KafkaSource's
``pipeline`` extension (its ``ceOverrides``) names the pipeline the runs take, else ``eventing.arrival_pipeline``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from cloudevents.core.v1.event import CloudEvent

from eventing.events import PIPELINE
from eventing.sources.minio import notification_events
from functions.contract import with_lifecycle
from infra.errors import InvalidRequest

SOURCE = "/knflow/functions/minio"


def notification(event: CloudEvent) -> Any:
    """The MinIO document an event carries (a Kafka record's value: JSON bytes or already decoded)."""
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise InvalidRequest(f"event {event.get_id()}: its data is not JSON, so not a MinIO notification") from None
    return data


async def handle(event: CloudEvent, ctx: Any) -> None:
    """Emit the ``data.arrived`` of each object the notification announces (none for other records)."""
    settings = with_lifecycle(ctx.settings)
    pipeline = event.get_extension(PIPELINE)
    if pipeline:
        settings = settings.replace(eventing=dataclasses.replace(settings.eventing, arrival_pipeline=str(pipeline)))
    arrivals = notification_events(notification(event), settings)
    for arrival in arrivals:
        await ctx.emit(arrival)
    ctx.log.info("minio: %d arrival(s) from %s", len(arrivals), event.get_source())
    return None
