"""infra.durations: one ISO-8601 grammar for trigger delivery specs, pipeline specs and Knative manifests."""

from __future__ import annotations

import math
import re

import pytest

from eventing.triggers import DeliverySpec
from infra import knative
from infra.durations import format_duration, parse_duration
from infra.errors import ConfigError, InvalidRequest

VALID = [
    ("PT0.2S", 0.2),
    ("PT1S", 1.0),
    ("PT1M", 60.0),
    ("PT1M30S", 90.0),
    ("PT1H", 3600.0),
    ("PT1.5H", 5400.0),
    ("P1D", 86400.0),
    ("P1DT1H", 90000.0),
    ("P0.5DT0.5H0.5M0.5S", 43200 + 1800 + 30 + 0.5),
    ("PT0S", 0.0),
    ("PT10000S", 10000.0),
    (1.5, 1.5),
    (0, 0.0),
    (300, 300.0),
]

INVALID = [
    "P",  # no part at all (both former grammars refused it)
    "PT",  # a T with no time part
    "P1DT",  # a T with no time part after days (the trigger grammar took it, Knative's did not)
    "0.2s",  # not ISO-8601
    "500ms",
    "1",  # a bare number written as a string is not a duration
    "-PT1S",  # no sign
    "PT-1S",
    "PT1X",  # unknown designator
    "P1W",  # weeks, months and years have no fixed length in seconds
    "P1M",
    "P1Y",
    "PT1S1M",  # parts out of order
    "PT.5S",  # a decimal needs its integer digits
    "PT1.S",
    "pt1s",  # designators are upper case
    " PT1S",  # no surrounding blanks (the trigger grammar stripped them, Knative's did not)
    "PT1S ",
    -1,  # seconds must not be negative
    math.inf,
    math.nan,
    True,  # a boolean is not a number of seconds
    [1],
]


@pytest.mark.parametrize(("value", "seconds"), VALID)
def test_valid_durations_read_as_seconds(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", INVALID, ids=repr)
def test_invalid_durations_are_refused_naming_the_value(value: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_duration(value)  # type: ignore[arg-type]  # the table holds values of the wrong type on purpose
    assert repr(value) in str(caught.value)


def test_no_duration_reads_as_none() -> None:
    assert parse_duration(None) is None
    assert parse_duration("") is None


@pytest.mark.parametrize("seconds", [0.2, 1.0, 90.0, 1e-5, 1e6, 123.456, 0.0])
def test_formatted_durations_read_back_as_the_same_seconds(seconds: float) -> None:
    text = format_duration(seconds)
    assert text.startswith("PT") and "e" not in text.lower().replace("pt", "")
    assert parse_duration(text) == pytest.approx(seconds)


def test_trigger_delivery_spec_uses_the_one_grammar() -> None:
    assert DeliverySpec(backoff_delay="PT0.5S", timeout="PT1M").to_spec()["timeout"] == "PT60S"
    with pytest.raises(InvalidRequest, match="'P1DT'"):
        DeliverySpec(timeout="P1DT")


@pytest.mark.parametrize("value", [v for v in INVALID if isinstance(v, str)] + [5])
def test_knative_manifest_check_uses_the_one_grammar(value: object) -> None:
    subscriber = knative.ref(knative.SERVING, "Service", "fn-a")
    trigger = knative.trigger("t", "ml", "b", {"type": "x.y"}, subscriber, {"backoffDelay": value})
    with pytest.raises(ConfigError, match=r"Trigger/t: spec\.delivery\.backoffDelay .* is not an ISO-8601 duration"):
        knative._check_rules(trigger)


@pytest.mark.parametrize(("value", "seconds"), [(v, s) for v, s in VALID if isinstance(v, str)])
def test_knative_manifest_check_takes_what_triggers_take(value: str, seconds: float) -> None:
    subscriber = knative.ref(knative.SERVING, "Service", "fn-a")
    knative._check_rules(knative.trigger("t", "ml", "b", {"type": "x.y"}, subscriber, {"timeout": value}))


@pytest.mark.parametrize("seconds", [-1, -0.5, math.inf, -math.inf, math.nan])
def test_a_negative_or_infinite_number_of_seconds_has_no_duration_to_write(seconds: float) -> None:
    reason = f"duration {seconds!r} must be a finite number of seconds, not negative"
    with pytest.raises(InvalidRequest, match=re.escape(reason)):
        format_duration(seconds)
    with pytest.raises(InvalidRequest, match=re.escape(reason)):
        parse_duration(seconds)
