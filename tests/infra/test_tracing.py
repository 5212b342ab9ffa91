"""Tracing's switch (on only with an OTLP endpoint in the standard variables), and spans recorded in a process and
exported over OTLP by its exporter process: parents, kinds, attributes, status, sampling, dropped spans counted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra import tracing
from infra.spanqueue import SpanQueue, queue_families
from infra.tracing import sampler_of, traces_endpoint, tracing_wanted
from tests.fuzzing import fuzz
from tests.otlp import OtlpReceiver


def test_without_an_endpoint_no_opentelemetry_sdk_is_loaded() -> None:
    code = (
        "from infra.tracing import configure_tracing, enabled\n"
        "from eventing.events import new_event\n"
        "assert configure_tracing('broker', {}) is False and not enabled()\n"
        "cause = new_event('a', '/x')\n"
        "child = new_event('b', '/x', cause=cause)\n"
        "assert child.get_extension('traceparent').split('-')[1] == cause.get_extension('traceparent').split('-')[1]\n"
    )
    assert _opentelemetry_modules_after(code) == "[]"


def _opentelemetry_modules_after(code: str) -> str:
    """The OpenTelemetry modules a fresh interpreter holds after running ``code``."""
    code += "import sys\nprint(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def test_spans_go_to_the_traces_endpoint_or_the_base_endpoint_plus_v1_traces() -> None:
    assert traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318/"}) == "http://tempo:4318/v1/traces"
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:9/t"}
    assert traces_endpoint(both) == "http://b:9/t"
    assert not tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_SDK_DISABLED": "true"})
    assert not tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing_wanted({})


# -- spans recorded here, exported by the exporter process ------------------------------------------------------------

REMOTE = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"


def _attributes(span) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {a.key: a.value.string_value or a.value.int_value for a in span.attributes}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture
def traced(receiver: OtlpReceiver) -> Iterator[None]:
    """Tracing on in this process for the test, exporting to ``receiver`` every 100 ms."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "t"}
    assert tracing.configure_tracing("test", env)
    try:
        yield
    finally:
        tracing.shutdown_tracing()


def test_spans_reach_the_receiver_as_otlp_with_their_parents_kinds_attributes_and_status(
    receiver: OtlpReceiver, traced: None
) -> None:
    with tracing.span("invoke", REMOTE, kind="server", attributes={"faas.name": "f", "n": 3}) as invocation:
        emitted = tracing.producer_traceparent("emit x", None, {"cloudevents.event_type": "x"})
        invocation.add_event("attempt", {"attempt": 1, "status": 500})
        tracing.mark_error(invocation, "status 500")
    delivery = tracing.start_span("deliver t", emitted, kind="consumer")
    delivery.set_attribute("http.response.status_code", 202)
    tracing.end_span(delivery)
    tracing.shutdown_tracing()  # flushes: everything recorded is exported before it returns

    spans = {s.name: s for s in receiver.spans}
    assert set(spans) == {"invoke", "emit x", "deliver t"}
    invoke, emit, deliver = spans["invoke"], spans["emit x"], spans["deliver t"]
    assert {s.trace_id.hex() for s in spans.values()} == {"ab" * 16}
    assert invoke.parent_span_id.hex() == "cd" * 8 and invoke.kind == invoke.SPAN_KIND_SERVER
    assert emit.parent_span_id == invoke.span_id and emit.kind == emit.SPAN_KIND_PRODUCER
    assert emitted == f"00-{'ab' * 16}-{emit.span_id.hex()}-01"
    assert deliver.parent_span_id == emit.span_id and deliver.kind == deliver.SPAN_KIND_CONSUMER
    assert _attributes(invoke) == {"faas.name": "f", "n": 3}
    assert _attributes(deliver) == {"http.response.status_code": 202}
    assert invoke.status.code == invoke.status.STATUS_CODE_ERROR and invoke.status.message == "status 500"
    assert [(e.name, _attributes(e)) for e in invoke.events] == [("attempt", {"attempt": 1, "status": 500})]
    assert invoke.start_time_unix_nano <= emit.start_time_unix_nano <= emit.end_time_unix_nano
    assert emit.end_time_unix_nano <= invoke.end_time_unix_nano
    assert invoke.flags & 0x300 == 0x300 and emit.flags & 0x300 == 0x100  # OTLP's parent-is-remote bits
    resource = {a.key: a.value.string_value for a in receiver.resources[0].attributes}
    assert resource["service.name"] == "t" and resource["telemetry.sdk.name"] == "opentelemetry"
    assert receiver.scopes == {"knflow"}


def test_an_exception_leaving_a_span_is_an_exception_event_and_an_error(receiver: OtlpReceiver, traced: None) -> None:
    with pytest.raises(ValueError), tracing.span("work"):
        raise ValueError("bad input")
    tracing.shutdown_tracing()

    (span,) = receiver.spans
    assert not span.parent_span_id  # no traceparent, no current span: a root
    assert span.status.code == span.status.STATUS_CODE_ERROR and span.status.message == "ValueError: bad input"
    (event,) = span.events
    assert event.name == "exception"
    assert _attributes(event)["exception.type"] == "ValueError"
    assert _attributes(event)["exception.message"] == "bad input"


