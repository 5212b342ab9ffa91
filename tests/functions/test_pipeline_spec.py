"""Pipeline specs: what a spec file may say, how each mistake is refused (naming the field), the shipped schema,
loops, unknown functions, and the triggers a spec becomes."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from eventing.events import new_event
from eventing.filters import matches
from functions.contract import builtin_emits, lifecycle_spec_path
from functions.runtime.pipeline import (
    check_functions,
    instance_name,
    load_pipeline,
    parse_pipeline,
    pipeline_triggers,
    schema,
    schema_path,
)
from infra.errors import InvalidRequest


def spec(*steps: dict[str, Any], name: str = "mine", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "knflow.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": name},
            "spec": {"steps": list(steps), **extra}}  # fmt: skip


def step(name: str, function: str, *types: str, emits: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "function": function, "triggers": [{"filter": {"type": t}} for t in types],
            "emits": emits or [], **extra}  # fmt: skip


def known(hosted: set[str] = frozenset()):  # type: ignore[no-untyped-def,assignment]
    builtin = builtin_emits()
    return lambda s: builtin.get(s.function, () if s.function in hosted else None)


def test_the_shipped_lifecycle_parses_and_checks() -> None:
    lifecycle = load_pipeline(lifecycle_spec_path())
    check_functions(lifecycle, known())
    assert [s.name for s in lifecycle.steps] == [
        "ingest", "featurize", "train", "tune", "register", "deploy", "drift", "retrain",
    ]  # fmt: skip


def test_the_shipped_schema_is_current_and_accepts_the_lifecycle() -> None:
    assert json.loads(schema_path().read_text()) == schema()
    jsonschema.validate(yaml.safe_load(lifecycle_spec_path().read_text()), schema())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not: yaml: [", "not valid YAML"),
        ({**spec(step("a", "ingest", "t")), "kind": "Job"}, "kind"),
        (spec(step("a", "ingest", "t"), name="Bad_Name"), "metadata.name"),
        (spec(), "spec.steps"),
        (spec(step("a", "ingest", "t"), step("a", "featurize", "u")), "step names must be unique"),
        (spec({"name": "a", "function": "ingest", "triggers": []}), "spec.steps.0.triggers"),
        (spec({"name": "a", "function": "ingest", "triggers": [{}]}), "needs a filter"),
        (spec({"name": "a", "function": "ingest", "triggers": [{"filter": {"type": 5}}]}), "filter.type"),
        (
            spec({"name": "a", "function": "ingest", "triggers": [{"filters": [{"near": {"type": "t"}}]}]}),
            "unknown filter dialect",
        ),
        (spec({"name": "a", "function": "ingest", "triggers": [{"filter": {"pipeline": "x"}}]}), "set by knflow"),
        (spec(step("a", "ingest", "t", delivery={"backoffDelay": "soon"})), "ISO-8601"),
        (spec(step("a", "ingest", "t", delivery={"retry": -1})), "delivery.retry"),
        (spec(step("a", "ingest", "t", delivery={"backoffPolicy": "random"})), "backoffPolicy"),
        (spec(step("a", "ingest", "t", surprise=1)), "surprise"),
        (
            spec(
                {"name": "a", "function": "ingest", "triggers": [{"filter": {"type": "t"}}, {"filter": {"type": "u"}}]}
            ),
            "different name",
        ),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(raw: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_pipeline(raw if isinstance(raw, str) else yaml.safe_dump(raw), "p.yaml")


def test_a_step_that_takes_its_own_output_is_refused_as_a_loop() -> None:
    looping = parse_pipeline(spec(step("retry", "notify", "acme.x", emits=["acme.x"])))
    with pytest.raises(InvalidRequest, match="loop on its own output"):
        check_functions(looping, known({"notify"}))


def test_a_built_in_step_that_would_take_its_own_output_is_refused() -> None:
    # ingest answers dataset.ingested whether or not the spec says so
    looping = parse_pipeline(spec(step("again", "ingest", "dev.knflow.dataset.ingested")))
    with pytest.raises(InvalidRequest, match="mine-again"):
        check_functions(looping, known())


def test_a_trigger_without_a_type_takes_everything_and_so_its_own_output() -> None:
    raw = spec({"name": "all", "function": "ingest", "triggers": [{"filter": {"source": "x"}}]})
    with pytest.raises(InvalidRequest, match="loop"):
        check_functions(parse_pipeline(raw), known())


def test_filters_that_exclude_the_output_type_are_not_a_loop() -> None:
    filters = [{"prefix": {"type": "dev.knflow."}}, {"not": {"exact": {"type": "x"}}}]
    raw = spec({"name": "a", "function": "notify", "emits": ["acme.sent"], "triggers": [{"filters": filters}]})
    check_functions(parse_pipeline(raw), known({"notify"}))


def test_an_unknown_function_is_refused_naming_it() -> None:
    with pytest.raises(InvalidRequest, match="unknown function 'nope'"):
        check_functions(parse_pipeline(spec(step("a", "nope", "t"))), known())


def test_triggers_are_named_by_pipeline_and_step_and_take_only_their_pipeline() -> None:
    raw = spec(step("check", "validate", "dev.knflow.dataset.ingested"), step("feat", "featurize", "acme.validated"))
    parsed = parse_pipeline(raw)
    triggers = pipeline_triggers(parsed, lambda s: f"http://runner/functions/{instance_name(parsed, s)}")
    assert [t.name for t in triggers] == ["mine-check", "mine-feat"]
    ours = new_event("acme.validated", "/t", {}, extensions={"pipeline": "mine"})
    theirs = new_event("acme.validated", "/t", {}, extensions={"pipeline": "lifecycle"})
    assert matches(ours, triggers[1].filter, triggers[1].filters)
    assert not matches(theirs, triggers[1].filter, triggers[1].filters)


def test_a_step_with_settings_gets_an_instance_of_its_own() -> None:
    parsed = parse_pipeline(spec(step("check", "validate", "t", settings={"min_rows": 100}), step("f", "echo", "u")))
    assert [instance_name(parsed, s) for s in parsed.steps] == ["mine-check", "echo"]


def test_step_delivery_overrides_the_pipeline_defaults_field_by_field() -> None:
    parsed = parse_pipeline(
        spec(step("a", "echo", "t", delivery={"timeout": "PT30M"}), delivery={"retry": 5, "backoffDelay": "PT1S"})
    )
    (trigger,) = pipeline_triggers(parsed, lambda s: "http://runner/functions/echo")
    assert trigger.delivery is not None
    assert (trigger.delivery.retry, trigger.delivery.backoff_delay, trigger.delivery.timeout) == (5, 1.0, 1800.0)
