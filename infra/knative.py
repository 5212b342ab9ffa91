"""Knative resources as plain dicts: builders (Kafka Broker, Trigger, Service, SinkBinding, PingSource, KafkaSource,
and the ServiceAccount, Role and RoleBinding that give a Service rights) and validation.

Every builder takes generic inputs (names, images, attribute maps, delivery dicts) and returns the
resource in Kubernetes' JSON shape. ``validate(resources)`` checks each Knative resource against the
typed models generated from Knative's own CRDs (``cloudcoil.models.knative-*``: strict types, and any
field the schema does not know is an error, since an API server would silently prune it) and then
knflow's own rules: DNS-1035 names, ISO-8601 durations, string filter attributes, an image on every
container, five-field PingSource schedules, and every subscriber / dead-letter / sink reference, role binding and
service account naming a rendered resource. The KafkaSource schema is ``infra.kafkasource`` (cloudcoil has none); the
RBAC kinds are validated with ``cloudcoil.models.kubernetes``.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import re
import sys
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pydantic

from infra.durations import parse_duration
from infra.errors import ConfigError, InvalidRequest

SERVING = "serving.knative.dev/v1"
EVENTING = "eventing.knative.dev/v1"
SOURCES = "sources.knative.dev/v1"
KAFKA_SOURCES = "sources.knative.dev/v1beta1"
RBAC = "rbac.authorization.k8s.io/v1"
KAFKA_BROKER_CLASS = "Kafka"
AUTOSCALING = "autoscaling.knative.dev/"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_CORE_FIELDS = {"Namespace": {"spec"}, "ConfigMap": {"data", "immutable"}, "Secret": {"data", "stringData", "type"}}


def meta(name: str, namespace: str | None, labels: dict[str, str] | None = None, annotations=None) -> dict[str, Any]:
    """``metadata`` with only the keys that are set."""
    out: dict[str, Any] = {"name": name}
    if namespace:
        out["namespace"] = namespace
    if labels:
        out["labels"] = dict(labels)
    if annotations:
        out["annotations"] = dict(annotations)
    return out


def ref(api_version: str, kind: str, name: str) -> dict[str, str]:
    """A Knative ``Destination.ref``."""
    return {"apiVersion": api_version, "kind": kind, "name": name}


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Namespace."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta(name, None, labels)}


def kafka_broker_config(
    name: str, ns: str, bootstrap_servers: list[str], *, partitions: int = 10, replication_factor: int = 3
) -> dict[str, Any]:
    """The ConfigMap a Kafka-class Broker reads: bootstrap servers and the topic's shape."""
    data = {
        "bootstrap.servers": ",".join(bootstrap_servers),
        "default.topic.partitions": str(partitions),
        "default.topic.replication.factor": str(replication_factor),
    }
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(name, ns), "data": data}


def kafka_broker(name: str, ns: str, config_map: str, delivery: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Broker of class Kafka configured by ``config_map``, with default ``delivery`` for its Triggers."""
    spec: dict[str, Any] = {"config": {"apiVersion": "v1", "kind": "ConfigMap", "name": config_map, "namespace": ns}}
    if delivery:
        spec["delivery"] = copy.deepcopy(delivery)
    annotations = {"eventing.knative.dev/broker.class": KAFKA_BROKER_CLASS}
    return {"apiVersion": EVENTING, "kind": "Broker", "metadata": meta(name, ns, annotations=annotations), "spec": spec}


def trigger(
    name: str,
    ns: str,
    broker: str,
    attributes: dict[str, str] | None,
    subscriber: dict[str, str],
    delivery: dict[str, Any] | None = None,
    filters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Trigger: events on ``broker`` matching ``attributes`` (exact AND), or the ``filters`` dialect when
    given, go to ``subscriber`` (a ref)."""
    spec: dict[str, Any] = {"broker": broker, "subscriber": {"ref": subscriber}}
    if filters:
        spec["filters"] = copy.deepcopy(filters)
    else:
        spec["filter"] = {"attributes": dict(attributes or {})}
    if delivery:
        spec["delivery"] = copy.deepcopy(delivery)
    return {"apiVersion": EVENTING, "kind": "Trigger", "metadata": meta(name, ns), "spec": spec}


def ping_source(name: str, ns: str, schedule: str, data: str, sink: dict[str, str], labels=None) -> dict[str, Any]:
    """A PingSource that sends ``data`` (JSON text) to ``sink`` (a ref) on the five-field cron ``schedule``."""
    spec = {"schedule": schedule, "contentType": "application/json", "data": data, "sink": {"ref": sink}}
    return {"apiVersion": SOURCES, "kind": "PingSource", "metadata": meta(name, ns, labels), "spec": spec}


def kafka_source(
    name: str, ns: str, servers: list[str], topics: list[str], sink: dict[str, str], *,
    extensions: dict[str, str] | None = None, delivery: dict[str, Any] | None = None, labels=None,
) -> dict[str, Any]:  # fmt: skip
    """A KafkaSource: each record of ``topics`` as a ``dev.knative.kafka.event`` to ``sink`` (a ref), from the
    latest offset, in its own consumer group (its name); ``extensions`` added to every event (``ceOverrides``)."""
    spec: dict[str, Any] = {
        "bootstrapServers": list(servers),
        "topics": list(topics),
        "consumerGroup": name,
        "initialOffset": "latest",
        "sink": {"ref": sink},
    }
    if extensions:
        spec["ceOverrides"] = {"extensions": dict(extensions)}
    if delivery:
        spec["delivery"] = copy.deepcopy(delivery)
    return {"apiVersion": KAFKA_SOURCES, "kind": "KafkaSource", "metadata": meta(name, ns, labels), "spec": spec}


def service_account(name: str, ns: str, labels: dict[str, str] | None = None, *, token: bool = True) -> dict[str, Any]:
    """A ServiceAccount (the identity a Service's pods call the Kubernetes API as); ``token=False``: its pods get no
    API token mounted (an identity with no rights, for pods that never call the API)."""
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name, ns, labels)}
    return account if token else {**account, "automountServiceAccountToken": False}


