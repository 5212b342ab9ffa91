"""Kubeflow Trainer's TrainJob (``trainer.kubeflow.org/v1alpha1``): the resource as a plain dict, validated against the
typed models the ``kubeflow-trainer-api`` package generates from Trainer's OpenAPI schema, and a client that creates
one and watches it to its end through the Kubernetes API (verbs ``create``, ``get`` and ``watch`` on ``trainjobs``,
nothing more: ``rbac`` renders that Role for a ServiceAccount).

The torch runtime runs ``numNodes`` pods of the given command and sets torchrun's ``PET_*`` environment in each
(nodes, processes per node, node rank, master address and port), so the command is a ``torchrun`` of its own. The
``kubernetes`` client is imported where it is used: the train step and its workers import this module for
``TrainJobError`` alone.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from infra import knative
from infra.errors import ConfigError, KnflowError, Unavailable
from infra.knative import unknown_field

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
API_VERSION = f"{GROUP}/{VERSION}"
#: the one Role rule the creator of TrainJobs gets: create them, read one, watch them (how it waits), nothing more
RBAC_RULE = {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get", "watch"]}
#: environment variables Trainer's torch runtime sets itself and refuses in a TrainJob
RESERVED_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class TrainJobError(KnflowError):
    """A TrainJob failed, or the cluster refused one (RBAC, no Trainer, invalid): another attempt gives the same, so
    it is not retried (424 Failed Dependency)."""

    status = 424
    retryable = False


@dataclass(frozen=True)
class TrainJobSpec:
    """One TrainJob: ``num_nodes`` pods of ``image`` running ``command``, each with ``gpus_per_node`` GPUs."""

    name: str
    namespace: str
    image: str
    command: tuple[str, ...]
    num_nodes: int
    runtime: str = "torch-distributed"
    env: tuple[dict[str, Any], ...] = ()
    gpus_per_node: int = 0
    resources: dict[str, Any] = field(default_factory=dict)  # a ResourceRequirements: requests and limits
    deadline_s: int = 1800
    labels: dict[str, str] = field(default_factory=dict)


def train_job(spec: TrainJobSpec) -> dict[str, Any]:
    """The TrainJob resource of ``spec``, validated."""
    resources = {kind: dict(values) for kind, values in spec.resources.items() if values}
    if spec.gpus_per_node:
        resources["limits"] = {**resources.get("limits", {}), "nvidia.com/gpu": str(spec.gpus_per_node)}
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command),
        "numNodes": spec.num_nodes,
        "numProcPerNode": 1,  # one process per node: a node is one worker
    }
    if spec.env:
        trainer["env"] = [dict(e) for e in spec.env]
    if resources:
        trainer["resourcesPerNode"] = resources
    metadata: dict[str, Any] = {"name": spec.name, "namespace": spec.namespace}
    if spec.labels:
        metadata["labels"] = dict(spec.labels)
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {"runtimeRef": {"name": spec.runtime}, "activeDeadlineSeconds": spec.deadline_s, "trainer": trainer},
    }
    return validate(body)


def validate(resource: dict[str, Any]) -> dict[str, Any]:
    """Check a TrainJob against Trainer's schema (strict types; a field the schema lacks is an error, as an API server
    would prune it) and the rules its webhook applies; returns it, or raises ConfigError naming what is wrong."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    name = (resource.get("metadata") or {}).get("name", "?")
    where = f"TrainJob/{name}"
    if resource.get("apiVersion") != API_VERSION or resource.get("kind") != KIND:
        raise ConfigError(f"{where}: apiVersion/kind must be {API_VERSION} {KIND}")
    try:
        model = TrainerV1alpha1TrainJob.from_dict(resource)
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"{where}: {str(exc).splitlines()[0]}: {' '.join(str(exc).split()[1:8])}") from None
    dropped = unknown_field(resource, model.to_dict() if model else {}, "")
    if dropped:
        raise ConfigError(f"{where}: unknown field {dropped!r} (not in the TrainJob schema; an API server prunes it)")
    _check_rules(resource, where)
    return resource


