"""CloudEvents in and out, and the event mesh (broker, triggers, delivery, sources) that carries them.

Public surface: event construction and the run extensions (``events``), the wire bindings (``bindings``), trigger config
(``Trigger``, ``DeliverySpec``), the publisher client (``publish``, ``publish_async``). The broker
server is ``eventing.broker.BrokerServer`` (``python -m eventing.broker``); see eventing/README.md.
"""

import importlib

#: where each public name lives: imported when first asked for, so a process that needs only the bindings (a function
#: host answering its first event) does not import the publisher's HTTP clients and the trigger models
_PUBLIC = {
    **dict.fromkeys(
        ("from_http", "from_json", "from_kafka", "to_http_binary", "to_http_structured", "to_json", "to_kafka"),
        "eventing.bindings",
    ),
    **dict.fromkeys(("publish", "publish_async"), "eventing.client"),
    **dict.fromkeys(
        ("PARTITIONKEY", "STEP_FAILED", "InvalidEvent", "new_event", "new_runid", "partition_key", "runid_of"),
        "eventing.events",
    ),
    **dict.fromkeys(("DeliverySpec", "Trigger"), "eventing.triggers"),
}

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


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'eventing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
