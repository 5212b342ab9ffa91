"""CloudEvents on the wire: the HTTP binding (binary out, binary or structured in) and the Kafka binding.

Built on the ``cloudevents`` SDK's bindings; a faster JSON codec (orjson) is plugged in as the
SDK's ``Format``. Anything that is not a valid CloudEvent raises ``InvalidEvent`` with the reason.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, cast

import orjson
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse

from eventing.events import PARTITIONKEY, RUNID, InvalidEvent, partition_key

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
REQUIRED = ("specversion", "id", "source", "type")
SUPPORTED_SPECVERSIONS = ("1.0",)
KEY_ATTRIBUTES = (RUNID, PARTITIONKEY)  # they pick the partition and the run: text, or nothing can key the event


class ReadEvent(CloudEvent):
    """An event read from the wire, its attributes already checked: the SDK's ``CloudEvent`` type, built on the SDK's
    public contract for event classes (``cloudevents.core.base.BaseCloudEvent``) over knflow's own fields.

    The SDK's constructor would validate every attribute again (twice the cost of reading an event, see
    ``eventing/wire.py``) and stamp the time of reading on an event sent without ``time``; an event read here keeps
    exactly the attributes it was sent with, however often and by whichever codec it is read.
    """

    def __init__(self, attributes: dict[str, Any], data: dict[str, Any] | str | bytes | None = None) -> None:
        self.fields = attributes  # no super().__init__: it is the validation this class exists to skip
        self.payload = data

    def get_id(self) -> str:
        return self.fields["id"]

    def get_source(self) -> str:
        return self.fields["source"]

    def get_type(self) -> str:
        return self.fields["type"]

    def get_specversion(self) -> str:
        return self.fields["specversion"]

    def get_datacontenttype(self) -> str | None:
        return self.fields.get("datacontenttype")

    def get_dataschema(self) -> str | None:
        return self.fields.get("dataschema")

    def get_subject(self) -> str | None:
        return self.fields.get("subject")

    def get_time(self) -> datetime | None:
        return self.fields.get("time")

    def get_extension(self, extension_name: str) -> Any:
        return self.fields.get(extension_name)

    def get_data(self) -> dict[str, Any] | str | bytes | None:
        return self.payload

    def get_attributes(self) -> dict[str, Any]:
        return self.fields


def is_json(content_type: str | None) -> bool:
    """Whether data of this content type is JSON (none given: it is), as the SDK's JSON format decides."""
    if content_type is None or content_type == "application/json":  # the common case, without the pattern
        return True
    return bool(JSONFormat.JSON_CONTENT_TYPE_PATTERN.match(content_type))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class OrjsonFormat(JSONFormat):
    """The SDK's JSON event format with orjson doing the (de)serialization, and strict checks on read."""

    def read(self, event_factory: Any, data: str | bytes) -> CloudEvent:
        try:
            attributes = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(f"structured event is not valid JSON: {exc}") from None
        return read_structured(attributes)

    def write(self, event: BaseCloudEvent) -> bytes:
        out: dict[str, Any] = dict(event.get_attributes())
        data = event.get_data()
        if isinstance(data, bytes | bytearray):
            out["data_base64"] = base64.b64encode(data).decode()
        elif data is not None:
            out["data"] = data if is_json(out.get("datacontenttype")) else str(data)
        return orjson.dumps(out, default=_json_default, option=orjson.OPT_UTC_Z)

    def write_data(self, data: Any, datacontenttype: str | None) -> bytes:
        if data is None:
            return b""
        if isinstance(data, bytes | bytearray):
            return bytes(data)
        if isinstance(data, str):
            return data.encode()
        return orjson.dumps(data, default=_json_default, option=orjson.OPT_UTC_Z)

    def read_data(self, body: bytes, datacontenttype: str | None) -> Any:
        if not body:
            return None
        if is_json(datacontenttype):
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidEvent(
                    f"event data is not valid JSON though its content type is "
                    f"{datacontenttype or 'application/json'}: {exc}"
                ) from None
        if datacontenttype and datacontenttype.startswith("text/"):
            try:
                return body.decode()
            except UnicodeDecodeError:
                raise InvalidEvent(f"event data is not UTF-8 text ({datacontenttype})") from None
        return body


FORMAT = OrjsonFormat()


def read_structured(attributes: Any) -> CloudEvent:
    """An event from its structured form, already parsed from JSON (one object of structured or batched mode)."""
    if not isinstance(attributes, dict):
        raise InvalidEvent("structured event must be a JSON object")
    _check_required(attributes, "field")
    payload = attributes.pop("data", None)
    encoded = attributes.pop("data_base64", None)
    if payload is None and encoded is not None:
        try:
            payload = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise InvalidEvent("data_base64 is not valid base64") from None
    return _build(attributes, payload)


