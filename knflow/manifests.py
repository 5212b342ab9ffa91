"""knflow on Knative: the Kafka Broker, the Triggers of every pipeline, one Service per function instance, and what
models (``knflow.cluster_models``) and MinIO's notifications (``knflow.cluster_arrivals``) need.

``render(func_yaml, options, pipelines)`` reads the one image and its environment from ``func.yaml`` and
composes the generic builders of ``infra.knative`` into validated resources. The Triggers are the local
broker's triggers of each pipeline spec one-to-one (``functions.runtime.pipeline.pipeline_triggers``): same
names, filters, retry and backoff. Each step runs in the Service of its function instance (a built-in
function from the one image, with the step's settings in its environment when it has any, or the step's
own ``image``). A user's function (a function directory, or a function deployed with ``knflow deploy``) runs
from its own image — the step's ``image``, else its func.yaml's ``image`` — with that image's own entrypoint
(what ``func build`` makes), and is refused at render time when it has neither. Knative's Trigger schema
(1.17) has no per-attempt ``delivery.timeout``, so the local timeout becomes the subscriber Service's
``timeoutSeconds`` (train/tune: 1800 s, which needs ``max-revision-timeout-seconds`` >= 1800 in Knative's
``config-defaults``). Every Trigger's
``deadLetterSink`` is the ``deadletter`` function's Service, which emits ``dev.knflow.step.failed`` into the
broker as knflow's own broker does. Each schedule is a PingSource into the broker whose pings a Trigger
brings to the ``schedule`` function's Service, as locally (``knflow.schedules``). No inference gateway is
rendered: the local gateway is the laptop's stand-in for Knative Serving, and on a cluster each model is its own
Knative Service, created by the deploy step from the model template rendered into its environment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from functions.contract import lifecycle_spec_path
from functions.runtime.funcdir import read_function_dir
from functions.runtime.loader import KNOWN_FUNCTIONS
from functions.runtime.pipeline import (
    SETTINGS_ENV,
    PipelineSpec,
    Step,
    delivery_spec,
    function_name,
    instance_name,
    is_directory,
    load_pipeline,
    pipeline_triggers,
)
from infra import knative, trainjob
from infra.durations import parse_duration
from infra.errors import ConfigError, KnflowError
from infra.settings import parse_broker_url
from knflow import cluster_arrivals, cluster_models
from knflow.schedules import SCHEDULE_FUNCTION, Schedule, schedule_trigger

PART_OF = {"app.kubernetes.io/part-of": "knflow"}
FUNCTION_LABELS = PART_OF | {"knflow.dev/component": "function"}
#: The dead-letter sink of every Trigger: turns Knative's dead letters into step.failed events.
DEAD_LETTER_FUNCTION = "deadletter"
_SECRET_REF = re.compile(r"^\{\{\s*secret:([^:\s]+):([^\s}]+)\s*\}\}$")
_TEMPLATE = re.compile(r"\{\{.*\}\}")
#: The ServiceAccount train runs as: it may create, get and watch Kubeflow Trainer TrainJobs, nothing more.
TRAIN_ACCOUNT = "knflow-train"
#: The ServiceAccount every other function runs as: no rights, and no API token mounted in its pods.
FUNCTION_ACCOUNT = "knflow-function"
#: Events in flight per replica: training and tuning use the CPU/GPU of their pod alone.
CONCURRENCY = {"train": 1, "tune": 4}
DEFAULT_CONCURRENCY = 10


@dataclass(frozen=True)
class ManifestOptions:
    """What a cluster user chooses: namespace, broker, image, Kafka topic shape, GPU placement."""

    namespace: str | None = None  # None: func.yaml's deploy.namespace
    broker: str = "knflow"
    image: str | None = None  # None: func.yaml's image
    partitions: int = 10
    replication_factor: int = 3
    gpu: bool = False
    gpu_node_selector: tuple[tuple[str, str], ...] = ()
    gpu_toleration: bool = True
    minio_topic: str | None = None  # MinIO's Kafka notification topic: a KafkaSource starting the first pipeline
    minio_kafka: tuple[str, ...] = ()  # its bootstrap servers; empty: the Broker's


def function_service_name(function: str) -> str:
    """The Knative Service that hosts ``function``."""
    return f"knflow-{function}"


def read_func_yaml(path: str | Path) -> dict[str, Any]:
    """func.yaml as a dict; ``ConfigError`` when it is missing or has no image."""
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(spec, dict) or not spec.get("image"):
        raise ConfigError(f"{path}: no image set (func.yaml's 'image' names the one image of every function)")
    return spec


def container_env(func: dict[str, Any]) -> list[dict[str, Any]]:
    """func.yaml's run.envs as container env: ``{{ secret:NAME:KEY }}`` becomes a secretKeyRef."""
    out = []
    for item in (func.get("run") or {}).get("envs") or []:
        name, value = item["name"], str(item.get("value", ""))
        if name == "KNFLOW_FUNCTION":
            continue
        secret = _SECRET_REF.match(value)
        if secret:
            out.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret[1], "key": secret[2]}}})
        elif _TEMPLATE.search(value):
            raise ConfigError(
                f"func.yaml run.envs {name}: template {value!r} is not supported; use {{{{ secret:NAME:KEY }}}}"
            )
        else:
            out.append({"name": name, "value": value})
    return out