def test_with_an_endpoint_the_traced_process_itself_loads_no_opentelemetry(receiver: OtlpReceiver) -> None:
    code = (
        "from infra import tracing\n"
        f"assert tracing.configure_tracing('broker', {{'OTEL_EXPORTER_OTLP_ENDPOINT': '{receiver.url}'}})\n"
        "with tracing.span('work', None):\n"
        "    pass\n"
        "tracing.shutdown_tracing()\n"
    )
    assert _opentelemetry_modules_after(code) == "[]"
    assert [s.name for s in receiver.spans] == ["work"]  # exported, by the exporter process


def test_spans_beyond_the_queue_are_dropped_and_counted_without_waiting() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_BSP_MAX_QUEUE_SIZE": "64"}
    queue = SpanQueue("test", {**os.environ, **env, "OTEL_EXPORTER_OTLP_TIMEOUT": "1"})
    record = ("1" * 32, "2" * 16, "", False, "s", 0, 1, 2, {}, None, (0, ""))
    began = time.monotonic()
    for _ in range(5000):
        queue.put(record)
    assert time.monotonic() - began < 1.0
    assert queue.dropped >= 5000 - 64 * 2  # the queue holds 64; the thread may have taken a batch meanwhile
    families = {f.name: f.samples[0].value for f in queue_families(queue)}
    assert families["knflow_trace_spans_dropped"] >= queue.dropped
    assert families["knflow_trace_spans_queued"] == queue.queued == 5000 - queue.dropped
    queue.close()


def test_metric_families_are_empty_with_tracing_off() -> None:
    assert not tracing.enabled()
    assert tracing.metric_families() == []


SAMPLERS = [
    ("always_on", ""),
    ("always_off", ""),
    ("traceidratio", "0.25"),
    ("parentbased_always_on", ""),
    ("parentbased_always_off", ""),
    ("parentbased_traceidratio", "0.5"),
    ("", ""),
]


