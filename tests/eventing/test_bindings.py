"""CloudEvents bindings: HTTP binary/structured and Kafka round trips, and one clear error for invalid events."""

from __future__ import annotations

import base64

import orjson
import pytest

from eventing import bindings, wire
from eventing.bindings import (
    from_kafka,
    to_http_binary,
    to_http_structured,
    to_json,
    to_kafka,
)
from eventing.events import InvalidEvent, new_event
from functions.contract import DATA_ARRIVED, EVENT_TYPES, MODEL_TRAINED


def _same(a, b) -> None:
    assert a.get_attributes() == b.get_attributes()
    assert a.get_data() == b.get_data()


def test_event_types_follow_the_contract() -> None:
    assert len(EVENT_TYPES) == 10
    assert all(t.startswith("dev.knflow.") for t in EVENT_TYPES)


def test_new_event_carries_runid_and_traceparent_and_caused_events_continue_them() -> None:
    first = new_event(DATA_ARRIVED, "/knflow/sources/bucket", {"key": "raw/digits/d.npz"})
    assert first.get_extension("runid").startswith("run-")
    trace = first.get_extension("traceparent")
    assert trace.startswith("00-") and len(trace) == 55
    nxt = new_event(MODEL_TRAINED, "/knflow/functions/train", {"x": 1}, cause=first)
    assert nxt.get_extension("runid") == first.get_extension("runid")
    assert nxt.get_extension("traceparent")[3:35] == trace[3:35]  # same trace id
    assert nxt.get_extension("traceparent") != trace  # new span


@pytest.fixture(params=["reference", "fast"])
def codec(request: pytest.FixtureRequest):
    """The codec module: the strict reference (``eventing.bindings``) or the broker's fast path (``eventing.wire``);
    every test of the reference runs on both."""
    return bindings if request.param == "reference" else wire


@pytest.mark.parametrize("data", [{"a": [1, 2.5, None]}, "plain text", b"\x00\x01binary", None])
def test_http_binary_round_trip(codec, data) -> None:
    ctype = (
        "application/octet-stream"
        if isinstance(data, bytes)
        else ("text/plain" if isinstance(data, str) else "application/json")
    )
    event = new_event(DATA_ARRIVED, "/src", data, datacontenttype=ctype)
    headers, body = codec.to_http_binary(event)
    assert headers["ce-specversion"] == "1.0" and headers["ce-runid"] == event.get_extension("runid")
    _same(codec.from_http(headers, body), event)


def test_http_structured_round_trip_including_binary_data(codec) -> None:
    event = new_event(DATA_ARRIVED, "/src", b"\xff\xfe", datacontenttype="application/octet-stream")
    headers, body = to_http_structured(event)
    assert headers["content-type"] == "application/cloudevents+json"
    assert orjson.loads(body)["data_base64"] == base64.b64encode(b"\xff\xfe").decode()
    _same(codec.from_http(headers, body), event)
    _same(codec.from_json(to_json(event)), event)


def test_binary_mode_headers_are_case_insensitive(codec) -> None:
    event = new_event(DATA_ARRIVED, "/src", {"k": 1})
    headers, body = codec.to_http_binary(event)
    _same(codec.from_http({k.title(): v for k, v in headers.items()}, body), event)


def test_kafka_binary_round_trip_keyed_by_runid(codec) -> None:
    to_kafka, from_kafka = codec.to_kafka, codec.from_kafka
    event = new_event(DATA_ARRIVED, "/src", {"k": "v"})
    key, headers, value = to_kafka(event)
    assert key == event.get_extension("runid").encode()
    names = dict(headers)
    assert names["ce_type"] == DATA_ARRIVED.encode() and names["ce_specversion"] == b"1.0"
    _same(from_kafka(headers, key, value), event)


def test_kafka_structured_mode_is_accepted(codec) -> None:
    from_kafka = codec.from_kafka
    event = new_event(DATA_ARRIVED, "/src", {"k": "v"})
    headers = [("content-type", b"application/cloudevents+json")]
    _same(from_kafka(headers, None, to_json(event)), event)


@pytest.mark.parametrize("missing", ["specversion", "id", "source", "type"])
def test_missing_required_attribute_is_an_invalid_event(codec, missing: str) -> None:
    headers, body = to_http_binary(new_event(DATA_ARRIVED, "/src", {"k": 1}))
    del headers[f"ce-{missing}"]
    with pytest.raises(InvalidEvent, match=missing) as err:
        codec.from_http(headers, body)
    assert err.value.status == 400
    structured = orjson.loads(to_json(new_event(DATA_ARRIVED, "/src", {"k": 1})))
    del structured[missing]
    with pytest.raises(InvalidEvent, match=missing):
        codec.from_http({"content-type": "application/cloudevents+json"}, orjson.dumps(structured))


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({"content-type": "application/cloudevents+json"}, b"{not json", "not valid JSON"),
        ({"content-type": "application/cloudevents+json"}, b"[1,2]", "must be a JSON object"),
        ({"content-type": "application/json"}, b"{}", "not a CloudEvent"),
        ({"content-type": "application/cloudevents-batch+json"}, b"[]", "batched"),
        ({"ce-specversion": "0.1", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}, b"", "specversion"),
        (
            {
                "ce-specversion": "1.0",
                "ce-id": "1",
                "ce-source": "/s",
                "ce-type": "t",
                "content-type": "application/json",
            },
            b"{broken",
            "data is not valid JSON",
        ),
        (
            {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", "content-type": "caf\udce9"},
            b"x",
            "content-type is not valid UTF-8",
        ),
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "runid": {"a": 1}}',
            "runid must be a string",
        ),
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "x": [1]}',
            "x must be a scalar",
        ),
        ({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", "content-type": ""}, b"", "empty"),
    ],
)
def test_invalid_requests_raise_one_clear_error(codec, headers, body, reason) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        codec.from_http(headers, body)


def test_kafka_record_without_ce_headers_or_json_is_invalid(codec) -> None:
    from_kafka = codec.from_kafka
    with pytest.raises(InvalidEvent):
        from_kafka([], b"bucket/key", b"not an event")
    with pytest.raises(InvalidEvent, match="missing required"):
        from_kafka([("ce_id", b"1")], None, b"")


KAFKA_CORPUS = [
    new_event(DATA_ARRIVED, "/src", {"k": "v", "n": [1, 2.5, None]}),
    new_event(MODEL_TRAINED, "/src", {"x": 1}, runid="run-1", extensions={"partitionkey": "run-1/trial-2"}),
    new_event(DATA_ARRIVED, "/src", "plain text", datacontenttype="text/plain"),
    new_event(DATA_ARRIVED, "/src", None, subject="a/b", extensions={"mode": "train"}),
    new_event(DATA_ARRIVED, "/src", {"unicode": "é ✓"}, subject="é"),
]


@pytest.mark.parametrize("event", KAFKA_CORPUS, ids=range(len(KAFKA_CORPUS)))
def test_kafka_fast_path_reads_and_writes_what_the_reference_does(event) -> None:
    fast, reference = wire.to_kafka(event), to_kafka(event)
    assert fast[0] == reference[0]  # the same key, so the same partition
    for encoded in (fast, reference):
        for decode in (wire.from_kafka, from_kafka):
            _same(decode(encoded[1], encoded[0], encoded[2]), event)