def _gpu(options: ManifestOptions) -> dict[str, Any]:
    if not options.gpu:
        return {}
    tolerations = (
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},) if options.gpu_toleration else ()
    )
    return {
        "limits": {"nvidia.com/gpu": "1"},
        "node_selector": dict(options.gpu_node_selector),
        "tolerations": tolerations,
    }


def _service(func: dict, ns: str, image: str, **fields: Any) -> dict[str, Any]:
    deploy = (func.get("deploy") or {}).get("options") or {}
    scale, requests = deploy.get("scale") or {}, (deploy.get("resources") or {}).get("requests") or {}
    base: dict[str, Any] = {
        "namespace": ns,
        "image": image,
        "min_scale": int(scale.get("min", 0)),
        "max_scale": int(scale.get("max", 10)),
    }
    base["requests"] = {k: str(v) for k, v in requests.items()}
    return knative.knative_service(knative.ServiceSpec(**(base | fields)))


@dataclass(frozen=True)
class Instance:
    """One function instance of the pipelines: the Service name, the function, its step settings, its image."""

    name: str
    function: str
    settings: str  # the step's settings as JSON, "" when it has none
    image: str | None
    own: bool = False  # a user's function: its own image and entrypoint


def instances(pipelines: list[PipelineSpec], images: Mapping[str, str] | None = None) -> dict[str, Instance]:
    """Every function instance the pipelines' steps run in (steps of one function without settings share one).
    ``images``: the image of each function deployed with ``knflow deploy`` (from its func.yaml)."""
    out: dict[str, Instance] = {}
    for spec in pipelines:
        for step in spec.steps:
            name, function = instance_name(spec, step), function_name(step.function)
            settings = json.dumps(step.settings, sort_keys=True) if step.settings else ""
            own = function not in KNOWN_FUNCTIONS
            image = user_image(spec, step, images or {}) if own else step.image
            out.setdefault(name, Instance(name, function, settings, image, own))
    return out


def user_image(spec: PipelineSpec, step: Step, images: Mapping[str, str]) -> str:
    """The image a user's function runs from: the step's ``image``, else the one recorded when it was deployed."""
    image = step.image or images.get(function_name(step.function))
    if not image:
        raise ConfigError(
            f"pipeline {spec.name}, step {step.name}: function {step.function!r} is not in knflow's image and names "
            "no image of its own: set `image` in its func.yaml (func build writes it) or give the step an `image`"
        )
    return image


def deployed_as(spec: PipelineSpec) -> PipelineSpec:
    """The spec with each function directory named as it deploys (func.yaml's ``name``), carrying func.yaml's
    ``image`` unless the step names one: the Services and Triggers then have the names the local runner uses."""
    steps = []
    for step in spec.steps:
        if is_directory(step.function):
            try:
                meta = read_function_dir(step.function).meta
            except KnflowError as exc:
                raise ConfigError(f"pipeline {spec.name}, step {step.name}: {exc.message}") from None
            step = step.model_copy(update={"function": meta.name, "image": step.image or meta.image})
        steps.append(step)
    return spec.model_copy(update={"spec": spec.spec.model_copy(update={"steps": steps})})


