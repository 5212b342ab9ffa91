"""Triggers' and delivery specs' rules, in process: backoff arithmetic, the delivery spec's defaults, bounds and
durations, trigger names, subscribers, filters, namespaces and the initial-offset annotation, with the
reason each refusal names (``make mutate`` measures ``eventing/triggers.py`` with these)."""

from __future__ import annotations

import pytest

from eventing.triggers import (
    EARLIEST,
    INITIAL_OFFSET_ANNOTATION,
    LATEST,
    DeliverySpec,
    Trigger,
)
from infra.errors import InvalidRequest

URL = "http://127.0.0.1:8181/ingest"

# -- the delivery spec ------------------------------------------------------------------------------------------------


def test_the_delivery_spec_defaults_are_knatives() -> None:
    spec = DeliverySpec()
    assert (spec.retry, spec.backoff_policy, spec.backoff_delay) == (0, "exponential", 0.2)
    assert spec.timeout is None and spec.dead_letter_sink is None and spec.retry_after_max is None


def test_retry_counts_from_0_and_a_negative_count_is_refused() -> None:
    assert DeliverySpec(retry=0).retry == 0
    with pytest.raises(InvalidRequest, match=r"^delivery.retry must not be negative, got -1$"):
        DeliverySpec(retry=-1)


def test_only_exponential_and_linear_backoff_are_known() -> None:
    assert DeliverySpec(backoff_policy="linear").backoff_policy == "linear"
    with pytest.raises(
        InvalidRequest, match=r"^delivery.backoffPolicy must be exponential or linear, got 'fibonacci'$"
    ):
        DeliverySpec(backoff_policy="fibonacci")


def test_each_duration_of_the_spec_is_parsed() -> None:
    spec = DeliverySpec(backoff_delay="PT1S", timeout="PT2S", retry_after_max="PT1M")
    assert (spec.backoff_delay, spec.timeout, spec.retry_after_max) == (1.0, 2.0, 60.0)
    with pytest.raises(InvalidRequest, match=r"^duration 'soon' is not"):
        DeliverySpec(timeout="soon")
    with pytest.raises(InvalidRequest, match=r"^duration 'later' is not"):
        DeliverySpec(retry_after_max="later")


@pytest.mark.parametrize(
    ("policy", "waits"),
    [("exponential", [0.5, 1.0, 2.0, 4.0]), ("linear", [0.5, 1.0, 1.5, 2.0])],
)
def test_backoff_waits_the_delay_before_the_first_retry_then_grows_by_its_policy(policy: str, waits: list) -> None:
    spec = DeliverySpec(retry=4, backoff_policy=policy, backoff_delay=0.5)
    assert [spec.backoff(n) for n in range(4)] == waits


def test_no_backoff_delay_means_no_wait() -> None:
    assert DeliverySpec(backoff_delay="").backoff(3) == 0.0
    assert DeliverySpec(backoff_delay="").to_spec()["backoffDelay"] is None
    assert DeliverySpec(backoff_delay=0, backoff_policy="linear").backoff(2) == 0.0


def test_no_delivery_object_means_no_spec_and_one_that_is_not_an_object_is_refused() -> None:
    assert DeliverySpec.from_spec(None) is None and DeliverySpec.from_spec({}) is None
    with pytest.raises(InvalidRequest, match=r"^delivery must be an object$"):
        DeliverySpec.from_spec(["retry"])  # type: ignore[arg-type]  # what a client may send


def test_knatives_delivery_object_is_read_with_its_defaults() -> None:
    assert DeliverySpec.from_spec({"timeout": "PT5S"}) == DeliverySpec(retry=0, timeout=5.0)  # no retry: one attempt
    spec = DeliverySpec.from_spec({"retry": "2"})
    assert spec == DeliverySpec(retry=2, backoff_policy="exponential", backoff_delay=0.2)
    full = DeliverySpec.from_spec(
        {
            "retry": 3,
            "backoffPolicy": "linear",
            "backoffDelay": "PT1S",
            "timeout": "PT5S",
            "deadLetterSink": "http://127.0.0.1:9/dls",
            "retryAfterMax": "PT30S",
        }
    )
    assert full == DeliverySpec(3, "linear", 1.0, 5.0, "http://127.0.0.1:9/dls", 30.0)


