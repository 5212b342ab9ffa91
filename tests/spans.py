"""Tracing on in this process with every span kept in memory (each sampled), for tests of the spans code records: a
test module's ``spans`` fixture is ``yield from in_memory_spans(monkeypatch)``."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from infra import tracing

KIND_NAMES = {number: name.upper() for name, number in tracing.KINDS.items()}
STATUS_NAMES = {tracing.UNSET: "UNSET", tracing.ERROR: "ERROR"}


class Recorder:
    """Stands in for the span queue: keeps each ended span's record, read back in the SDK's span shape."""

    def __init__(self) -> None:
        self.records: list[tuple] = []

    def put(self, record: tuple) -> None:
        self.records.append(record)

    def get_finished_spans(self) -> list[Any]:
        return [_span(*record) for record in self.records]


def _span(trace_id, span_id, parent_id, remote, name, kind, start, end, attributes, events, status) -> Any:  # type: ignore[no-untyped-def]
    return SimpleNamespace(
        name=name,
        context=SimpleNamespace(trace_id=int(trace_id, 16), span_id=int(span_id, 16)),  # records keep ids in hex
        parent=SimpleNamespace(span_id=int(parent_id, 16)) if parent_id else None,
        kind=SimpleNamespace(name=KIND_NAMES[kind]),
        attributes=attributes,
        events=[SimpleNamespace(name=n, attributes=a) for n, _, a in events or ()],
        status=SimpleNamespace(status_code=SimpleNamespace(name=STATUS_NAMES[status[0]]), description=status[1]),
    )


def in_memory_spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """Turn tracing on with every span sampled and kept by a ``Recorder``; yield it."""
    recorder = Recorder()
    monkeypatch.setattr(tracing, "_queue", recorder)
    monkeypatch.setattr(tracing, "_sampler", lambda trace_id, parent: True)
    yield recorder
