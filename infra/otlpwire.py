"""OTLP's protobuf wire format for span records, written by hand: the ``ExportTraceServiceRequest`` the SDK's OTLP
encoder writes for the same spans (proven equal in ``tests/infra/test_tracing.py``), at a fraction of its CPU.

A record is ``infra.tracing``'s: ``(trace_id, span_id, parent_id, parent_remote, name, kind, start_ns, end_ns,
attributes, events, (status_code, message))``, the ids in lowercase hex (``parent_id`` empty for a root). Field
numbers are ``opentelemetry/proto/trace/v1/trace.proto``'s.
The spans of one process repeat their names and most attribute values (trigger, event type, status code), so the
encoder keeps each one's encoded bytes and writes a span mostly by joining them.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

FIXED64, FIXED32, DOUBLE = struct.Struct("<Q"), struct.Struct("<I"), struct.Struct("<d")
TIMES = struct.Struct("<BQBQ")  # start_time_unix_nano, end_time_unix_nano (fixed64)
LOCAL_FLAGS, REMOTE_FLAGS = 0x100, 0x300  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE, | _IS_REMOTE: the parent's
_FLAGS = {False: b"\x85\x01" + FIXED32.pack(LOCAL_FLAGS), True: b"\x85\x01" + FIXED32.pack(REMOTE_FLAGS)}
_INT64 = (1 << 64) - 1
_KINDS = [bytes((0x30, kind + 1)) for kind in range(5)]  # OTLP counts SPAN_KIND_UNSPECIFIED as 0
_UNSET_STATUS = b"\x7a\x00"  # an empty Status message: the SDK writes it for every span
_fromhex = bytes.fromhex
CACHED = 1024  # encoded names, and values per attribute key, kept; past this a cache starts again
_NEW: Any = object()  # no cache yet for a tag and key


def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: ``tag`` (one byte, wire type 2), the length, ``payload``."""
    return tag + varint(len(payload)) + payload


def text(tag: bytes, value: str) -> bytes:
    """A string field, absent when empty (proto3)."""
    return field(tag, value.encode()) if value else b""


def any_value(value: Any) -> bytes:
    """An ``AnyValue`` (the oneof member is written even when it holds its default); ``TypeError`` for a type the
    SDK's encoder would nest (mappings, other objects)."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + varint(value & _INT64)
    if isinstance(value, float):
        return b"\x21" + DOUBLE.pack(value)
    if isinstance(value, bytes):
        return field(b"\x3a", value)
    if isinstance(value, (list, tuple)):
        return field(b"\x2a", b"".join(field(b"\x0a", any_value(v)) for v in value))
    raise TypeError(f"no fast encoding for {type(value).__name__}")


class Encoder:
    """Span records into one serialized ``ExportTraceServiceRequest`` for a resource and the scope ``knflow``."""

    def __init__(self, resource_attributes: Mapping[str, Any], schema_url: str, scope: str) -> None:
        self.keys: dict[str, bytes] = {}  # a KeyValue's key field, per key: the same few keys on every span
        # per field tag and key, each str/int value's whole KeyValue field and how many lookups found one; None once
        # a key's values proved not to repeat (event ids): those are encoded each time
        self.values: dict[tuple[bytes, str], tuple[dict[Any, bytes], list[int]] | None] = {}
        self.names: dict[str, bytes] = {}  # a span's name field, per name
        self.resource = field(b"\x0a", self.attributes(b"\x0a", resource_attributes))
        self.scope = field(b"\x0a", text(b"\x0a", scope))
        self.schema_url = text(b"\x1a", schema_url)

    def attributes(self, tag: bytes, attributes: Mapping[str, Any]) -> bytes:
        """Each attribute as a ``KeyValue`` field ``tag``."""
        out = []
        for key, value in attributes.items():
            kind = type(value)
            if kind is not str and kind is not int:  # not bool or float: True == 1 == 1.0 would share an entry
                out.append(self._pair(tag, key, value))
                continue
            cached = self.values.get((tag, key), _NEW)
            if cached is None:
                out.append(self._pair(tag, key, value))
                continue
            if cached is _NEW:
                cached = self.values[(tag, key)] = ({}, [0])
            pairs, hits = cached
            pair = pairs.get(value)
            if pair is None:
                pair = pairs[value] = self._pair(tag, key, value)
                if len(pairs) >= CACHED:  # the cache of this key starts again, or stops when it found few repeats
                    self.values[(tag, key)] = ({}, [0]) if hits[0] >= CACHED else None
            else:
                hits[0] += 1
            out.append(pair)
        return b"".join(out)

    def _pair(self, tag: bytes, key: str, value: Any) -> bytes:
        head = self.keys.get(key)
        if head is None:
            head = self.keys[key] = text(b"\x0a", key)
        if type(value) is str:
            encoded = value.encode()
            any_value_ = b"\x0a" + varint(len(encoded)) + encoded
        else:
            any_value_ = any_value(value)
        body = head + b"\x12" + varint(len(any_value_)) + any_value_
        return tag + varint(len(body)) + body

    def _name(self, name: str) -> bytes:
        encoded = self.names.get(name)
        if encoded is None:
            if len(self.names) >= CACHED:
                self.names.clear()
            encoded = self.names[name] = text(b"\x2a", name)
        return encoded

    def span(self, record: Sequence[Any]) -> bytes:
        trace_id, span_id, parent_id, remote, name, kind, start, end, attributes, events, status = record
        parts = [
            b"\x0a\x10" + _fromhex(trace_id) + b"\x12\x08" + _fromhex(span_id),
            b"\x22\x08" + _fromhex(parent_id) if parent_id else b"",
            self.names.get(name) or self._name(name),
            _KINDS[kind],
            TIMES.pack(0x39, start, 0x41, end),
            self.attributes(b"\x4a", attributes) if attributes else b"",
        ]
        if events:
            parts.append(self._events(events))
        code, message = status
        parts.append(field(b"\x7a", text(b"\x12", message) + b"\x18" + varint(code)) if code else _UNSET_STATUS)
        parts.append(_FLAGS[bool(remote and parent_id)])
        body = b"".join(parts)
        return b"\x12" + varint(len(body)) + body

    def _events(self, events: Sequence[tuple[str, int, Mapping[str, Any]]]) -> bytes:
        out = []
        for event_name, at, event_attributes in events:
            event = b"\x09" + FIXED64.pack(at) + text(b"\x12", event_name) + self.attributes(b"\x1a", event_attributes)
            out.append(field(b"\x5a", event))
        return b"".join(out)

    def request(self, records: Sequence[Sequence[Any]]) -> bytes:
        """The serialized request for one batch of records (joined once: a batch is ~140 kB)."""
        spans = list(map(self.span, records))
        size = len(self.scope) + sum(map(len, spans))
        scope_spans = b"\x12" + varint(size)
        total = len(self.resource) + len(scope_spans) + size + len(self.schema_url)
        return b"".join([b"\x0a", varint(total), self.resource, scope_spans, self.scope, *spans, self.schema_url])


__all__ = ["Encoder", "any_value", "varint"]