@pytest.mark.parametrize("sink", [{"uri": ""}, {"ref": "x"}, {"uri": 5}, 5, ["http://x"]])
def test_a_dead_letter_sink_must_be_a_uri(sink: object) -> None:
    with pytest.raises(InvalidRequest, match=r"^delivery.deadLetterSink must be \{'uri': 'http://...'\}$"):
        DeliverySpec.from_spec({"retry": 1, "deadLetterSink": sink})


def test_an_empty_dead_letter_sink_is_none() -> None:
    assert DeliverySpec.from_spec({"retry": 1, "deadLetterSink": ""}).dead_letter_sink is None  # type: ignore[union-attr]  # a spec was given
    assert DeliverySpec.from_spec({"deadLetterSink": {"uri": "http://d"}}).dead_letter_sink == "http://d"  # type: ignore[union-attr]  # a spec was given


def test_the_delivery_spec_is_written_back_in_knatives_shape_with_only_what_is_set() -> None:
    assert DeliverySpec().to_spec() == {"retry": 0, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}
    full = DeliverySpec(3, "linear", 1.0, 5.0, "http://127.0.0.1:9/dls", 30.0)
    assert full.to_spec() == {
        "retry": 3,
        "backoffPolicy": "linear",
        "backoffDelay": "PT1S",
        "timeout": "PT5S",
        "deadLetterSink": {"uri": "http://127.0.0.1:9/dls"},
        "retryAfterMax": "PT30S",
    }
    assert DeliverySpec.from_spec(full.to_spec()) == full
    assert DeliverySpec(timeout=0).to_spec()["timeout"] == "PT0S"
    assert DeliverySpec(retry_after_max=0).to_spec()["retryAfterMax"] == "PT0S"


# -- triggers ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "ingest", "my-pipeline.train", "a1", "9", "a" * 63])
def test_a_trigger_name_is_a_dns_label(name: str) -> None:
    assert Trigger(name, URL).name == name


@pytest.mark.parametrize("name", ["", "-a", "a-", ".a", "a.", "Ingest", "in_gest", "a" * 64, "a b"])
def test_a_name_that_is_not_a_dns_label_is_refused(name: str) -> None:
    reason = rf"^trigger name '{name}' must be a DNS label \(lowercase letters, digits, '-'\)$"
    with pytest.raises(InvalidRequest, match=reason):
        Trigger(name, URL)


@pytest.mark.parametrize("subscriber", ["http://x", "https://x/y"])
def test_a_subscriber_is_an_http_or_https_url(subscriber: str) -> None:
    assert Trigger("t", subscriber).subscriber == subscriber


@pytest.mark.parametrize("subscriber", ["ftp://x", "x", "HTTP//x", ""])
def test_a_subscriber_that_is_not_http_is_refused(subscriber: str) -> None:
    with pytest.raises(InvalidRequest, match=rf"^trigger t: subscriber '{subscriber}' must be an http\(s\) URL$"):
        Trigger("t", subscriber)


def test_the_initial_offset_is_latest_or_earliest() -> None:
    assert Trigger("t", URL).initial_offset == LATEST == "latest"
    assert Trigger("t", URL, initial_offset=EARLIEST).initial_offset == "earliest"
    reason = rf"^trigger t: {INITIAL_OFFSET_ANNOTATION} must be latest or earliest, got 'oldest'$"
    with pytest.raises(InvalidRequest, match=reason):
        Trigger("t", URL, initial_offset="oldest")


def test_the_filters_dialect_is_checked_when_a_trigger_is_made() -> None:
    with pytest.raises(InvalidRequest):
        Trigger("t", URL, filters=[{"regex": {"type": "x"}}])
    assert Trigger("t", URL, filters=[]).filters == []


