"""Trigger filter rules, each on both sides of its boundary: what every dialect takes and refuses, how attributes
are compared, and the reason a malformed expression is refused with."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.v1.event import CloudEvent

from eventing import bindings, wire
from eventing.events import new_event
from eventing.filters import attribute, matches, validate_filters
from infra.errors import InvalidRequest


def event() -> CloudEvent:
    return new_event("a.b.c", "src/1", {"k": 1}, subject="raw/x.csv", extensions={"tenant": "t1", "size": 42})


@pytest.mark.parametrize(
    ("expression", "taken"),
    [
        ({"exact": {"type": "a.b.c", "tenant": "t1"}}, True),  # every attribute of one expression must match
        ({"exact": {"type": "a.b.c", "tenant": "t2"}}, False),
        ({"exact": {"tenant": "t2", "type": "a.b.c"}}, False),
        ({"exact": {"type": "a.b.c", "missing": "x"}}, False),  # an absent attribute never matches
        ({"exact": {"size": "42"}}, True),  # extensions compare as strings
        ({"any": [{"exact": {"type": "x"}}, {"exact": {"type": "a.b.c"}}]}, True),
        ({"any": [{"exact": {"type": "x"}}, {"exact": {"type": "y"}}]}, False),
        ({"all": [{"prefix": {"type": "a."}}, {"suffix": {"subject": ".csv"}}]}, True),
        ({"all": [{"prefix": {"type": "a."}}, {"suffix": {"subject": ".tsv"}}]}, False),
        ({"not": {"exact": {"type": "a.b.c"}}}, False),
        ({"not": {"any": [{"exact": {"type": "x"}}]}}, True),
    ],
)
def test_each_dialect_takes_exactly_what_it_says(expression: dict[str, Any], taken: bool) -> None:
    assert matches(event(), None, [expression]) is taken


def test_every_expression_of_filters_must_match() -> None:
    assert matches(event(), None, [{"exact": {"type": "a.b.c"}}, {"prefix": {"subject": "raw/"}}])
    assert not matches(event(), None, [{"exact": {"type": "a.b.c"}}, {"prefix": {"subject": "cooked/"}}])
    assert not matches(event(), None, [{"exact": {"type": "x"}}, {"prefix": {"subject": "raw/"}}])


def test_filter_attributes_all_must_equal_and_none_or_empty_takes_everything() -> None:
    assert matches(event(), {"type": "a.b.c", "tenant": "t1"}, None)
    assert not matches(event(), {"type": "a.b.c", "tenant": "t2"}, None)
    assert matches(event(), {}, None) and matches(event(), None, [])


def test_time_compares_in_the_z_form_events_are_sent_in() -> None:
    at = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
    stamped = CloudEvent({"id": "1", "source": "/s", "type": "t", "specversion": "1.0", "time": at})
    assert attribute(stamped, "time") == "2026-05-01T12:30:00Z"
    assert matches(stamped, None, [{"exact": {"time": "2026-05-01T12:30:00Z"}}])
    assert matches(stamped, None, [{"prefix": {"time": "2026-05-01T"}}])
    assert not matches(stamped, None, [{"exact": {"time": "2026-05-01T12:30:00+00:00"}}])


def test_no_codec_lets_an_extension_named_data_through() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", "ce-data": "x"}
    headers["content-type"] = "application/json"
    for decode in (wire.from_http, bindings.from_http):
        with pytest.raises(InvalidRequest, match="data"):
            decode(headers, b"{}")
    assert attribute(event(), "data") is None  # the payload is not an attribute


@pytest.mark.parametrize(
    ("filters", "reason"),
    [
        (["exact"], "must be an object with exactly one dialect key"),
        ([{}], "must be an object with exactly one dialect key"),
        ([{"exact": {"type": "t"}, "prefix": {"type": "t"}}], "exactly one dialect key"),
        ([{"exact": {}}], "'exact' must map attribute names to strings"),
        ([{"exact": ["type"]}], "'exact' must map attribute names to strings"),
        ([{"prefix": {"type": 1}}], "'prefix' must map attribute names to strings"),
        ([{"prefix": {"type": ""}}], "'prefix' values must not be empty"),
        ([{"suffix": {"type": "x", "subject": ""}}], "'suffix' values must not be empty"),
        ([{"all": []}], "'all' must be a non-empty list"),
        ([{"any": {"exact": {"type": "t"}}}], "'any' must be a non-empty list"),
        ([{"any": [{"exact": {"type": "t"}}, {"regex": {"type": "t"}}]}], "unknown filter dialect 'regex'"),
        ([{"all": [{"exact": {"type": "t"}}, {"exact": {}}]}], "'exact' must map"),
        ([{"not": {"prefix": {"type": ""}}}], "'prefix' values must not be empty"),
        ([{"exact": {"type": "t"}}, {"cesql": "type = 't'"}], "unknown filter dialect 'cesql'"),
    ],
)
def test_a_malformed_expression_is_refused_naming_what_is_wrong(filters: list[Any], reason: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validate_filters(filters)
    assert reason in refused.value.message


@pytest.mark.parametrize(
    "filters",
    [
        [{"exact": {"type": ""}}],  # exact may ask for an empty value, prefix and suffix may not
        [{"all": [{"exact": {"type": "t"}}]}, {"not": {"suffix": {"subject": ".csv"}}}],
        [{"any": [{"prefix": {"type": "a"}}, {"not": {"exact": {"type": "b"}}}]}],
    ],
)
def test_well_formed_expressions_are_accepted(filters: list[Any]) -> None:
    validate_filters(filters)
