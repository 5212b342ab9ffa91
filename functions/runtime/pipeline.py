"""Pipelines as data: a spec file lists steps, each a function with the events it takes (Knative trigger
filters), what it answers with, its delivery policy and optional settings.

``parse_pipeline`` reads and checks a spec (YAML or JSON, the schema is ``pipeline.schema.json`` beside this
module); ``check_functions`` refuses steps whose function nobody hosts and steps that take their own output;
``pipeline_triggers`` turns a spec into the broker's triggers — the same ones, name for name, that
``knflow manifests`` renders as Knative Triggers. Every trigger of a pipeline also requires the event's
``pipeline`` extension to be that pipeline's name, so pipelines share a broker without taking each other's
events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml

from eventing.events import NAMESPACE, PIPELINE
from eventing.filters import validate_filters
from eventing.triggers import EXPONENTIAL, DeliverySpec, Trigger
from functions.runtime.context import SETTINGS_ENV as SETTINGS_ENV  # where hosts and manifests read it
from infra.durations import parse_duration
from infra.errors import InvalidRequest
from infra.namespaces import DEFAULT
from infra.validation import parse

API_VERSION = "knflow.dev/v1alpha1"
KIND = "Pipeline"
_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
Label = Annotated[str, pydantic.Field(pattern=_LABEL, max_length=40)]
# libyaml's safe loader when PyYAML has it: the pure-Python scanner takes seconds on a few thousand nested brackets
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _duration(value: Any) -> Any:
    try:
        parse_duration(value)
    except InvalidRequest as exc:
        raise ValueError(exc.message) from None
    return value


Duration = Annotated[str, pydantic.AfterValidator(_duration)]


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class Delivery(_Model):
    """Knative's delivery spec, field for field (durations in ISO-8601)."""

    retry: int | None = pydantic.Field(default=None, ge=0, le=100)
    backoffPolicy: Literal["exponential", "linear"] | None = None
    backoffDelay: Duration | None = None
    timeout: Duration | None = None
    deadLetterSink: str | None = pydantic.Field(default=None, pattern=r"^https?://")
    retryAfterMax: Duration | None = None

    def over(self, base: Delivery | None) -> Delivery:
        """These fields, the unset ones taken from ``base``."""
        if base is None:
            return self
        return base.model_copy(update=self.model_dump(exclude_none=True))


class TriggerSpec(_Model):
    """One subscription of a step: Knative's ``filter.attributes`` (exact AND) or its ``filters`` dialect."""

    name: Annotated[str, pydantic.Field(pattern=_LABEL, max_length=20)] | None = None
    filter: dict[str, str] | None = None
    filters: list[dict[str, Any]] | None = None

    @pydantic.model_validator(mode="after")
    def _has_a_filter(self) -> TriggerSpec:
        if not self.filter and not self.filters:
            raise ValueError("a trigger needs a filter (e.g. {type: ...}) or filters")
        if self.filters:
            try:
                validate_filters(self.filters)
            except InvalidRequest as exc:
                raise ValueError(exc.message) from None
        if self.filter and PIPELINE in self.filter:
            raise ValueError(f"'{PIPELINE}' is set by knflow: every trigger takes only its own pipeline's events")
        return self


class Step(_Model):
    """A function, the events it takes, the event types it answers with, and how they are delivered to it."""

    name: Label
    function: str = pydantic.Field(min_length=1, max_length=500)
    image: str | None = pydantic.Field(None, min_length=1, max_length=500)
    triggers: list[TriggerSpec] = pydantic.Field(min_length=1, max_length=20)
    emits: list[str] = pydantic.Field(default_factory=list, max_length=50)
    delivery: Delivery | None = None
    settings: dict[str, Any] = pydantic.Field(default_factory=dict)


class Metadata(_Model):
    name: Label
    description: str = pydantic.Field("", max_length=2000)
    #: The namespace that owns the pipeline (set by the server that applies it; none: ``default``, shared by all).
    namespace: Label | None = None


class Body(_Model):
    delivery: Delivery | None = None
    steps: list[Step] = pydantic.Field(min_length=1, max_length=100)

    @pydantic.model_validator(mode="after")
    def _unique(self) -> Body:
        names = [s.name for s in self.steps]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"step names must be unique: {twice}")
        for step in self.steps:
            suffixes = [t.name or "" for t in step.triggers]
            if len(set(suffixes)) != len(suffixes):
                raise ValueError(f"step {step.name}: give each of its triggers a different name")
        return self