@pytest.mark.parametrize(("name", "arg"), SAMPLERS)
def test_sampling_decides_as_the_sdk_samplers_of_the_same_variables(name: str, arg: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    env = {"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": arg}
    with mock.patch.dict(os.environ, env):
        reference = TracerProvider().sampler  # the SDK's sampler from the same variables
    ours = sampler_of(env)
    hypothesis_settings, budget = fuzz(f"sampler {name or 'default'}", examples=300)

    @hypothesis_settings
    @given(
        trace_id=st.integers(1, (1 << 128) - 1),
        parent=st.none() | st.tuples(st.integers(1, (1 << 64) - 1), st.sampled_from([0, 1]), st.booleans()),
    )
    def check(trace_id: int, parent: tuple[int, int, bool] | None) -> None:
        if not budget.take():
            return
        context = None
        if parent is not None:
            span_id, flags, remote = parent
            parent_context = trace.SpanContext(trace_id, span_id, remote, trace.TraceFlags(flags))
            context = trace.set_span_in_context(trace.NonRecordingSpan(parent_context))
        expected = reference.should_sample(context, trace_id, "s").decision.is_sampled()
        hex_id = f"{trace_id:032x}"
        ours_parent = (hex_id, f"{parent[0]:016x}", bool(parent[1]), parent[2]) if parent is not None else None
        assert ours(hex_id, ours_parent) == expected

    check()


TRACE = f"{1 << 100:032x}"


def _records() -> list[tuple[object, ...]]:
    """Span records of every shape knflow makes: roots, remote and local parents, events, errors, attribute types."""
    now = time.time_ns()
    attributes = {"knflow.trigger": "t", "n": 3, "ok": True, "ratio": 0.5, "tags": ["a", "b"], "http.status": 204}
    attempts = [("attempt", now + 1, {"attempt": 1, "error": ""})]
    return [
        (TRACE, "7" * 16, "", False, "emit x", 3, now, now + 10, {"cloudevents.event_type": "x"}, None, (0, "")),
        (TRACE, "8" * 16, "7" * 16, True, "deliver t", 4, now, now + 99, attributes, None, (0, "")),
        ("5" * 32, "9" * 16, "8" * 16, False, "f x", 1, now, now + 5, {}, attempts, (2, "boom")),
    ]


def test_the_fast_encoder_writes_the_request_the_sdks_exporter_writes() -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from infra.spanexport import Builder

    builder = Builder("broker")
    records = _records()
    reference = encode_spans(builder.spans(records))
    fast = ExportTraceServiceRequest.FromString(builder.encoder().request(records))
    assert fast == reference
    assert len(fast.resource_spans[0].scope_spans[0].spans) == 3


def test_values_the_fast_encoder_does_not_know_go_through_the_sdks_encoder() -> None:
    from infra.spanexport import Builder, export

    builder = Builder("broker")
    record = ("1" * 32, "2" * 16, "", False, "s", 0, 1, 2, {"odd": {"a": 1}}, None, (0, ""))
    sent: list[bytes] = []
    through_sdk = mock.Mock()
    export(
        [record],
        through_sdk,
        builder,
        builder.encoder(),
        sent.append,
    )
    assert not sent
    (spans,) = through_sdk.export.call_args.args
    assert [s.name for s in spans] == ["s"] and dict(spans[0].attributes) == {"odd": {"a": 1}}
    export(
        _records(),
        through_sdk,
        builder,
        builder.encoder(),
        sent.append,
    )
    assert len(sent) == 1 and through_sdk.export.call_count == 1  # the known types: the fast encoder's request


_values = (
    st.text(max_size=20)
    | st.integers(-(1 << 63), (1 << 63) - 1)
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.lists(st.text(max_size=5) | st.integers(-5, 5), max_size=3)
)
_attribute_maps = st.dictionaries(st.text(min_size=1, max_size=12), _values, max_size=5)
_record = st.tuples(
    st.integers(1, (1 << 128) - 1).map(lambda n: f"{n:032x}"),
    st.integers(1, (1 << 64) - 1).map(lambda n: f"{n:016x}"),
    st.integers(0, (1 << 64) - 1).map(lambda n: f"{n:016x}" if n else ""),  # a root has no parent id
    st.booleans(),
    st.text(max_size=30),
    st.integers(0, 4),
    st.integers(1, 1 << 62),
    st.integers(1, 1 << 62),
    _attribute_maps,
    st.none() | st.lists(st.tuples(st.text(max_size=10), st.integers(1, 1 << 62), _attribute_maps), max_size=2),
    st.sampled_from([(0, ""), (2, "status 500"), (2, ""), (1, "")]),
)


def test_the_fast_encoder_equals_the_sdks_on_generated_spans() -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from infra.spanexport import Builder

    builder = Builder("broker")
    encoder = builder.encoder()
    hypothesis_settings, budget = fuzz("otlp span encoder", examples=300)

    @hypothesis_settings
    @given(records=st.lists(_record, min_size=1, max_size=4))
    def check(records: list[tuple[object, ...]]) -> None:
        if not budget.take():
            return
        fast = ExportTraceServiceRequest.FromString(encoder.request(records))
        assert fast == encode_spans(builder.spans(records))

    check()


def test_the_fast_encoder_keeps_equal_values_of_other_types_apart_and_survives_its_cache_filling() -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from infra import otlpwire
    from infra.spanexport import Builder

    builder = Builder("broker")
    encoder = builder.encoder()
    now = time.time_ns()
    values = [1, True, 1.0, "1", 0, False, 0.0, ""]  # equal or equally hashed across types: never one cache entry
    records = [
        (TRACE, f"{n + 1:016x}", "", False, f"s{n % 3}", 0, now, now + 1, {"v": value, "id": str(n)}, None, (0, ""))
        for n, value in enumerate(values * (otlpwire.CACHED // 4))  # unique ids: that key stops being cached
    ]
    for batch in (records[:8], records, records[:8]):
        assert ExportTraceServiceRequest.FromString(encoder.request(batch)) == encode_spans(builder.spans(batch))


@pytest.mark.parametrize(
    "traceparent",
    [
        None,
        "",
        "01-" + "ab" * 16 + "-" + "cd" * 8 + "-01",  # another version
        "00-" + "AB" * 16 + "-" + "cd" * 8 + "-01",  # W3C ids are lowercase
        "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01-",
        "00-" + "0" * 32 + "-" + "cd" * 8 + "-01",  # all-zero ids are invalid
        "00-" + "ab" * 16 + "-" + "0" * 16 + "-01",
        "00-" + "ab" * 16 + "-" + "cd" * 8 + "-0g",
    ],
)
def test_a_traceparent_that_is_not_w3c_00_starts_a_new_trace(traceparent: str | None, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tests.spans import in_memory_spans

    recorder = next(in_memory_spans(monkeypatch))
    span = tracing.start_span("deliver t", traceparent)
    tracing.end_span(span)
    (record,) = recorder.records
    assert record[2] == "" and record[0] != "ab" * 16 and len(record[0]) == 32 and int(record[0], 16)
    assert tracing.traceparent_of(span) == f"00-{record[0]}-{record[1]}-01"


def test_a_w3c_traceparent_is_the_remote_parent_and_its_sampled_flag_decides() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    with (
        mock.patch.object(tracing, "_queue", recorder := mock.Mock()),
        mock.patch.object(tracing, "_sampler", sampler_of(env)),
    ):
        sampled = tracing.start_span("a", REMOTE)
        unsampled = tracing.start_span("b", REMOTE[:-2] + "00")
        tracing.end_span(sampled)
        tracing.end_span(unsampled)
    (record,) = [call.args[0] for call in recorder.put.call_args_list]
    assert record[:4] == ("ab" * 16, sampled.span_id, "cd" * 8, True)
    assert tracing.traceparent_of(unsampled) == f"00-{'ab' * 16}-{unsampled.span_id}-00"