def function_services(
    func: dict,
    options: ManifestOptions,
    ns: str,
    image: str,
    timeouts: dict[str, int],
    pipelines: list[PipelineSpec],
    images: Mapping[str, str] | None = None,
    platform_functions: tuple[str, ...] = (DEAD_LETTER_FUNCTION,),
    model_template: dict[str, Any] | None = None,
) -> list[dict]:
    """One Knative Service per function instance, from ``image`` unless its step names its own, and one per
    platform function (the dead-letter sink, the canary judge, the schedules', MinIO's arrivals); KNFLOW_FUNCTION
    picks the function, KNFLOW_STEP_SETTINGS carries a step's settings; deploy and the canary judge get the model
    template and run as the deploy account."""
    env, out = container_env(func), []
    platform = [Instance(name, name, "", None) for name in platform_functions]
    for inst in [*instances(pipelines, images).values(), *platform]:
        if inst.own:
            out.append(user_service(func, ns, env, timeouts, inst))
            continue
        concurrency = CONCURRENCY.get(inst.function, DEFAULT_CONCURRENCY)
        own = [{"name": "KNFLOW_FUNCTION", "value": inst.function}, {"name": "LISTEN_ADDRESS", "value": "0.0.0.0:8080"}]
        if inst.settings:
            own.append({"name": SETTINGS_ENV, "value": inst.settings})
        account = FUNCTION_ACCOUNT
        if inst.function in cluster_models.MODEL_FUNCTIONS and model_template is not None:
            own += cluster_models.model_env(model_template)
            account = cluster_models.DEPLOY_ACCOUNT
        if inst.function == "train":
            own += training_env(ns, inst.image or image, env)
            account = TRAIN_ACCOUNT
        gpu = _gpu(options) if inst.function == "train" else {}
        labels = FUNCTION_LABELS | {"knflow.dev/function": inst.function}
        out.append(_service(
            func, ns, inst.image or image, name=function_service_name(inst.name), env=tuple(own + env),
            command=("python", "-m", "functions.runtime.host"), labels=labels, service_account=account,
            target=concurrency, container_concurrency=concurrency, timeout_seconds=timeouts.get(inst.name, 120),
            metrics_path="/metrics", **gpu,
        ))  # fmt: skip
    return out