def from_batch(body: bytes) -> list[CloudEvent]:
    """The events of a batched-mode body (``application/cloudevents-batch+json``): a JSON array of structured
    events; the first invalid one refuses the whole batch, naming its index."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"batch is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise InvalidEvent("a batch must be a JSON array of structured events")
    events = []
    for index, item in enumerate(items):
        try:
            events.append(read_structured(item))
        except InvalidEvent as exc:
            raise InvalidEvent(f"batch item {index}: {exc}") from None
    return events


def _check_required(attributes: Mapping[str, Any], where: str) -> None:
    missing = [name for name in REQUIRED if not attributes.get(name)]
    if missing:
        raise InvalidEvent(f"not a valid CloudEvent: missing required {where}(s) {', '.join(missing)}")
    if attributes["specversion"] not in SUPPORTED_SPECVERSIONS:
        raise InvalidEvent(f"unsupported specversion {attributes['specversion']!r}; knflow speaks CloudEvents 1.0")


def _build(attributes: dict[str, Any], data: Any) -> CloudEvent:
    for name, value in attributes.items():
        # CloudEvents attributes are scalars; the key attributes are text (the SDK would take a JSON object)
        if isinstance(value, dict | list) or (name in KEY_ATTRIBUTES and not isinstance(value, str)):
            raise InvalidEvent(f"attribute {name} must be a {'string' if name in KEY_ATTRIBUTES else 'scalar'}")
    if isinstance(attributes.get("time"), str):
        try:
            attributes["time"] = isoparse(attributes["time"])
        except ValueError:
            raise InvalidEvent(f"attribute time {attributes['time']!r} is not RFC 3339") from None
    sent = dict(attributes)
    try:
        CloudEvent(attributes)  # the SDK's checks, of the attributes (it takes any data); its event would add a time
    except (BaseCloudEventException, ValueError, TypeError) as exc:
        raise InvalidEvent(f"not a valid CloudEvent: {exc}") from None
    return ReadEvent(sent, data)


# -- HTTP -------------------------------------------------------------------------


def from_http(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """Parse an HTTP request or response in binary or structured mode."""
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type", "")
    for name, value in lowered.items():
        if (name.startswith("ce-") or name == "content-type") and not _is_text(value):
            raise InvalidEvent(f"header {name} is not valid UTF-8 text")
    if any(k.startswith("ce-") for k in lowered):
        _check_required({k[3:]: v for k, v in lowered.items() if k.startswith("ce-")}, "header ce-")
        try:
            # the SDK types its answer as any event; _build_factory makes each a v1 CloudEvent
            event = cast(CloudEvent, ce_http.from_binary(ce_http.HTTPMessage(lowered, body), FORMAT, _build_factory))
        except (BaseCloudEventException, ValueError) as exc:  # ValueError: e.g. dateutil on a bad ce-time
            if isinstance(exc, InvalidEvent):
                raise
            raise InvalidEvent(f"not a valid CloudEvent: {exc}") from None
        return event
    if content_type.startswith(BATCH_CONTENT_TYPE):
        raise InvalidEvent("batched CloudEvents where one event was expected (the broker's ingress takes batches)")
    if content_type.startswith(STRUCTURED_CONTENT_TYPE):
        return FORMAT.read(None, body)
    raise InvalidEvent(
        "not a CloudEvent: expected binary mode (ce-specversion, ce-id, ce-source, ce-type headers) "
        f"or structured mode (Content-Type: {STRUCTURED_CONTENT_TYPE})"
    )


def _is_text(value: str) -> bool:
    """Whether a header value decoded from the wire is real text (servers decode invalid UTF-8 to surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _build_factory(attributes: dict[str, Any], data: Any) -> CloudEvent:
    return _build(attributes, data)


def to_http_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Headers and body of ``event`` in HTTP binary mode."""
    message = ce_http.to_binary(event, FORMAT)
    return message.headers, message.body


def to_http_structured(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Headers and body of ``event`` in HTTP structured mode."""
    return {"content-type": STRUCTURED_CONTENT_TYPE}, FORMAT.write(event)


def to_json(event: CloudEvent) -> bytes:
    """The structured JSON form of an event (what the embedded log stores)."""
    return FORMAT.write(event)


def from_json(raw: bytes) -> CloudEvent:
    """Parse the structured JSON form of an event."""
    return FORMAT.read(None, raw)


# -- Kafka ------------------------------------------------------------------------

KafkaHeaders = Iterable[tuple[str, bytes]] | Mapping[str, bytes]


def _partition_key(event: BaseCloudEvent) -> bytes | None:
    key = partition_key(cast(CloudEvent, event))  # to_kafka hands the SDK a CloudEvent, and the SDK hands it back
    return key.encode() if key else None


def to_kafka(event: CloudEvent) -> tuple[bytes | None, list[tuple[str, bytes]], bytes]:
    """``(key, headers, value)`` in binary mode; the key is the ``partitionkey`` extension, else the ``runid``."""
    message = ce_kafka.to_binary(event, FORMAT, key_mapper=_partition_key)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    return key, list(message.headers.items()), message.value


def from_kafka(headers: KafkaHeaders, key: bytes | None, value: bytes) -> CloudEvent:
    """Parse a Kafka record in binary mode (``ce_`` headers) or structured mode."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    decoded = {name.lower(): (raw or b"") for name, raw in items}
    if any(name.startswith("ce_") for name in decoded):
        attrs = {name[3:]: raw.decode("utf-8", "replace") for name, raw in decoded.items() if name.startswith("ce_")}
        _check_required(attrs, "header ce_")
        # The key is the partitionkey or the runid, which already travel as headers; the SDK would copy
        # it into a redundant ``partitionkey`` extension.
        redundant = "ce_runid" in decoded or "ce_partitionkey" in decoded
        message = ce_kafka.KafkaMessage(decoded, None if redundant else key, value)
        try:
            return cast(CloudEvent, ce_kafka.from_binary(message, FORMAT, _build_factory))  # see from_http
        except (BaseCloudEventException, ValueError) as exc:  # ValueError: e.g. a key that is not UTF-8
            raise InvalidEvent(f"not a valid CloudEvent: {exc}") from None
    content_type = decoded.get("content-type", b"").decode()
    if content_type.startswith(STRUCTURED_CONTENT_TYPE) or not content_type:
        return FORMAT.read(None, value)
    raise InvalidEvent(f"Kafka record is not a CloudEvent (content-type {content_type!r}, no ce_ headers)")
