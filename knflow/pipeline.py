"""Write pipeline specs from Python, the way the KFP SDK compiles a pipeline: the builder makes the same spec a
YAML file holds, checked by the same models.

    from knflow.pipeline import Pipeline, on

    pipeline = Pipeline.lifecycle("validated")              # start from the shipped lifecycle
    pipeline.insert_between(                                # ingest -> validate -> featurize
        "ingest", "featurize", name="validate", function="./validate",
        emits="acme.dataset.validated", settings={"min_rows": 100},
    )
    pipeline.step("notify", function="./notify", takes=[on("dev.knflow.model.deployed")])
    pipeline.save("validated.yaml")                         # knflow pipeline apply validated.yaml
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from functions.contract import lifecycle_spec_path
from functions.runtime.pipeline import API_VERSION, KIND, PipelineSpec, load_pipeline, parse_pipeline
from infra.errors import InvalidRequest

__all__ = ["Pipeline", "on"]


def on(event_type: str, name: str | None = None, **attributes: str) -> dict[str, Any]:
    """A trigger taking events of ``event_type`` whose other attributes equal ``attributes`` (Knative's filter)."""
    trigger: dict[str, Any] = {"filter": {"type": event_type, **attributes}}
    if name:
        trigger["name"] = name
    return trigger


class Pipeline:
    """A pipeline being written; ``spec()`` checks it and returns the ``PipelineSpec``."""

    def __init__(self, name: str, description: str = "", delivery: dict[str, Any] | None = None):
        self.name, self.description = name, description
        self.delivery = dict(delivery or {})
        self.steps: list[dict[str, Any]] = []

    @classmethod
    def from_spec(cls, spec: PipelineSpec | str | Path, name: str | None = None) -> Pipeline:
        """A builder holding an existing spec (a ``PipelineSpec`` or a spec file), renamed to ``name`` if given."""
        spec = spec if isinstance(spec, PipelineSpec) else load_pipeline(spec)
        raw = spec.to_dict()
        out = cls(name or spec.name, raw["metadata"].get("description", ""), raw["spec"].get("delivery"))
        out.steps = copy.deepcopy(raw["spec"]["steps"])
        return out

    @classmethod
    def lifecycle(cls, name: str = "lifecycle") -> Pipeline:
        """A builder holding the shipped lifecycle, under ``name``."""
        return cls.from_spec(lifecycle_spec_path(), name)

    # -- steps ------------------------------------------------------------------------------------------------

    def step(
        self,
        name: str,
        function: str,
        *,
        takes: list[dict[str, Any]],
        emits: list[str] | tuple[str, ...] | str = (),
        delivery: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        image: str | None = None,
        index: int | None = None,
    ) -> Pipeline:
        """Add a step running ``function`` (a built-in, a deployed function's name, or a function directory)."""
        if any(s["name"] == name for s in self.steps):
            raise InvalidRequest(f"pipeline {self.name} already has a step {name!r}")
        body: dict[str, Any] = {"name": name, "function": str(function), "triggers": copy.deepcopy(takes)}
        body["emits"] = [emits] if isinstance(emits, str) else list(emits)
        for key, value in (("delivery", delivery), ("settings", settings), ("image", image)):
            if value:
                body[key] = copy.deepcopy(value)
        self.steps.insert(len(self.steps) if index is None else index, body)
        return self

    def insert_between(
        self, before: str, after: str, *, name: str, function: str, emits: str, **options: Any
    ) -> Pipeline:
        """Put a step between two: it takes what ``before`` answers (the types ``after`` takes from it), and
        ``after`` takes the step's ``emits`` instead. Other attributes of ``after``'s filters are kept."""
        first, second = self._get(before), self._get(after)
        passed = set(first.get("emits") or [])
        rerouted = [t for t in second["triggers"] if (t.get("filter") or {}).get("type") in passed]
        if not rerouted:
            raise InvalidRequest(f"step {after!r} takes nothing that {before!r} answers with ({sorted(passed)})")
        takes = [{"filter": {"type": t["filter"]["type"]}} for t in rerouted]
        self.step(name, function, takes=_unique(takes), emits=emits, index=self.steps.index(second), **options)
        for trigger in rerouted:
            trigger["filter"]["type"] = emits
        return self

    def remove(self, name: str) -> Pipeline:
        self.steps.remove(self._get(name))
        return self

    def _get(self, name: str) -> dict[str, Any]:
        for step in self.steps:
            if step["name"] == name:
                return step
        raise InvalidRequest(f"pipeline {self.name} has no step {name!r}; steps: {[s['name'] for s in self.steps]}")

    # -- output -----------------------------------------------------------------------------------------------

    def spec(self) -> PipelineSpec:
        """The checked spec (``InvalidRequest`` naming the field, as for a file)."""
        body: dict[str, Any] = {"steps": self.steps}
        if self.delivery:
            body["delivery"] = self.delivery
        raw = {"apiVersion": API_VERSION, "kind": KIND, "spec": body}
        raw["metadata"] = {"name": self.name, **({"description": self.description} if self.description else {})}
        return parse_pipeline(raw, f"pipeline {self.name}")

    def to_yaml(self) -> str:
        return self.spec().to_yaml()

    def save(self, path: str | Path) -> Path:
        """Write the spec file; the path."""
        out = Path(path)
        out.write_text(self.to_yaml())
        return out


def _unique(triggers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for trigger in triggers:
        key = trigger["filter"]["type"]
        if key not in seen:
            seen.add(key)
            out.append(trigger)
    for i, trigger in enumerate(out[1:], start=1):
        trigger["name"] = f"in{i}"
    return out
