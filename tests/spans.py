"""Tracing on in this process with its finished spans kept in memory, for tests of the spans code records: a test
module's ``spans`` fixture is ``yield from in_memory_spans(monkeypatch)``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra import tracing


def in_memory_spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Install an SDK tracer whose spans an in-memory exporter keeps; yield the exporter, then shut it down."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()
