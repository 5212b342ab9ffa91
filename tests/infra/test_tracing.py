"""Tracing's switch: on only with an OTLP endpoint in the standard variables, and then exported where they say."""

from __future__ import annotations

import subprocess
import sys

from infra.tracing import traces_endpoint, tracing_wanted


def test_without_an_endpoint_no_opentelemetry_sdk_is_loaded() -> None:
    code = (
        "import sys\n"
        "from infra.tracing import configure_tracing, enabled\n"
        "from eventing.events import new_event\n"
        "assert configure_tracing('broker', {}) is False and not enabled()\n"
        "cause = new_event('a', '/x')\n"
        "child = new_event('b', '/x', cause=cause)\n"
        "assert child.get_extension('traceparent').split('-')[1] == cause.get_extension('traceparent').split('-')[1]\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_spans_go_to_the_traces_endpoint_or_the_base_endpoint_plus_v1_traces() -> None:
    assert traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318/"}) == "http://tempo:4318/v1/traces"
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:9/t"}
    assert traces_endpoint(both) == "http://b:9/t"
    assert not tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_SDK_DISABLED": "true"})
    assert not tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing_wanted({})