def _check_rules(resource: dict[str, Any], where: str) -> None:
    name = resource["metadata"].get("name", "")
    if not isinstance(name, str) or len(name) > 63 or not _DNS1035.match(name):
        raise ConfigError(f"{where}: metadata.name must be a DNS-1035 label of at most 63 characters")
    trainer = resource["spec"].get("trainer") or {}
    if not trainer.get("image") or not trainer.get("command"):
        raise ConfigError(f"{where}: spec.trainer needs an image and a command")
    if int(trainer.get("numNodes", 1)) < 1:
        raise ConfigError(f"{where}: spec.trainer.numNodes must be at least 1")
    reserved = sorted({e["name"] for e in trainer.get("env") or []} & set(RESERVED_ENV))
    if reserved:
        raise ConfigError(f"{where}: spec.trainer.env must not set {reserved}: Trainer's torch runtime sets them")
    if int(resource["spec"].get("activeDeadlineSeconds", 1)) < 1:
        raise ConfigError(f"{where}: spec.activeDeadlineSeconds must be positive")


def rbac(namespace: str, account: str, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The ServiceAccount a train function runs as, a Role holding ``RBAC_RULE`` alone, and their RoleBinding."""
    name = f"{account}-trainjobs"
    return [
        knative.service_account(account, namespace, labels),
        knative.role(name, namespace, [RBAC_RULE], labels),
        knative.role_binding(name, namespace, name, account, labels),
    ]


@dataclass(frozen=True)
class Outcome:
    """How a TrainJob ended: Complete, or Failed with Trainer's reason and message."""

    complete: bool
    reason: str = ""
    message: str = ""


def outcome_of(train_job: dict[str, Any]) -> Outcome | None:
    """The outcome its status conditions say (``Complete`` or ``Failed`` true), None while it runs."""
    for condition in (train_job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return Outcome(True, condition.get("reason", ""), condition.get("message", ""))
        if condition.get("type") == "Failed":
            return Outcome(False, condition.get("reason", ""), condition.get("message", ""))
    return None


class TrainJobClient:
    """Creates TrainJobs in a namespace and watches one until it completes or fails."""

    def __init__(self, api_client: Any, namespace: str, *, watch_chunk_s: int = 300) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.namespace, self.watch_chunk_s = namespace, watch_chunk_s

    def create(self, resource: dict[str, Any]) -> bool:
        """POST it; False when one of that name exists already (an earlier delivery created it: watch that one)."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, resource, _headers={"Content-Type": "application/json"}
            )  # the client sends no Content-Type of its own
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise _api_error(f"create TrainJob {resource['metadata']['name']}", exc) from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise Unavailable(f"the Kubernetes API did not answer creating a TrainJob: {exc}") from None
        return True

    def wait(self, name: str, timeout_s: float) -> Outcome:
        """Watch the TrainJob (field selector on its name) until it completes or fails; Unavailable after
        ``timeout_s`` (the step is retried and watches it again)."""
        import urllib3
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                    field_selector=f"metadata.name={name}", timeout_seconds=max(1, int(min(left, self.watch_chunk_s))),
                ):  # fmt: skip
                    outcome = outcome_of(event.get("object") or {}) if event.get("type") != "ERROR" else None
                    if outcome is not None:
                        return outcome
            except ApiException as exc:
                raise _api_error(f"watch TrainJob {name}", exc) from None
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                log.warning("watching TrainJob %s: %s; watching again", name, exc)
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            finally:
                stream.stop()
        raise Unavailable(f"TrainJob {name} did not finish within {timeout_s:g} s")


def _api_error(what: str, exc: Any) -> KnflowError:
    """401/403/404/422 say the cluster refuses (RBAC, no Trainer installed, invalid): not retried; others are."""
    text = f"{what}: HTTP {exc.status} {exc.reason}: {(exc.body or '')[:300]}"
    if exc.status in (400, 401, 403, 404, 422):
        return TrainJobError(text)
    return Unavailable(text)