class PipelineSpec(_Model):
    """A pipeline spec file (``apiVersion: knflow.dev/v1alpha1``, ``kind: Pipeline``)."""

    apiVersion: Literal["knflow.dev/v1alpha1"]
    kind: Literal["Pipeline"]
    metadata: Metadata
    spec: Body

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        """The namespace that owns the pipeline: only its runs take it (``default``'s pipelines take every run's)."""
        return self.metadata.namespace or DEFAULT

    @property
    def steps(self) -> list[Step]:
        return self.spec.steps

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise InvalidRequest(f"pipeline {self.name} has no step {name!r}")

    def delivery(self, step: Step) -> Delivery:
        """The step's delivery: its own fields over the pipeline's defaults."""
        return (step.delivery or Delivery()).over(self.spec.delivery)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=False)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def parse_pipeline(raw: Any, where: str = "pipeline") -> PipelineSpec:
    """A checked spec from its YAML/JSON text or already-parsed mapping; ``InvalidRequest`` names the field."""
    if isinstance(raw, bytes | str):
        try:
            raw = yaml.load(raw, Loader=_YAML_LOADER)  # a safe loader
        except yaml.YAMLError as exc:
            raise InvalidRequest(f"{where}: not valid YAML: {exc}"[:500]) from None
        except RecursionError:  # PyYAML's parser recurses once per level of nesting
            raise InvalidRequest(f"{where}: not a pipeline spec: nested too deeply") from None
    return parse(PipelineSpec, raw, where)


