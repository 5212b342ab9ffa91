"""OTLP's protobuf wire format for span records, written by hand: the ``ExportTraceServiceRequest`` the SDK's OTLP
encoder writes for the same spans (proven equal in ``tests/infra/test_tracing.py``), at a fraction of its CPU.

A record is ``infra.tracing``'s: ``(trace_id, span_id, parent_id, parent_remote, name, kind, start_ns, end_ns,
attributes, events, (status_code, message))``. Field numbers are ``opentelemetry/proto/trace/v1/trace.proto``'s.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

FIXED64, FIXED32, DOUBLE = struct.Struct("<Q"), struct.Struct("<I"), struct.Struct("<d")
LOCAL_FLAGS, REMOTE_FLAGS = 0x100, 0x300  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE, | _IS_REMOTE: the parent's
_FLAGS = {False: b"\x85\x01" + FIXED32.pack(LOCAL_FLAGS), True: b"\x85\x01" + FIXED32.pack(REMOTE_FLAGS)}
_INT64 = (1 << 64) - 1


def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
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
        self.resource = field(b"\x0a", self.attributes(b"\x0a", resource_attributes))
        self.scope = field(b"\x0a", text(b"\x0a", scope))
        self.schema_url = text(b"\x1a", schema_url)

    def attributes(self, tag: bytes, attributes: Mapping[str, Any]) -> bytes:
        """Each attribute as a ``KeyValue`` field ``tag``."""
        keys, out = self.keys, []
        for key, value in attributes.items():
            head = keys.get(key)
            if head is None:
                head = keys[key] = text(b"\x0a", key)
            out.append(field(tag, head + field(b"\x12", any_value(value))))
        return b"".join(out)

    def span(self, record: Sequence[Any]) -> bytes:
        trace_id, span_id, parent_id, remote, name, kind, start, end, attributes, events, status = record
        code, message = status
        parts = [
            b"\x0a\x10" + trace_id.to_bytes(16, "big") + b"\x12\x08" + span_id.to_bytes(8, "big"),
            b"\x22\x08" + parent_id.to_bytes(8, "big") if parent_id else b"",
            text(b"\x2a", name),
            b"\x30" + varint(kind + 1),  # OTLP counts SPAN_KIND_UNSPECIFIED as 0
            b"\x39" + FIXED64.pack(start) + b"\x41" + FIXED64.pack(end),
            self.attributes(b"\x4a", attributes),
        ]
        for event_name, at, event_attributes in events or ():
            event = b"\x09" + FIXED64.pack(at) + text(b"\x12", event_name) + self.attributes(b"\x1a", event_attributes)
            parts.append(field(b"\x5a", event))
        parts.append(field(b"\x7a", text(b"\x12", message) + b"\x18" + varint(code) if code else b""))
        parts.append(_FLAGS[bool(remote and parent_id)])
        return field(b"\x12", b"".join(parts))

    def request(self, records: Sequence[Sequence[Any]]) -> bytes:
        """The serialized request for one batch of records."""
        scope_spans = field(b"\x12", self.scope + b"".join(map(self.span, records)))
        return field(b"\x0a", self.resource + scope_spans + self.schema_url)


__all__ = ["Encoder", "any_value", "varint"]
