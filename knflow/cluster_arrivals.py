"""MinIO's bucket notifications on a cluster: a KafkaSource on MinIO's Kafka notification topic, delivering to the
``minio`` function, which turns each notification into ``data.arrived`` events in the Broker (``functions/minio.py``).

A KafkaSource alone cannot: its events are ``dev.knative.kafka.event`` whatever the record holds, and
``ceOverrides`` only adds extensions. Here it adds the ``pipeline`` the runs take; delivery retries like the
Broker's, and a notification the function refuses ends at the dead-letter sink as ``step.failed``.
"""

from __future__ import annotations

from typing import Any

from eventing.events import PIPELINE
from infra import knative

MINIO_FUNCTION = "minio"
MINIO_SOURCE = "knflow-minio"
DELIVERY = {"retry": 3, "backoffPolicy": "exponential", "backoffDelay": "PT0.5S"}


def minio_source(
    ns: str, servers: list[str], topic: str, pipeline: str, service: str, dead_letter: dict[str, Any], labels=None
) -> dict[str, Any]:
    """The KafkaSource reading MinIO's notification ``topic`` on ``servers`` into the ``minio`` function's
    ``service``, its events carrying ``pipeline``."""
    sink = knative.ref(knative.SERVING, "Service", service)
    delivery = {**DELIVERY, "deadLetterSink": dead_letter}
    return knative.kafka_source(
        MINIO_SOURCE, ns, servers, [topic], sink, extensions={PIPELINE: pipeline}, delivery=delivery, labels=labels
    )
