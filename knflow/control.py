"""Pipelines on a running platform: apply one (its function directories, its function instances, its triggers,
its stored spec), list, show, delete, and put the shipped lifecycle in place at start.

A step whose ``function`` is a directory is deployed first, by the code of ``knflow deploy``
(``knflow.deployment``), and the spec then names the deployed function: so the stored spec says what runs, and
a platform that restarts hosts the deployed version, not whatever the directory holds by then. An applied
pipeline's spec is kept in the artifact store at ``pipelines/<name>.yaml``, under ``namespaces/<ns>/`` for a pipeline
of a namespace other than ``default`` (whose triggers and step instances are named ``<ns>.<name>``, so two
namespaces' pipelines of one name never meet on the broker or runner): the dashboard, the CLI and
``knflow manifests`` read it from there, and re-applying a spec removes the triggers and instances its previous
version had and this one has not.
"""

from __future__ import annotations

import contextlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from functions.contract import LIFECYCLE, builtin_emits, lifecycle_spec_path
from functions.runtime.funcdir import read_function_dir
from functions.runtime.instances import Instance
from functions.runtime.pipeline import (
    SETTINGS_ENV,
    PipelineSpec,
    Step,
    check_functions,
    function_name,
    instance_name,
    is_directory,
    load_pipeline,
    parse_pipeline,
    pipeline_triggers,
    with_functions,
)
from infra.auth import auth_headers
from infra.errors import InvalidRequest, NotFound
from infra.httpclient import JsonClient
from infra.namespaces import DEFAULT, ROOT, prefix
from infra.settings import Settings
from infra.store import ArtifactStore, open_store
from knflow.deployment import Deployer

log = logging.getLogger(__name__)
PREFIX = "pipelines/"
#: The lifecycle's trigger names before pipelines were specs; a platform that finds them removes them.
LEGACY_TRIGGERS = (
    "ingest", "featurize", "train", "train-trials", "tune", "tune-results", "tune-failures", "register",
    "register-best", "deploy",
)  # fmt: skip


def spec_key(name: str, namespace: str = DEFAULT) -> str:
    """Where a namespace's pipeline ``name`` is kept: ``pipelines/<name>.yaml`` under the namespace's prefix."""
    return f"{prefix(namespace)}{PREFIX}{name}.yaml"


@dataclass(frozen=True)
class Applied:
    """What applying a pipeline did."""

    pipeline: str
    triggers: tuple[str, ...]
    instances: tuple[str, ...]
    removed: tuple[str, ...]
    deployed: tuple[str, ...] = ()  # the functions deployed from the spec's function directories