def role(name: str, ns: str, rules: list[dict[str, Any]], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Role: ``rules`` (``apiGroups``, ``resources``, ``verbs``) within one namespace."""
    return {"apiVersion": RBAC, "kind": "Role", "metadata": meta(name, ns, labels), "rules": copy.deepcopy(rules)}


def role_binding(name: str, ns: str, role_name: str, account: str, labels=None) -> dict[str, Any]:
    """A RoleBinding giving the ServiceAccount ``account`` the rights of the Role ``role_name``."""
    return {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": meta(name, ns, labels),
        "roleRef": {"apiGroup": RBAC.split("/")[0], "kind": "Role", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
    }


def sink_binding(name: str, ns: str, match_labels: dict[str, str], sink: dict[str, str]) -> dict[str, Any]:
    """A SinkBinding that injects ``K_SINK`` (the address of ``sink``) into every Knative Service with the labels."""
    subject = {"apiVersion": SERVING, "kind": "Service", "selector": {"matchLabels": dict(match_labels)}}
    spec = {"subject": subject, "sink": {"ref": sink}}
    return {"apiVersion": SOURCES, "kind": "SinkBinding", "metadata": meta(name, ns), "spec": spec}


@dataclass(frozen=True)
class ServiceSpec:
    """One Knative Service: one container, its scale bounds, concurrency, timeout, resources and placement."""

    name: str
    namespace: str
    image: str
    env: tuple[dict[str, Any], ...] = ()
    command: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    min_scale: int = 0
    max_scale: int = 10
    target: int = 10
    container_concurrency: int = 0
    timeout_seconds: int = 300
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, str], ...] = ()
    readiness_path: str = "/health/readiness"
    liveness_path: str = "/health/liveness"
    port: int = 8080
    service_account: str = ""  # the pods' ServiceAccount; empty: the namespace's default
    metrics_path: str = ""  # where the container serves Prometheus metrics: its pods are annotated for scraping


def knative_service(spec: ServiceSpec) -> dict[str, Any]:
    """A ``serving.knative.dev/v1`` Service from ``spec``."""
    container: dict[str, Any] = {"image": spec.image, "ports": [{"containerPort": spec.port}], "env": list(spec.env)}
    if spec.command:
        container["command"] = list(spec.command)
    resources = {k: v for k, v in (("requests", spec.requests), ("limits", spec.limits)) if v}
    if resources:
        container["resources"] = {k: dict(v) for k, v in resources.items()}
    container["readinessProbe"] = {"httpGet": {"path": spec.readiness_path}}
    container["livenessProbe"] = {"httpGet": {"path": spec.liveness_path}}
    pod: dict[str, Any] = {
        "containerConcurrency": spec.container_concurrency,
        "timeoutSeconds": spec.timeout_seconds,
        "containers": [container],
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    scale = {"min-scale": spec.min_scale, "max-scale": spec.max_scale, "target": spec.target}
    annotations = {AUTOSCALING + k: str(v) for k, v in scale.items()} | scrape_annotations(spec)
    template: dict[str, Any] = {"metadata": {"labels": dict(spec.labels), "annotations": annotations}}
    template["spec"] = pod
    body = {"apiVersion": SERVING, "kind": "Service", "metadata": meta(spec.name, spec.namespace, spec.labels)}
    return body | {"spec": {"template": template}}


def scrape_annotations(spec: ServiceSpec) -> dict[str, str]:
    """The ``prometheus.io/*`` pod annotations Prometheus' Kubernetes discovery reads (none without a metrics path)."""
    if not spec.metrics_path:
        return {}
    port, path = str(spec.port), spec.metrics_path
    return {"prometheus.io/scrape": "true", "prometheus.io/port": port, "prometheus.io/path": path}


# -- validation ---------------------------------------------------------------------------------------


def generated(module: str) -> ModuleType:
    """One of cloudcoil's generated model modules (``knative_serving.serving.v1``, ``kubernetes.rbac.v1`` ...), imported
    without running its packages' ``__init__``: those import every API group of the package (about 5,000 pydantic
    models, 3-4 s), where knflow validates nine kinds from five modules. A package imported whole before stays as is."""
    name = f"cloudcoil.models.{module}"
    if name not in sys.modules:
        parts = name.split(".")
        for depth in range(3, len(parts)):  # the packages between cloudcoil.models and the module
            package = ".".join(parts[:depth])
            if package not in sys.modules:
                spec = importlib.util.find_spec(package)
                assert spec is not None, package  # cloudcoil's own layout
                sys.modules[package] = bare = importlib.util.module_from_spec(spec)  # its __path__, not its imports
                setattr(sys.modules[package.rpartition(".")[0]], parts[depth - 1], bare)
    with warnings.catch_warnings():  # the generated eventing models shadow Resource attributes; harmless here
        warnings.simplefilter("ignore")
        return importlib.import_module(name)


def _schemas() -> dict[tuple[str, str], type[pydantic.BaseModel]]:
    from infra.kafkasource import KafkaSource

    eventing, sources = generated("knative_eventing.eventing.v1"), generated("knative_eventing.sources.v1")
    core, rbac = generated("kubernetes.core.v1"), generated("kubernetes.rbac.v1")
    service = generated("knative_serving.serving.v1").Service
    models = [eventing.Broker, eventing.Trigger, sources.SinkBinding, sources.PingSource, service, KafkaSource]
    models += [core.ServiceAccount, rbac.Role, rbac.RoleBinding]
    return {(m.gvk().api_version, m.gvk().kind): m for m in models}


def _where(resource: dict[str, Any]) -> str:
    name = (resource.get("metadata") or {}).get("name", "?") if isinstance(resource, dict) else "?"
    kind = resource.get("kind", "?") if isinstance(resource, dict) else "?"
    return f"{kind}/{name}"


def unknown_field(given: Any, kept: Any, path: str) -> str | None:
    """The first path present in ``given`` that the schema dropped from ``kept`` (an unknown field)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                return f"{path}.{key}".lstrip(".")
            found = unknown_field(value, kept[key], f"{path}.{key}")
            if found:
                return found
    if isinstance(given, list) and isinstance(kept, list):
        for i, (a, b) in enumerate(zip(given, kept, strict=False)):
            found = unknown_field(a, b, f"{path}[{i}]")
            if found:
                return found
    return None


def _check_schema(resource: dict[str, Any], schemas: dict) -> None:
    where, key = _where(resource), (resource.get("apiVersion"), resource.get("kind"))
    if key[1] in _CORE_FIELDS and key[0] == "v1":
        extra = set(resource) - {"apiVersion", "kind", "metadata"} - _CORE_FIELDS[key[1]]
        if extra:
            raise ConfigError(f"{where}: unknown field {sorted(extra)[0]!r}")
        return
    if key not in schemas:
        raise ConfigError(f"{where}: no schema for apiVersion {key[0]!r} kind {key[1]!r}")
    try:
        model = schemas[key].model_validate(resource, strict=True)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        field_path = ".".join(str(p) for p in error["loc"])
        raise ConfigError(f"{where}: {field_path}: {error['msg']}") from None
    dropped = unknown_field(resource, model.model_dump(by_alias=True, exclude_unset=True, mode="json"), "")
    if dropped:
        raise ConfigError(f"{where}: unknown field {dropped!r} (not in the {key[1]} schema; an API server prunes it)")


def _check_duration(value: Any, where: str) -> None:
    try:  # Knative's schema wants a string where knflow's own specs also take a number of seconds
        valid = isinstance(value, str) and parse_duration(value) is not None
    except InvalidRequest:
        valid = False
    if not valid:
        raise ConfigError(f"{where} {value!r} is not an ISO-8601 duration like PT0.2S or PT1M")


def _check_rules(resource: dict[str, Any]) -> None:
    where, name = _where(resource), (resource.get("metadata") or {}).get("name", "")
    if not isinstance(name, str) or len(name) > 63 or not _DNS1035.match(name):
        raise ConfigError(f"{where}: metadata.name must be a DNS-1035 label of at most 63 characters")
    spec = resource.get("spec") or {}
    delivery = spec.get("delivery") or {}
    for key in ("backoffDelay", "timeout", "retryAfterMax"):
        if key in delivery:
            _check_duration(delivery[key], f"{where}: spec.delivery.{key}")
    for attr, value in ((spec.get("filter") or {}).get("attributes") or {}).items():
        if not isinstance(value, str):
            raise ConfigError(f"{where}: spec.filter.attributes.{attr} must be a string, got {value!r}")
    fields = str(spec.get("schedule", "")).split()
    if resource.get("kind") == "PingSource" and not (len(fields) == 5 or (len(fields) == 1 and fields[0][0] == "@")):
        raise ConfigError(f"{where}: spec.schedule {spec.get('schedule')!r} is not a five-field cron expression")
    if resource.get("kind") == "Service":
        template = spec.get("template") or {}
        for i, container in enumerate((template.get("spec") or {}).get("containers") or [{}]):
            if not container.get("image"):
                raise ConfigError(f"{where}: spec.template.spec.containers[{i}].image is not set")
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        low, high = (annotations.get(AUTOSCALING + k, d) for k, d in (("min-scale", "0"), ("max-scale", "0")))
        if not (low.isdigit() and high.isdigit()) or (int(high) and int(low) > int(high)):
            raise ConfigError(f"{where}: autoscaling min-scale {low!r} / max-scale {high!r} are not 0 <= min <= max")


def _targets(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """The references a resource's spec makes: subscriber, dead-letter sink, binding sink."""
    dead_letter = ((spec.get("delivery") or {}).get("deadLetterSink") or {}).get("ref")
    return [
        ("spec.subscriber.ref", (spec.get("subscriber") or {}).get("ref")),
        ("spec.delivery.deadLetterSink.ref", dead_letter),
        ("spec.sink.ref", (spec.get("sink") or {}).get("ref")),
    ]


def _rights(resource: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The Role, ServiceAccounts a RoleBinding names, and the ServiceAccount a Service's pods run as."""
    if resource.get("kind") == "RoleBinding":
        role_ref = resource.get("roleRef") or {}
        out: list[tuple[str, dict[str, Any]]] = [
            ("roleRef", {"apiVersion": RBAC, "kind": role_ref.get("kind"), "name": role_ref.get("name")})
        ]
        for i, subject in enumerate(resource.get("subjects") or []):
            account = {"apiVersion": "v1", "kind": subject.get("kind"), "name": subject.get("name")}
            out.append((f"subjects[{i}]", account | {"namespace": subject.get("namespace")}))
        return out
    pod = ((resource.get("spec") or {}).get("template") or {}).get("spec") or {}
    if resource.get("kind") == "Service" and pod.get("serviceAccountName"):
        account = {"apiVersion": "v1", "kind": "ServiceAccount", "name": pod["serviceAccountName"]}
        return [("spec.template.spec.serviceAccountName", account)]
    return []


def _check_references(resources: list[dict[str, Any]]) -> None:
    rendered = {
        (r.get("apiVersion"), r.get("kind"), r["metadata"].get("namespace"), r["metadata"]["name"]) for r in resources
    }
    for resource in resources:
        spec, ns = resource.get("spec") or {}, resource["metadata"].get("namespace")
        for path, right in _rights(resource):
            key = (right["apiVersion"], right["kind"], right.get("namespace") or ns, right["name"])
            if key not in rendered:
                raise ConfigError(f"{_where(resource)}: {path} names {key[1]}/{key[3]}, which is not rendered")
        if resource.get("kind") == "Trigger" and (EVENTING, "Broker", ns, spec.get("broker")) not in rendered:
            raise ConfigError(f"{_where(resource)}: spec.broker {spec.get('broker')!r} is not a rendered Broker")
        for path, target in _targets(spec):
            if not target:
                continue
            key = (target.get("apiVersion"), target.get("kind"), target.get("namespace", ns), target.get("name"))
            if key not in rendered:
                raise ConfigError(f"{_where(resource)}: {path} names {key[1]}/{key[3]}, which is not rendered")


def validate(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check every resource against Knative's schemas and knflow's rules; returns them, or raises ``ConfigError``."""
    schemas = _schemas()
    for resource in resources:
        if not isinstance(resource, dict) or not isinstance(resource.get("metadata"), dict):
            raise ConfigError(f"{_where(resource)}: a resource must be an object with metadata")
        _check_schema(resource, schemas)
        _check_rules(resource)
    _check_references(resources)
    return resources
