"""CloudEvents in and out, and the event mesh (broker, triggers, delivery, sources) that carries them.

Public surface: event construction and the run extensions (``events``), the wire bindings (``bindings``), trigger config
(``Trigger``, ``DeliverySpec``), the publisher client (``publish``, ``publish_async``). The broker
server is ``eventing.broker.BrokerServer`` (``python -m eventing.broker``); see eventing/README.md.
"""

from eventing.bindings import (
    from_http,
    from_json,
    from_kafka,
    to_http_binary,
    to_http_structured,
    to_json,
    to_kafka,
)
from eventing.client import publish, publish_async
from eventing.events import (
    PARTITIONKEY,
    STEP_FAILED,
    InvalidEvent,
    new_event,
    new_runid,
    partition_key,
    runid_of,
)
from eventing.triggers import DeliverySpec, Trigger

__all__ = [
    "PARTITIONKEY",
    "STEP_FAILED",
    "DeliverySpec",
    "InvalidEvent",
    "Trigger",
    "from_http",
    "from_json",
    "from_kafka",
    "new_event",
    "new_runid",
    "partition_key",
    "publish",
    "publish_async",
    "runid_of",
    "to_http_binary",
    "to_http_structured",
    "to_json",
    "to_kafka",
]