def load_pipeline(path: str | Path) -> PipelineSpec:
    """The spec in a file; ``InvalidRequest`` naming the file for anything wrong."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read pipeline {path}: {exc}") from None
    return parse_pipeline(text, str(path))


def schema() -> dict[str, Any]:
    """The JSON schema of a pipeline spec (shipped as ``pipeline.schema.json``)."""
    out = PipelineSpec.model_json_schema()
    out["$id"] = "https://knflow.dev/schemas/pipeline.schema.json"
    out["title"] = "knflow Pipeline"
    return out


def schema_path() -> Path:
    return Path(__file__).with_name("pipeline.schema.json")


# -- checks against what runs -------------------------------------------------------------------------------


def takes_type(trigger: TriggerSpec, event_type: str) -> bool:
    """Whether the trigger could take an event of ``event_type`` (attributes other than ``type`` unknown)."""
    if trigger.filters:
        return all(_maybe(expr, event_type) is not False for expr in trigger.filters)
    want = (trigger.filter or {}).get("type")
    return want is None or want == event_type


def _maybe(expr: Mapping[str, Any], event_type: str) -> bool | None:
    """Three-valued match of one ``filters`` expression: True, False, or None when it depends on other attributes."""
    ((op, arg),) = expr.items()
    if op in ("exact", "prefix", "suffix"):
        if set(arg) != {"type"}:
            results = [_maybe({op: {"type": arg["type"]}}, event_type)] if "type" in arg else []
            return False if False in results else None
        want = arg["type"]
        return {"exact": event_type == want, "prefix": event_type.startswith(want)}.get(op, event_type.endswith(want))
    inner = [_maybe(e, event_type) for e in (arg if op in ("all", "any") else [arg])]
    if op == "all":
        return False if False in inner else (True if all(inner) else None)
    if op == "any":
        return True if True in inner else (False if all(v is False for v in inner) else None)
    return None if inner[0] is None else not inner[0]


def check_functions(spec: PipelineSpec, emits_of: Callable[[Step], Iterable[str] | None]) -> None:
    """Refuse a step whose function nobody hosts (``emits_of`` returns None for it) or that takes its own output."""
    for step in spec.steps:
        emits = emits_of(step)
        if emits is None:
            raise InvalidRequest(
                f"pipeline {spec.name}, step {step.name}: unknown function {step.function!r} "
                "(a built-in step, a function deployed with `knflow deploy`, or a function directory)"
            )
        for event_type in sorted(set(step.emits) | set(emits)):
            looping = [t for t in step.triggers if takes_type(t, event_type)]
            if looping:
                raise InvalidRequest(
                    f"pipeline {spec.name}, step {step.name}: it answers with {event_type} and its trigger "
                    f"{trigger_name(spec, step, looping[0])} takes that type: the step would loop on its own output"
                )


# -- triggers -------------------------------------------------------------------------------------------------


def owned(spec: PipelineSpec, name: str) -> str:
    """``name`` of something a pipeline puts on the shared broker or runner, told apart per namespace: unchanged for
    ``default``, ``<ns>.<name>`` for another (a label holds no dot, so two namespaces' names never meet)."""
    return name if spec.namespace == DEFAULT else f"{spec.namespace}.{name}"


def trigger_name(spec: PipelineSpec, step: Step, trigger: TriggerSpec) -> str:
    """``[<ns>.]<pipeline>-<step>[-<trigger>]``: unique per broker, a DNS name as Knative requires."""
    name = owned(spec, "-".join(p for p in (spec.name, step.name, trigger.name) if p))
    if len(name) > 63:
        raise InvalidRequest(f"trigger name {name!r} is longer than 63 characters: shorten the pipeline or step name")
    return name


def instance_name(spec: PipelineSpec, step: Step) -> str:
    """The function instance hosting a step: the function itself, or ``[<ns>.]<pipeline>-<step>`` when the step has
    settings of its own (they reach the function through its environment)."""
    if step.settings:
        return owned(spec, f"{spec.name}-{step.name}")
    return function_name(step.function)


def function_name(function: str) -> str:
    """A step's ``function`` as a hosted function's name (a directory's last part for a path)."""
    if is_directory(function):
        return re.sub(r"[^a-z0-9-]", "-", Path(function).name.lower()).strip("-") or "function"
    return function


def with_functions(spec: PipelineSpec, change: Callable[[Step], str]) -> PipelineSpec:
    """The spec with each step's ``function`` replaced by ``change(step)``."""
    steps = [step.model_copy(update={"function": change(step)}) for step in spec.steps]
    return spec.model_copy(update={"spec": spec.spec.model_copy(update={"steps": steps})})


def is_directory(function: str) -> bool:
    """Whether a step's ``function`` names a function directory (a path) rather than a hosted function."""
    return "/" in function


def delivery_spec(spec: PipelineSpec, step: Step) -> DeliverySpec:
    """The step's delivery as the broker's ``DeliverySpec``."""
    d = spec.delivery(step)
    return DeliverySpec(
        retry=d.retry or 0,
        backoff_policy=d.backoffPolicy or EXPONENTIAL,
        backoff_delay=d.backoffDelay or 0.2,
        timeout=d.timeout,
        dead_letter_sink=d.deadLetterSink,
        retry_after_max=d.retryAfterMax,
    )


def pipeline_triggers(spec: PipelineSpec, subscriber: Callable[[Step], str]) -> list[Trigger]:
    """The broker triggers of every step, each also requiring ``pipeline: <name>`` and, for a pipeline a namespace
    other than ``default`` owns, ``namespace: <ns>``: another namespace's runs never reach it."""
    out = []
    owner = {} if spec.namespace == DEFAULT else {NAMESPACE: spec.namespace}
    for step in spec.steps:
        for trigger in step.triggers:
            scope = {PIPELINE: spec.name, **owner}
            out.append(
                Trigger(
                    name=trigger_name(spec, step, trigger),
                    subscriber=subscriber(step),
                    filter={**(trigger.filter or {}), **scope} if not trigger.filters else None,
                    filters=[*trigger.filters, {"exact": scope}] if trigger.filters else None,
                    delivery=delivery_spec(spec, step),
                )
            )
    return out


def consumers(spec: PipelineSpec) -> dict[str, list[str]]:
    """Event type → the steps whose triggers name that type (in spec order), for views that follow a run."""
    out: dict[str, list[str]] = {}
    for step in spec.steps:
        for trigger in step.triggers:
            event_type = (trigger.filter or {}).get("type") or _exact_type(trigger.filters or [])
            if event_type and step.name not in out.setdefault(event_type, []):
                out[event_type].append(step.name)
    return out


def _exact_type(filters: list[dict[str, Any]]) -> str | None:
    for expr in filters:
        exact = expr.get("exact")
        if isinstance(exact, dict) and isinstance(exact.get("type"), str):
            return exact["type"]
    return None


def routes_table(spec: PipelineSpec) -> str:
    """The spec as a Markdown table: each trigger, what it takes, the step it delivers to, what that answers."""

    def takes(trigger: TriggerSpec) -> str:
        if trigger.filters:
            return "`" + json.dumps(trigger.filters) + "`"
        return ", ".join(f"`{k}: {v}`" for k, v in (trigger.filter or {}).items())

    rows = ["| trigger | takes | step (function) | answers with |", "|---|---|---|---|"]
    for step in spec.steps:
        for trigger in step.triggers:
            emits = ", ".join(f"`{t}`" for t in step.emits) or "—"
            function = f"{step.name}" + (f" (`{step.function}`)" if step.function != step.name else "")
            rows.append(f"| `{trigger_name(spec, step, trigger)}` | {takes(trigger)} | {function} | {emits} |")
    return "\n".join(rows) + "\n"


def write_schema() -> None:
    """Regenerate ``pipeline.schema.json`` from the models (a test checks the shipped file is current)."""
    schema_path().write_text(json.dumps(schema(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":  # python -m functions.runtime.pipeline: regenerate the shipped schema
    write_schema()
