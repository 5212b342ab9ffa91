"""The CloudEvents codecs' rules, in process: required attributes, content modes, data encodings, extensions, the
Kafka key, and the reason each refusal names (``make mutate`` measures ``eventing/bindings.py`` with these)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest
from cloudevents.core.v1.event import CloudEvent

from eventing import bindings, wire
from eventing.bindings import (
    BATCH_CONTENT_TYPE,
    FORMAT,
    STRUCTURED_CONTENT_TYPE,
    from_batch,
    from_http,
    from_json,
    from_kafka,
    read_structured,
    to_http_binary,
    to_http_structured,
    to_json,
    to_kafka,
)
from eventing.events import InvalidEvent

BINARY = {"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/src", "ce-type": "t.one"}
KAFKA = [("ce_specversion", b"1.0"), ("ce_id", b"e-1"), ("ce_source", b"/src"), ("ce_type", b"t.one")]
STAMP = "2026-11-30T09:15:00Z"
MOMENT = datetime(2026, 11, 30, 9, 15, tzinfo=UTC)


def _event(data: object = None, **attributes: object) -> CloudEvent:
    """An event at a fixed time (the SDK stamps the time of day on one without)."""
    return CloudEvent(
        {"specversion": "1.0", "id": "e-1", "source": "/src", "type": "t.one", "time": MOMENT, **attributes}, data
    )


def _structured(**fields: object) -> dict:
    return {"specversion": "1.0", "id": "e-1", "source": "/src", "type": "t.one", **fields}


# -- required attributes and specversion ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "named"),
    [(("id",), "id"), (("id", "type"), "id, type"), (("specversion", "source"), "specversion, source")],
)
def test_every_missing_required_attribute_is_named_with_where_it_was_looked_for(missing, named) -> None:
    structured = {k: v for k, v in _structured().items() if k not in missing}
    with pytest.raises(InvalidEvent, match=rf"^not a valid CloudEvent: missing required field\(s\) {named}$"):
        read_structured(structured)
    headers = {k: v for k, v in BINARY.items() if k[3:] not in missing}
    with pytest.raises(InvalidEvent, match=rf"^not a valid CloudEvent: missing required header ce-\(s\) {named}$"):
        from_http(headers, b"")
    record = [(k, v) for k, v in KAFKA if k[3:] not in missing]
    with pytest.raises(InvalidEvent, match=rf"^not a valid CloudEvent: missing required header ce_\(s\) {named}$"):
        from_kafka(record, None, b"")


def test_an_empty_required_attribute_counts_as_missing() -> None:
    with pytest.raises(InvalidEvent, match=r"missing required field\(s\) source$"):
        read_structured(_structured(source=""))
    with pytest.raises(InvalidEvent, match=r"missing required header ce-\(s\) type$"):
        from_http({**BINARY, "ce-type": ""}, b"")


@pytest.mark.parametrize("version", ["0.3", "1.1", "1"])
def test_only_specversion_1_0_is_spoken_and_the_refusal_names_the_version(version: str) -> None:
    reason = rf"^unsupported specversion '{version}'; knflow speaks CloudEvents 1.0$"
    with pytest.raises(InvalidEvent, match=reason):
        read_structured(_structured(specversion=version))
    with pytest.raises(InvalidEvent, match=reason):
        from_http({**BINARY, "ce-specversion": version}, b"")
    with pytest.raises(InvalidEvent, match=reason):
        from_kafka([*KAFKA[1:], ("ce_specversion", version.encode())], None, b"")


def test_a_structured_event_must_be_a_json_object() -> None:
    for raw in ([], "event", None, 1):
        with pytest.raises(InvalidEvent, match=r"^structured event must be a JSON object$"):
            read_structured(raw)


# -- time -------------------------------------------------------------------------------------------------------------


def test_time_is_read_as_rfc_3339_in_every_mode_and_written_in_utc_with_z() -> None:
    stamp, moment = STAMP, MOMENT
    assert read_structured(_structured(time=stamp)).get_time() == moment
    assert from_http({**BINARY, "ce-time": stamp}, b"").get_time() == moment
    assert from_kafka([*KAFKA, ("ce_time", stamp.encode())], None, b"").get_time() == moment
    assert orjson.loads(to_json(_event(time=moment)))["time"] == stamp
    assert to_http_binary(_event(time=moment))[0]["ce-time"] == stamp


def test_a_time_that_is_not_rfc_3339_is_refused_naming_it() -> None:
    with pytest.raises(InvalidEvent, match=r"^attribute time 'yesterday' is not RFC 3339$"):
        read_structured(_structured(time="yesterday"))
    with pytest.raises(InvalidEvent, match=r"^not a valid CloudEvent: "):
        from_http({**BINARY, "ce-time": "yesterday"}, b"")
    with pytest.raises(InvalidEvent, match=r"^not a valid CloudEvent: "):
        from_kafka([*KAFKA, ("ce_time", b"yesterday")], None, b"")


def test_an_attribute_the_sdk_refuses_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match=r"^not a valid CloudEvent: "):
        read_structured(_structured(source=5))
    with pytest.raises(InvalidEvent, match=r"^not a valid CloudEvent: "):
        read_structured(_structured(**{"Bad-Name": "x"}))


# -- structured mode and its data -------------------------------------------------------------------------------------


def test_data_base64_is_decoded_to_bytes_and_data_wins_over_it() -> None:
    encoded = base64.b64encode(b"\x00\xff").decode()
    assert read_structured(_structured(data_base64=encoded)).get_data() == b"\x00\xff"
    assert read_structured(_structured(data={"k": 1}, data_base64=encoded)).get_data() == {"k": 1}
    assert read_structured(_structured()).get_data() is None
    event = read_structured(_structured(data_base64=encoded))
    assert "data_base64" not in event.get_attributes() and "data" not in event.get_attributes()


@pytest.mark.parametrize("encoded", ["not base64!", "AQ I=", "AQI=\n", "AQ*I="])
def test_data_base64_that_is_not_strictly_base64_is_refused(encoded: str) -> None:
    with pytest.raises(InvalidEvent, match=r"^data_base64 is not valid base64$"):
        read_structured(_structured(data_base64=encoded))


def test_structured_writing_puts_bytes_in_data_base64_json_as_it_is_and_other_types_as_text() -> None:
    assert orjson.loads(to_json(_event(b"\x01\x02")))["data_base64"] == "AQI="
    assert "data" not in orjson.loads(to_json(_event(b"\x01\x02")))
    assert orjson.loads(to_json(_event({"k": [1, None]})))["data"] == {"k": [1, None]}
    assert orjson.loads(to_json(_event({"k": 1}, datacontenttype="application/json")))["data"] == {"k": 1}
    assert orjson.loads(to_json(_event({"k": 1}, datacontenttype="text/plain")))["data"] == "{'k': 1}"
    written = orjson.loads(to_json(_event()))
    assert "data" not in written and "data_base64" not in written
    assert written == _structured(time=STAMP)


def test_structured_http_answers_with_the_structured_content_type() -> None:
    headers, body = to_http_structured(_event({"k": 1}))
    assert headers == {"content-type": STRUCTURED_CONTENT_TYPE}
    assert orjson.loads(body) == _structured(time=STAMP, data={"k": 1})


def test_bytes_inside_json_data_are_written_as_base64_and_other_objects_are_refused() -> None:
    assert orjson.loads(to_json(_event({"blob": b"\x01\x02"})))["data"] == {"blob": "AQI="}
    assert orjson.loads(FORMAT.write_data({"blob": bytearray(b"\x01")}, None)) == {"blob": "AQ=="}
    with pytest.raises(TypeError, match="not JSON serializable"):
        to_json(_event({"thing": object()}))


def test_structured_mode_is_taken_with_parameters_and_in_any_header_case() -> None:
    body = orjson.dumps(_structured(data={"k": 1}))
    for content_type in (STRUCTURED_CONTENT_TYPE, f"{STRUCTURED_CONTENT_TYPE}; charset=utf-8"):
        assert from_http({"Content-Type": content_type}, body).get_data() == {"k": 1}


def test_invalid_structured_json_names_what_is_wrong() -> None:
    with pytest.raises(InvalidEvent, match=r"^structured event is not valid JSON: "):
        from_json(b"{nope")


def test_neither_mode_names_both_ways_to_send_an_event() -> None:
    reason = (
        r"^not a CloudEvent: expected binary mode \(ce-specversion, ce-id, ce-source, ce-type headers\) "
        r"or structured mode \(Content-Type: application/cloudevents\+json\)$"
    )
    with pytest.raises(InvalidEvent, match=reason):
        from_http({"content-type": "application/json"}, b"{}")
    with pytest.raises(InvalidEvent, match=reason):
        from_http({}, orjson.dumps(_structured()))


def test_a_batch_where_one_event_was_expected_is_refused_saying_so() -> None:
    reason = r"^batched CloudEvents where one event was expected \(the broker's ingress takes batches\)$"
    with pytest.raises(InvalidEvent, match=reason):
        from_http({"content-type": f"{BATCH_CONTENT_TYPE}; charset=utf-8"}, orjson.dumps([_structured()]))


# -- batches ----------------------------------------------------------------------------------------------------------


def test_a_batch_is_read_in_order() -> None:
    events = from_batch(orjson.dumps([_structured(id="a"), _structured(id="b", data="x")]))
    assert [e.get_id() for e in events] == ["a", "b"] and events[1].get_data() == "x"
    assert from_batch(b"[]") == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[{", "^batch is not valid JSON: "),
        (b'{"id": "a"}', "^a batch must be a JSON array of structured events$"),
        (orjson.dumps([_structured(), []]), "^batch item 1: structured event must be a JSON object$"),
        (orjson.dumps([_structured(id="")]), r"^batch item 0: not a valid CloudEvent: missing required field\(s\) id$"),
    ],
)
def test_a_batch_refusal_names_the_item(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        from_batch(body)


# -- binary mode and its data -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "data"),
    [
        (None, b'{"k": 1}', {"k": 1}),
        ("application/json", b"[1, 2]", [1, 2]),
        ("application/vnd.knflow+json", b'"s"', "s"),
        ("text/plain", "é ✓".encode(), "é ✓"),
        ("text/csv; charset=utf-8", b"a,b", "a,b"),
        ("application/octet-stream", b"\x00\x01", b"\x00\x01"),
        ("application/json", b"", None),
        ("text/plain", b"", None),
    ],
)
def test_binary_data_is_decoded_by_its_content_type(content_type, body, data) -> None:
    headers = {**BINARY, **({"content-type": content_type} if content_type else {})}
    assert from_http(headers, body).get_data() == data


def test_binary_data_that_does_not_fit_its_content_type_is_refused_naming_the_type() -> None:
    with pytest.raises(
        InvalidEvent, match=r"^event data is not valid JSON though its content type is application/json: "
    ):
        from_http(BINARY, b"{broken")
    with pytest.raises(InvalidEvent, match=r"^event data is not valid JSON though its content type is text/json: "):
        from_http({**BINARY, "content-type": "text/json"}, b"{broken")
    with pytest.raises(InvalidEvent, match=r"^event data is not UTF-8 text \(text/plain\)$"):
        from_http({**BINARY, "content-type": "text/plain"}, b"\xff\xfe")


@pytest.mark.parametrize(
    ("data", "content_type", "body"),
    [
        ({"k": 1}, "application/json", b'{"k":1}'),
        ("plain", "text/plain", b"plain"),
        (b"\x00", "application/octet-stream", b"\x00"),
        (bytearray(b"\x01"), "application/octet-stream", b"\x01"),
        (None, None, b""),
    ],
)
def test_binary_mode_writes_the_data_as_its_bytes(data, content_type, body) -> None:
    attributes = {"datacontenttype": content_type} if content_type else {}
    headers, written = to_http_binary(_event(data, **attributes))
    assert written == body and isinstance(written, bytes)
    assert headers.get("content-type") == content_type


def test_times_inside_json_data_are_written_in_utc_with_z() -> None:
    assert to_http_binary(_event({"at": MOMENT}))[1] == b'{"at":"2026-11-30T09:15:00Z"}'
    assert to_kafka(_event({"at": MOMENT}))[2] == b'{"at":"2026-11-30T09:15:00Z"}'
    assert orjson.loads(to_json(_event({"at": MOMENT})))["data"] == {"at": STAMP}


def test_extensions_travel_as_ce_headers_both_ways() -> None:
    headers, _ = to_http_binary(_event({"k": 1}, runid="run-9", mode="train"))
    assert headers["ce-runid"] == "run-9" and headers["ce-mode"] == "train"
    event = from_http({**BINARY, "ce-runid": "run-9", "CE-Mode": "train"}, b"")
    assert event.get_extension("runid") == "run-9" and event.get_extension("mode") == "train"


def test_a_ce_header_that_is_not_text_is_refused_naming_it() -> None:
    with pytest.raises(InvalidEvent, match=r"^header ce-subject is not valid UTF-8 text$"):
        from_http({**BINARY, "ce-subject": "caf\udce9"}, b"")
    assert from_http({**BINARY, "x-other": "caf\udce9"}, b"").get_id() == "e-1"  # only ce- headers are attributes


def test_binary_mode_wins_over_a_structured_content_type() -> None:
    event = from_http({**BINARY, "content-type": "application/json"}, b'{"k": 1}')
    assert event.get_data() == {"k": 1} and event.get_id() == "e-1"


# -- Kafka ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extensions", "key"),
    [
        ({"partitionkey": "run-1/trial-2", "runid": "run-1"}, b"run-1/trial-2"),
        ({"runid": "run-1"}, b"run-1"),
        ({}, None),
        ({"partitionkey": "", "runid": ""}, None),
    ],
)
def test_the_kafka_key_is_the_partition_key_else_the_runid_else_none(extensions, key) -> None:
    assert to_kafka(_event({"k": 1}, **extensions))[0] == key


def test_kafka_binary_mode_writes_ce_headers_and_the_data() -> None:
    _, headers, value = to_kafka(_event({"k": 1}, runid="run-1", datacontenttype="application/json"))
    assert isinstance(headers, list)
    assert dict(headers) == {
        "ce_specversion": b"1.0",
        "ce_id": b"e-1",
        "ce_source": b"/src",
        "ce_type": b"t.one",
        "ce_runid": b"run-1",
        "ce_time": STAMP.encode(),
        "content-type": b"application/json",
    }
    assert value == b'{"k":1}'


def test_kafka_headers_are_read_from_pairs_or_a_mapping_in_any_case() -> None:
    pairs = [(name.upper(), raw) for name, raw in KAFKA]
    assert from_kafka(pairs, None, b"").get_type() == "t.one"
    mapping = {**dict(KAFKA), "content-type": b"text/plain", "x-other": None}
    event = from_kafka(mapping, None, b"hello")  # type: ignore[dict-item]  # a header without a value, as clients hand it
    assert event.get_data() == "hello"


def test_a_kafka_header_without_a_value_is_an_empty_one() -> None:
    with pytest.raises(InvalidEvent, match="subject"):  # an empty subject is not a subject
        from_kafka({**dict(KAFKA), "ce_subject": None}, None, b"")  # type: ignore[dict-item]  # as clients hand it
    with pytest.raises(InvalidEvent, match=r"missing required header ce_\(s\) id$"):
        from_kafka({**dict(KAFKA), "ce_id": None}, None, b"")  # type: ignore[dict-item]  # as clients hand it
    body = orjson.dumps(_structured(data={"k": 1}))
    assert from_kafka({"content-type": None}, None, body).get_data() == {"k": 1}  # type: ignore[dict-item]  # as clients hand it


def test_a_kafka_header_that_is_not_utf8_is_an_invalid_event_not_a_crash() -> None:
    with pytest.raises(InvalidEvent, match=r"^not a valid CloudEvent: 'utf-8' codec can't decode"):
        from_kafka([*KAFKA, ("ce_subject", b"caf\xe9")], None, b"")
    with pytest.raises(InvalidEvent, match=r"^unsupported specversion '1\.\ufffd'"):  # checked before the SDK reads it
        from_kafka([*KAFKA[1:], ("ce_specversion", b"1.\xff")], None, b"")


def test_a_kafka_key_is_not_copied_into_an_extension_when_the_run_or_partition_travels_as_a_header() -> None:
    for extra in (("ce_runid", b"run-1"), ("ce_partitionkey", b"k")):
        event = from_kafka([*KAFKA, extra], b"run-1", b"")
        assert set(event.get_attributes()) == {"specversion", "id", "source", "type", extra[0][3:]}
        assert event.get_extension(extra[0][3:]) == extra[1].decode()  # the header's value, not the key's
    keyed = from_kafka(KAFKA, b"bucket/key", b"")
    assert keyed.get_extension("partitionkey") == "bucket/key"


def test_a_kafka_key_that_is_not_utf8_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match=r"^not a valid CloudEvent: "):
        from_kafka(KAFKA, b"\xff\xfe", b"")


def test_kafka_structured_mode_is_taken_with_its_content_type_or_none() -> None:
    body = orjson.dumps(_structured(data={"k": 1}))
    assert from_kafka([], None, body).get_data() == {"k": 1}
    assert from_kafka([("content-type", STRUCTURED_CONTENT_TYPE.encode())], None, body).get_data() == {"k": 1}
    assert from_kafka({"Content-Type": b"application/cloudevents+json; charset=utf-8"}, None, body).get_id() == "e-1"


def test_a_kafka_record_in_neither_mode_is_refused_naming_its_content_type() -> None:
    reason = r"^Kafka record is not a CloudEvent \(content-type 'application/json', no ce_ headers\)$"
    with pytest.raises(InvalidEvent, match=reason):
        from_kafka([("content-type", b"application/json")], None, b"{}")


def test_an_event_sent_without_a_time_is_read_without_one_by_either_codec() -> None:
    """Reading does not invent when something happened (the SDK's constructor stamps the time of reading): an event
    keeps the attributes it was sent with, so the broker stores, delivers and reads it again unchanged."""
    structured = orjson.dumps(_structured(data={"k": 1}))
    reads = {
        "binary": lambda codec: codec.from_http(BINARY, b""),
        "binary, %-encoded value": lambda codec: codec.from_http({**BINARY, "ce-subject": "a%20b"}, b""),
        "structured": lambda codec: codec.from_http({"content-type": STRUCTURED_CONTENT_TYPE}, structured),
        "json": lambda codec: codec.from_json(structured),
        "kafka": lambda codec: codec.from_kafka(KAFKA, None, b""),
    }
    for name, read in reads.items():
        for codec in (bindings, wire):
            event = read(codec)
            assert event.get_time() is None and "time" not in event.get_attributes(), (name, codec.__name__)
            assert isinstance(event, CloudEvent)