class PipelineControl:
    """Applies pipelines to the broker and function runner of one platform, and keeps their specs."""

    def __init__(self, settings: Settings, store: ArtifactStore | None = None):
        self.settings = settings
        self._store = store
        self.functions_url = settings.url(settings.functions_port)
        auth = auth_headers(settings)
        self.broker = JsonClient(settings.url(settings.broker_port), timeout=120.0, headers=auth)
        self.runner = JsonClient(self.functions_url, timeout=120.0, headers=auth)
        self.deployer = Deployer(settings, self.runner)

    @property
    def store(self) -> ArtifactStore:
        """The artifact store (opened on first use: a store that is down must not stop a server's start)."""
        if self._store is None:
            self._store = open_store(self.settings.artifacts)
        return self._store

    # -- reading ----------------------------------------------------------------------------------------------

    def names(self, namespace: str = DEFAULT) -> list[str]:
        """The names of the pipelines applied in ``namespace`` (``default``'s are the shared ones)."""
        where = spec_key("", namespace).removesuffix(".yaml")
        names = {info.key[len(where) :].removesuffix(".yaml") for info in self.store.list(where)}
        return sorted(n for n in names if "/" not in n)

    def namespaces(self) -> list[str]:
        """The namespaces other than ``default`` that have pipelines of their own."""
        found = set()
        for info in self.store.list(ROOT):
            namespace, _, rest = info.key[len(ROOT) :].partition("/")
            if rest.startswith(PREFIX) and "/" not in rest[len(PREFIX) :]:
                found.add(namespace)
        return sorted(found)

    def get(self, name: str, namespace: str = DEFAULT) -> PipelineSpec:
        """A pipeline applied in ``namespace``; the shipped lifecycle when ``default``'s was never applied."""
        key = spec_key(name, namespace)
        try:
            return parse_pipeline(self.store.get(key), key)
        except NotFound:
            if name == LIFECYCLE and namespace == DEFAULT:
                return load_pipeline(lifecycle_spec_path())
            raise NotFound(f"no pipeline named {name!r}; applied: {self.names(namespace)}") from None

    def resolve(self, name: str, namespace: str) -> PipelineSpec:
        """The pipeline a run of ``namespace`` naming ``name`` takes: the namespace's own, else the shared one of
        ``default`` (``NotFound`` naming neither, so nothing of another namespace's pipelines shows)."""
        if namespace == DEFAULT:
            return self.get(name)
        try:
            return parse_pipeline(self.store.get(spec_key(name, namespace)), spec_key(name, namespace))
        except NotFound:
            pass
        try:
            return self.get(name)
        except NotFound:
            raise NotFound(f"no pipeline {name!r}") from None

    def using(self, function: str) -> list[str]:
        """The applied pipelines (``<ns>/<name>`` outside ``default``) with a step running ``function``."""
        out = []
        for namespace in [DEFAULT, *self.namespaces()]:
            for name in self.names(namespace):
                if any(function_name(s.function) == function for s in self.get(name, namespace).steps):
                    out.append(name if namespace == DEFAULT else f"{namespace}/{name}")
        return out

    # -- changing ---------------------------------------------------------------------------------------------

    def apply(self, spec: PipelineSpec) -> Applied:
        """Deploy the steps' function directories, host the steps' instances, put the triggers, drop what the
        previous version had, store the spec (naming the deployed functions)."""
        hosted = self.runner.call("GET", "/functions")
        directories = self._directories(spec)
        check_functions(spec, lambda step: () if step.function in directories else self._emits(step, hosted))
        deployed = {path: self.deployer.deploy(path).name for path in directories}
        if deployed:
            spec = with_functions(spec, lambda step: deployed.get(step.function, step.function))
            hosted = self.runner.call("GET", "/functions")
        try:
            previous: PipelineSpec | None = parse_pipeline(self.store.get(spec_key(spec.name, spec.namespace)))
        except NotFound:
            previous = None
        instances = [self._host(spec, step, hosted) for step in spec.steps if step.settings]
        triggers = pipeline_triggers(spec, lambda step: f"{self.functions_url}/functions/{instance_name(spec, step)}")
        with ThreadPoolExecutor(max(1, min(16, len(triggers)))) as pool:  # consumer groups join in parallel
            list(pool.map(lambda t: self.broker.call("PUT", f"/triggers/{t.name}", t.to_resource()), triggers))
        removed = self._drop_stale(previous, {t.name for t in triggers}, set(instances)) if previous else ()
        self.store.put(spec_key(spec.name, spec.namespace), spec.to_yaml().encode(), content_type="application/yaml")
        log.info("pipeline %s applied: %d triggers, %d own instances", spec.name, len(triggers), len(instances))
        return Applied(spec.name, tuple(t.name for t in triggers), tuple(instances), removed, tuple(deployed.values()))

    def delete(self, name: str, namespace: str = DEFAULT) -> Applied:
        """Remove a namespace's pipeline: its triggers, its own function instances and its stored spec."""
        spec = self.get(name, namespace)
        if name not in self.names(namespace):
            raise NotFound(f"no pipeline named {name!r} is applied")
        removed = self._drop_stale(spec, set(), set())
        self.store.delete(spec_key(name, namespace))
        return Applied(name, (), (), removed)

    def ensure_defaults(self) -> list[Applied]:
        """At platform start: re-apply every stored pipeline, and the shipped lifecycle when none of that name is."""
        existing = {item["name"] for item in self.broker.call("GET", "/triggers")["items"]}
        for legacy in sorted(existing & set(LEGACY_TRIGGERS)):
            self.broker.call("DELETE", f"/triggers/{legacy}")
        names = self.names()
        specs = [self.get(n) for n in names]
        for moved in [spec for spec in specs if spec.namespace != DEFAULT]:
            self._move_to_namespace(moved, existing)
        specs = [spec for spec in specs if spec.namespace == DEFAULT]
        if LIFECYCLE not in names:
            specs.insert(0, load_pipeline(lifecycle_spec_path()))
        specs += [self.get(n, ns) for ns in self.namespaces() for n in self.names(ns)]
        return [self.apply(spec) for spec in specs]

    def _move_to_namespace(self, spec: PipelineSpec, existing: set[str]) -> None:
        """A namespace's pipeline kept among ``default``'s (where knflow kept them before each namespace had its
        prefix) moves under the namespace's prefix; its triggers under their old names go."""
        log.info("pipeline %s of namespace %s moves under its namespace's prefix", spec.name, spec.namespace)
        if not self.store.exists(spec_key(spec.name, spec.namespace)):
            self.store.put(
                spec_key(spec.name, spec.namespace), spec.to_yaml().encode(), content_type="application/yaml"
            )
        unowned = spec.model_copy(update={"metadata": spec.metadata.model_copy(update={"namespace": None})})
        for trigger in pipeline_triggers(unowned, lambda step: self.functions_url):
            if trigger.name in existing:
                self.broker.call("DELETE", f"/triggers/{trigger.name}")
        self.store.delete(spec_key(spec.name))

    # -- pieces -----------------------------------------------------------------------------------------------

    @staticmethod
    def _directories(spec: PipelineSpec) -> set[str]:
        """The steps' function directories, each checked (absolute, func.yaml readable) before anything is deployed."""
        out = set()
        for step in spec.steps:
            if not is_directory(step.function):
                continue
            where = f"pipeline {spec.name}, step {step.name}"
            if not Path(step.function).is_absolute():
                raise InvalidRequest(
                    f"{where}: function directory {step.function!r} must be an absolute path "
                    "(`knflow pipeline apply FILE` makes paths relative to the spec file absolute)"
                )
            try:
                read_function_dir(step.function)
            except InvalidRequest as exc:
                raise InvalidRequest(f"{where}: {exc.message}") from None
            out.add(step.function)
        return out

    @staticmethod
    def _emits(step: Step, hosted: dict[str, dict]) -> tuple[str, ...] | None:
        """What the step's function answers with: known for built-ins, as declared for a user's; None if unknown."""
        name = function_name(step.function)
        builtin = builtin_emits()
        if name in builtin:
            return builtin[name]
        return () if name in hosted else None

    def _host(self, spec: PipelineSpec, step: Step, hosted: dict[str, dict]) -> str:
        """Host the step's own instance: its function with the step's settings in the environment."""
        name = instance_name(spec, step)
        function = function_name(step.function)
        base = hosted.get(function, {})
        instance = Instance(
            target=base.get("module") or function, python=base.get("python"), function=function,
            env={SETTINGS_ENV: json.dumps(step.settings, sort_keys=True)},
        )  # fmt: skip
        current = hosted.get(name) or {}
        wanted = (instance.target, instance.python, instance.function, instance.digest())
        if (current.get("module"), current.get("python"), current.get("function"), current.get("env_digest")) != wanted:
            self.runner.call("PUT", f"/admin/functions/{name}", instance.model_dump())
        return name

    def _drop_stale(self, previous: PipelineSpec, triggers: set[str], instances: set[str]) -> tuple[str, ...]:
        removed = []
        old = pipeline_triggers(previous, lambda step: self.functions_url)
        for trigger in old:
            if trigger.name not in triggers:
                with contextlib.suppress(NotFound):
                    self.broker.call("DELETE", f"/triggers/{trigger.name}")
                removed.append(trigger.name)
        for step in previous.steps:
            name = instance_name(previous, step)
            if step.settings and name not in instances:
                with contextlib.suppress(NotFound):
                    self.runner.call("DELETE", f"/admin/functions/{name}")
                removed.append(name)
        return tuple(removed)