@pytest.mark.parametrize(
    ("filter", "filters", "namespace"),
    [
        (None, None, "default"),
        ({"namespace": "team-a"}, None, "team-a"),
        ({"type": "x"}, None, "default"),
        ({"namespace": ""}, None, "default"),
        ({"namespace": "team-a"}, [{"exact": {"namespace": "team-b"}}], "team-b"),
        (None, [{"prefix": {"namespace": "team"}}, {"exact": {"type": "x"}}], "default"),
        (None, [{"exact": {"type": "x"}}, {"exact": {"namespace": "team-c"}}], "team-c"),
        (None, [{"exact": {"namespace": "team-c"}}, {"exact": {"namespace": "team-d"}}], "team-c"),
    ],
)
def test_a_triggers_namespace_is_the_one_its_filters_name_exactly_else_default(filter, filters, namespace) -> None:
    assert Trigger("t", URL, filter=filter, filters=filters).namespace == namespace


def test_a_knative_trigger_spec_is_read_bare_or_as_a_resource_with_its_annotation() -> None:
    spec = {"filter": {"attributes": {"type": "a"}}, "subscriber": {"uri": URL}, "delivery": {"retry": 2}}
    bare = Trigger.from_spec("t", spec)
    assert bare == Trigger("t", URL, filter={"type": "a"}, delivery=DeliverySpec(retry=2))
    resource = {"metadata": {"annotations": {INITIAL_OFFSET_ANNOTATION: "earliest"}}, "spec": spec}
    assert Trigger.from_spec("t", resource).initial_offset == "earliest"
    assert Trigger.from_spec("t", {"metadata": {}, "spec": spec}).initial_offset == "latest"
    assert Trigger.from_spec("t", {"metadata": None, "spec": spec}).initial_offset == "latest"
    assert Trigger.from_spec("t", {"subscriber": URL}).subscriber == URL


def test_an_empty_filter_or_filters_is_none() -> None:
    trigger = Trigger.from_spec("t", {"subscriber": {"uri": URL}, "filter": {"attributes": {}}, "filters": []})
    assert trigger.filter is None and trigger.filters is None and trigger.delivery is None
    assert Trigger.from_spec("t", {"subscriber": {"uri": URL}, "filter": {}}).filter is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "^trigger spec must be a JSON object$"),
        ({"spec": []}, "^trigger spec must be a JSON object$"),
        ({"subscriber": {"uri": URL}, "filter": {"attributes": {"type": 1}}}, "^filter.attributes must map attribute"),
        ({"subscriber": {"uri": URL}, "filter": {"attributes": ["type"]}}, "^filter.attributes must map attribute"),
        ({"subscriber": {"uri": URL}, "filters": {"exact": {}}}, "^filters must be a list of filter expressions$"),
        ({"subscriber": {"url": URL}}, r"^subscriber must be \{'uri': 'http://...'\}$"),
        ({"metadata": {"annotations": []}, "spec": {"subscriber": URL}}, "^metadata.annotations must be an object$"),
    ],
)
def test_a_malformed_trigger_spec_is_refused_naming_the_part(body: object, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        Trigger.from_spec("t", body)  # type: ignore[arg-type]  # what a client may send


def test_metadata_that_is_not_an_object_carries_no_annotations() -> None:
    assert Trigger.from_spec("t", {"metadata": ["x"], "spec": {"subscriber": URL}}).initial_offset == "latest"


def test_a_trigger_is_written_back_with_only_what_it_has() -> None:
    assert Trigger("t", URL).to_spec() == {"subscriber": {"uri": URL}}
    assert Trigger("t", URL).to_resource() == {"spec": {"subscriber": {"uri": URL}}}
    full = Trigger(
        "t",
        URL,
        filter={"type": "a"},
        filters=[{"exact": {"source": "s"}}],
        delivery=DeliverySpec(retry=1),
        initial_offset=EARLIEST,
    )
    assert full.to_spec() == {
        "subscriber": {"uri": URL},
        "filter": {"attributes": {"type": "a"}},
        "filters": [{"exact": {"source": "s"}}],
        "delivery": {"retry": 1, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"},
    }
    assert full.to_resource() == {
        "spec": full.to_spec(),
        "metadata": {"annotations": {INITIAL_OFFSET_ANNOTATION: "earliest"}},
    }
    assert Trigger.from_spec("t", full.to_resource()) == full