def training_env(ns: str, image: str, env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What makes train run a training in several workers (or with GPUs) as a Kubeflow Trainer TrainJob in ``ns``:
    knflow's image, and func.yaml's environment (the store and its credentials) for the workers."""
    return [
        {"name": "KNFLOW_TRAINING_TARGET", "value": "kubernetes"},
        {"name": "KNFLOW_TRAINING_NAMESPACE", "value": ns},
        {"name": "KNFLOW_TRAINING_IMAGE", "value": image},
        {"name": "KNFLOW_TRAINING_ENV", "value": json.dumps(env, sort_keys=True)},
    ]


def user_service(func: dict, ns: str, env: list[dict], timeouts: dict[str, int], inst: Instance) -> dict[str, Any]:
    """A user function's Service: its own image and entrypoint, knflow's settings and its step's settings."""
    own = [{"name": "LISTEN_ADDRESS", "value": "0.0.0.0:8080"}]
    if inst.settings:
        own.append({"name": SETTINGS_ENV, "value": inst.settings})
    labels = FUNCTION_LABELS | {"knflow.dev/function": inst.function}
    return _service(
        func, ns, inst.image or "", name=function_service_name(inst.name), env=tuple(own + env), labels=labels,
        service_account=FUNCTION_ACCOUNT, target=DEFAULT_CONCURRENCY, container_concurrency=DEFAULT_CONCURRENCY,
        timeout_seconds=timeouts.get(inst.name, 120),
    )  # fmt: skip


def trigger_resources(
    ns: str, broker: str, dead_letter: dict, pipelines: list[PipelineSpec]
) -> tuple[list[dict], dict[str, int]]:
    """The pipelines' local triggers as Knative Triggers, and each instance's request timeout in seconds."""
    resources: list[dict] = []
    timeouts: dict[str, int] = {}
    for spec in pipelines:

        def url(step: Step, spec: PipelineSpec = spec) -> str:
            return f"http://knflow.invalid/{instance_name(spec, step)}"

        local = pipeline_triggers(spec, url)
        for trigger in local:
            name = trigger.subscriber.rsplit("/", 1)[-1]
            delivery = trigger.delivery.to_spec() if trigger.delivery else {}
            seconds = int(parse_duration(delivery.pop("timeout", None)) or 300)  # no per-attempt timeout in the schema
            timeouts[name] = max(timeouts.get(name, 0), seconds)
            subscriber = knative.ref(knative.SERVING, "Service", function_service_name(name))
            delivery |= {"deadLetterSink": dead_letter}
            resources.append(
                knative.trigger(trigger.name, ns, broker, trigger.filter, subscriber, delivery, trigger.filters)
            )
    return resources, timeouts


def broker_servers(func: dict) -> list[str]:
    """The Kafka bootstrap servers of func.yaml's ``KNFLOW_BROKER``."""
    envs = {e["name"]: str(e.get("value", "")) for e in (func.get("run") or {}).get("envs") or []}
    return list(parse_broker_url(envs.get("KNFLOW_BROKER", ""), setting="func.yaml KNFLOW_BROKER").servers)


def eventing_resources(
    func: dict, options: ManifestOptions, ns: str, dead_letter: dict, defaults_of: PipelineSpec
) -> list[dict[str, Any]]:
    """The namespace, the Kafka broker config and the Broker with the (first) pipeline's delivery defaults."""
    servers = broker_servers(func)
    plain = defaults_of.steps[0].model_copy(update={"delivery": None})  # the pipeline's own defaults
    defaults = {k: v for k, v in delivery_spec(defaults_of, plain).to_spec().items() if k != "timeout"}
    defaults["deadLetterSink"] = dead_letter
    config = knative.kafka_broker_config(
        "kafka-broker-config", ns, servers, partitions=options.partitions, replication_factor=options.replication_factor
    )
    return [
        knative.namespace(ns, PART_OF | {"bindings.knative.dev/include": "true"}),
        config,
        knative.kafka_broker(options.broker, ns, "kafka-broker-config", defaults),
    ]


def schedule_resources(ns: str, broker: str, dead_letter: dict, schedules: list[Schedule]) -> list[dict[str, Any]]:
    """Each schedule as a PingSource into the broker, and the Trigger that brings their pings to the ``schedule``
    function (as the local platform does); ``ConfigError`` for a seconds-level schedule, which runs only locally."""
    if not schedules:
        return []
    sink = knative.ref(knative.EVENTING, "Broker", broker)
    trigger = schedule_trigger("http://knflow.invalid/")
    subscriber = knative.ref(knative.SERVING, "Service", function_service_name(SCHEDULE_FUNCTION))
    delivery = {**(trigger.delivery.to_spec() if trigger.delivery else {}), "deadLetterSink": dead_letter}
    delivery.pop("timeout", None)  # no per-attempt timeout in Knative's Trigger schema
    out = [knative.trigger(trigger.name, ns, broker, trigger.filter, subscriber, delivery)]
    for schedule in schedules:
        if schedule.seconds_level:
            raise ConfigError(
                f"schedule {schedule.name}: {schedule.cron!r} has a seconds field, which only the local platform "
                "runs; Knative's PingSource takes five fields"
            )
        data = json.dumps(schedule.ping_data(), sort_keys=True)
        out.append(knative.ping_source(schedule.name, ns, schedule.cron, data, sink, PART_OF))
    return out


def source_resources(func: dict, options: ManifestOptions, ns: str, dead_letter: dict, pipeline: str) -> list[dict]:
    """The ping that brings the canary judge round, and with ``minio_topic`` the KafkaSource on MinIO's
    notifications, whose runs take ``pipeline``."""
    out = [cluster_models.canary_ping(ns, function_service_name(cluster_models.CANARY_FUNCTION), PART_OF)]
    if options.minio_topic:
        servers = list(options.minio_kafka) or broker_servers(func)
        service = function_service_name(cluster_arrivals.MINIO_FUNCTION)
        topic = options.minio_topic
        out.append(cluster_arrivals.minio_source(ns, servers, topic, pipeline, service, dead_letter, PART_OF))
    return out


def render(
    func_yaml: str | Path,
    options: ManifestOptions | None = None,
    pipelines: list[PipelineSpec] | None = None,
    images: Mapping[str, str] | None = None,
    schedules: list[Schedule] | None = None,
) -> list[dict[str, Any]]:
    """Every resource knflow needs in a cluster for ``pipelines`` (default: the shipped lifecycle) and
    ``schedules``, validated, in apply order. ``images``: the image of each function deployed with
    ``knflow deploy``, by name."""
    options = options or ManifestOptions()
    pipelines = [deployed_as(p) for p in pipelines or [load_pipeline(lifecycle_spec_path())]]
    _check_unique(pipelines)
    func = read_func_yaml(func_yaml)
    ns = options.namespace or (func.get("deploy") or {}).get("namespace") or "knflow"
    image = options.image or func["image"]
    dls = {"ref": knative.ref(knative.SERVING, "Service", function_service_name(DEAD_LETTER_FUNCTION))}
    resources = eventing_resources(func, options, ns, dls, pipelines[0])
    triggers, timeouts = trigger_resources(ns, options.broker, dls, pipelines)
    triggers += schedule_resources(ns, options.broker, dls, schedules or [])
    platform: tuple[str, ...] = (DEAD_LETTER_FUNCTION, cluster_models.CANARY_FUNCTION)
    platform += (SCHEDULE_FUNCTION,) if schedules else ()
    platform += (cluster_arrivals.MINIO_FUNCTION,) if options.minio_topic else ()
    template = cluster_models.model_template(ns, image, container_env(func), _gpu(options), PART_OF)
    resources += cluster_models.rights(ns, PART_OF)
    resources += trainjob.rbac(ns, TRAIN_ACCOUNT, PART_OF)
    resources.append(knative.service_account(FUNCTION_ACCOUNT, ns, PART_OF, token=False))
    resources += function_services(func, options, ns, image, timeouts, pipelines, images, platform, template)
    broker = knative.ref(knative.EVENTING, "Broker", options.broker)
    resources.append(knative.sink_binding("knflow-functions-sink", ns, FUNCTION_LABELS, broker))
    sources = source_resources(func, options, ns, dls, pipelines[0].name)
    return knative.validate(resources + triggers + sources)


def _check_unique(pipelines: list[PipelineSpec]) -> None:
    names = [p.name for p in pipelines]
    if len(set(names)) != len(names):
        raise ConfigError(f"pipelines must have different names: {names}")


class _NoAliases(yaml.SafeDumper):
    """Writes a repeated object out in full: kubectl users read YAML without anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(resources: list[dict[str, Any]], header: str = "") -> str:
    """Multi-document YAML, one resource per document."""
    body = "---\n".join(yaml.dump(r, Dumper=_NoAliases, sort_keys=False, default_flow_style=False) for r in resources)
    return header + body


def secret_note(func: dict[str, Any], ns: str) -> str:
    """A YAML comment naming the Secrets the Services reference (never their values)."""
    keys: dict[str, list[str]] = {}
    for item in (func.get("run") or {}).get("envs") or []:
        match = _SECRET_REF.match(str(item.get("value", "")))
        if match:
            keys.setdefault(match[1], []).append(match[2])
    lines = [
        f"# kubectl -n {ns} create secret generic {name} " + " ".join(f"--from-literal={k}=..." for k in ks)
        for name, ks in keys.items()
    ]
    return "".join(
        f"{line}\n"
        for line in ["# Secrets referenced below (create them first; knflow never renders credentials):", *lines]
    )
