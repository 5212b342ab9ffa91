"""The host's hot-path CloudEvent codec: binary-mode JSON events parsed and written in one pass with orjson.

Everything it does not handle on the fast path (structured mode, non-JSON data, percent-encoded
or non-ASCII header values, anything invalid) goes to ``eventing.bindings``, which stays the
reference: same events out, same ``InvalidEvent`` messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.v1.event import CloudEvent

from eventing import bindings
from eventing.events import InvalidEvent

_JSON_TYPES = ("application/json", "application/json; charset=utf-8")
_CORE = frozenset(("specversion", "id", "source", "type", "subject", "time", "datacontenttype"))
_EXTENSION = re.compile(r"[a-z0-9]{1,20}")


def _trusted(attributes: dict[str, Any], data: Any) -> CloudEvent:
    """A CloudEvent from attributes ``decode`` has already checked, without the SDK's re-validation."""
    event = CloudEvent.__new__(CloudEvent)
    event._attributes = attributes
    event._data = data
    return event


def _probe() -> bool:
    # The shortcut relies on the SDK's private layout; use it only when that layout is what we expect.
    event = CloudEvent({"id": "1", "source": "/", "type": "t", "specversion": "1.0"}, {"k": 1})
    return getattr(event, "_attributes", None) is not None and getattr(event, "_data", None) == {"k": 1}


_FAST = _probe()


def decode(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """Parse an HTTP request into a CloudEvent (binary mode fast, everything else via ``from_http``)."""
    try:
        return _decode(headers, body)
    except (ValueError, TypeError, BaseCloudEventException) as exc:
        if isinstance(exc, InvalidEvent):
            raise
        raise InvalidEvent(f"not a valid CloudEvent: {exc}") from None  # e.g. an unparseable ce-time


def _decode(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    attributes: dict[str, Any] = {}
    for key, value in headers.items():
        if len(key) > 3 and key[2] == "-" and key[:2].lower() == "ce":
            if "%" in value:
                return bindings.from_http(headers, body)
            attributes[key[3:].lower()] = value
    if (
        not attributes
        or attributes.get("specversion") != "1.0"
        or not (attributes.get("id") and attributes.get("source") and attributes.get("type"))
    ):
        return bindings.from_http(headers, body)
    content_type = headers.get("content-type")
    try:
        if content_type is not None:
            if content_type not in _JSON_TYPES:
                return bindings.from_http(headers, body)
            attributes["datacontenttype"] = content_type
        if "time" in attributes:
            attributes["time"] = datetime.fromisoformat(attributes["time"])
        data = orjson.loads(body) if body else None
        if _FAST and all(v and (k in _CORE or _EXTENSION.fullmatch(k)) for k, v in attributes.items()):
            return _trusted(attributes, data)
        return CloudEvent(attributes, data)
    except (ValueError, TypeError, BaseCloudEventException):
        return bindings.from_http(headers, body)  # the reference raises the precise InvalidEvent


def encode(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Binary-mode headers and body for ``event`` (JSON data fast, anything else via ``to_http_binary``)."""
    headers: dict[str, str] = {}
    content_type = "application/json"
    for key, value in event.get_attributes().items():
        if key == "datacontenttype":
            content_type = value
            continue
        if isinstance(value, datetime):
            text = value.isoformat()
            if text.endswith("+00:00"):
                text = text[:-6] + "Z"
        elif isinstance(value, str):
            text = value
        else:
            return bindings.to_http_binary(event)
        if not (text.isascii() and text.isprintable()) or '"' in text or "%" in text:
            return bindings.to_http_binary(event)
        headers["ce-" + key] = text
    if content_type not in _JSON_TYPES:
        return bindings.to_http_binary(event)
    data = event.get_data()
    headers["content-type"] = content_type
    if data is None:
        return headers, b""
    if isinstance(data, bytes | bytearray):
        return bindings.to_http_binary(event)
    return headers, orjson.dumps(data)
