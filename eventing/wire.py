"""Fast paths of the CloudEvents codecs for the broker's hot path, same results as ``eventing.bindings``.

The SDK's HTTP binding percent-decodes every header, parses ``time`` with dateutil and validates
every attribute with regexes, which costs more than the rest of a request. The broker's ingress
and delivery and the function host all use these. Here the common case (binary mode, plain ASCII
attribute values, JSON data) is decoded and encoded directly; anything else (a ``%`` in a
value, structured mode, a datacontenttype that is not JSON) goes through ``eventing.bindings``,
which stays the one strict reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
from cloudevents.core.v1.event import CloudEvent

from eventing import bindings
from eventing.bindings import REQUIRED, SUPPORTED_SPECVERSIONS, ReadEvent
from eventing.events import InvalidEvent, partition_key

_JSON_TYPES = ("application/json", "")
_CORE = frozenset(("specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema"))
_EXTENSION = re.compile(r"[a-z0-9]{1,20}")


def _json(content_type: str) -> bool:
    """Whether data of this content type ("": none given) is JSON on the fast path; other types the reference reads."""
    if not content_type or content_type == "application/json":  # the common case, without the regex
        return True
    return content_type.startswith("application/json") and bindings.is_json(content_type)


def _plain(value: str) -> bool:
    """Whether a header value reads as itself: not empty (the reference refuses an empty attribute), printable ASCII
    and nothing that is percent-encoded on the wire."""
    return bool(value) and value.isascii() and value.isprintable() and "%" not in value and '"' not in value


def _plain_out(value: str) -> bool:
    """Whether a value goes out as itself: ``_plain`` and no space (the binding percent-encodes spaces; a header
    value's own leading or trailing ones would be lost)."""
    return _plain(value) and " " not in value


def from_http(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """``bindings.from_http`` with a fast path for binary-mode events with JSON data."""
    attributes: dict[str, Any] = {}
    content_type = ""
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith("ce-"):
            if not _plain(value):
                return bindings.from_http(headers, body)
            attributes[lowered[3:]] = value
        elif lowered == "content-type":
            content_type = value
            if not value:
                return bindings.from_http(headers, body)  # an empty datacontenttype: the reference refuses it
    if not attributes or any(not attributes.get(n) for n in REQUIRED):
        return bindings.from_http(headers, body)  # not binary mode, or invalid: the reference says why
    if not _json(content_type) or attributes["specversion"] not in SUPPORTED_SPECVERSIONS:
        return bindings.from_http(headers, body)
    if content_type:
        attributes["datacontenttype"] = content_type
    data = None
    if body:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return bindings.from_http(headers, body)
    return _build(attributes, data, lambda: bindings.from_http(headers, body))


def _build(attributes: dict[str, Any], data: Any, fallback: Any) -> CloudEvent:
    time = attributes.get("time")
    if isinstance(time, str):
        try:
            attributes["time"] = datetime.fromisoformat(time)
        except ValueError:
            return fallback()
        if attributes["time"].tzinfo is None:
            return fallback()
    if all(
        v
        and (isinstance(v, str) or (k == "time" and isinstance(v, datetime)))  # a time given as a number is no time
        and (k in _CORE or (k != "data" and _EXTENSION.fullmatch(k)))
        for k, v in attributes.items()
    ):
        return ReadEvent(attributes, data)  # checked above: not validated again by the SDK's constructor
    return fallback()  # anything else is the reference's to build, or to refuse with the precise InvalidEvent


def from_json(raw: bytes) -> CloudEvent:
    """``bindings.from_json`` with a fast path for events with JSON data."""
    try:
        attributes = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return bindings.from_json(raw)
    return _structured(attributes) or bindings.from_json(raw)


def from_batch(body: bytes) -> list[CloudEvent]:
    """``bindings.from_batch`` with the fast path for each event; any event off it sends the batch to the reference."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError:
        return bindings.from_batch(body)
    if not isinstance(items, list):
        return bindings.from_batch(body)
    events = []
    for item in items:
        event = _structured(item)
        if event is None:
            return bindings.from_batch(body)  # the reference reads it, or names the item at fault
        events.append(event)
    return events


def _structured(attributes: Any) -> CloudEvent | None:
    """The event of a parsed structured-mode object with JSON data, or None where the reference must decide."""
    if not isinstance(attributes, dict) or "data_base64" in attributes:
        return None
    if any(not attributes.get(n) for n in REQUIRED) or attributes["specversion"] not in SUPPORTED_SPECVERSIONS:
        return None
    content_type = attributes.get("datacontenttype", "")
    if (
        not isinstance(content_type, str)
        or not _json(content_type)
        or ("datacontenttype" in attributes and not content_type)
    ):
        return None
    data = attributes.pop("data", None)
    return _build(attributes, data, lambda: None)


def _texts(event: CloudEvent) -> tuple[list[tuple[str, str]], str | None] | None:
    """Each attribute but datacontenttype as text, and the datacontenttype; None if one is not a str or a time."""
    texts: list[tuple[str, str]] = []
    content_type = None
    for name, value in event.get_attributes().items():
        if name == "datacontenttype":
            content_type = value
        elif isinstance(value, datetime):
            texts.append((name, value.isoformat().replace("+00:00", "Z")))
        elif isinstance(value, str):
            texts.append((name, value))
        else:
            return None
    return texts, content_type


def to_http_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """``bindings.to_http_binary`` with a fast path for plain attribute values and JSON data."""
    found = _texts(event)
    if found is None or not all(_plain_out(text) for _, text in found[0]):
        return bindings.to_http_binary(event)
    texts, content_type = found
    headers = {f"ce-{name}": text for name, text in texts}
    data = event.get_data()
    if data is None:
        body = b""
    elif isinstance(data, str | bytes | bytearray) or (content_type or "").split(";", 1)[0] not in _JSON_TYPES:
        return bindings.to_http_binary(event)
    else:
        body = orjson.dumps(data, option=orjson.OPT_UTC_Z)
    if content_type:
        headers["content-type"] = content_type
    return headers, body


def to_kafka(event: CloudEvent) -> tuple[bytes | None, list[tuple[str, bytes]], bytes]:
    """``bindings.to_kafka`` with a fast path for string attribute values and JSON data."""
    found = _texts(event)
    data = event.get_data()
    if found is None or data is None or isinstance(data, str | bytes | bytearray):
        return bindings.to_kafka(event)
    texts, content_type = found
    if (content_type or "").split(";", 1)[0] not in _JSON_TYPES:
        return bindings.to_kafka(event)
    headers = [(f"ce_{name}", text.encode()) for name, text in texts]
    if content_type:
        headers.append(("content-type", content_type.encode()))
    key = partition_key(event)
    return (key.encode() if key else None), headers, orjson.dumps(data, option=orjson.OPT_UTC_Z)


def from_kafka(headers: Iterable[tuple[str, bytes]], key: bytes | None, value: bytes) -> CloudEvent:
    """``bindings.from_kafka`` with a fast path for binary-mode records with lower-case ``ce_`` headers and JSON."""
    attributes: dict[str, Any] = {}
    content_type = ""
    try:
        for name, raw in headers:
            if name.startswith("ce_"):
                attributes[name[3:]] = raw.decode()
            elif name == "content-type":
                content_type = raw.decode()
                if not content_type:
                    raise ValueError(name)  # an empty datacontenttype: the reference refuses it
            elif name.lower() != name:
                raise ValueError(name)
    except (ValueError, AttributeError):
        return bindings.from_kafka(headers, key, value)
    if any(not attributes.get(n) for n in REQUIRED) or attributes["specversion"] not in SUPPORTED_SPECVERSIONS:
        return bindings.from_kafka(headers, key, value)
    if key is not None and "runid" not in attributes and "partitionkey" not in attributes:
        return bindings.from_kafka(headers, key, value)  # the key becomes the partitionkey extension there
    if not _json(content_type) or not value:
        return bindings.from_kafka(headers, key, value)
    if content_type:
        attributes["datacontenttype"] = content_type
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return bindings.from_kafka(headers, key, value)
    return _build(attributes, data, lambda: bindings.from_kafka(headers, key, value))


__all__ = ["InvalidEvent", "from_http", "from_json", "from_kafka", "to_http_binary", "to_kafka"]
