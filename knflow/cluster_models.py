"""What models need on a cluster: the model Service template the deploy step fills in, the deploy account and its
rights, and the ping that brings the canary judge round.

Each model is its own Knative Service (``serving.knserving``), created by the deploy step at run time, so nothing
per model is rendered: the template goes into the deploy and canary functions' environment
(``KNFLOW_SERVING_MODEL_TEMPLATE``), checked at render time by validating a Service filled in from it. The two
functions run as the ServiceAccount ``knflow-deploy``, whose Role holds exactly what they call: get, list, create
and patch Knative Services (a model's Service; listing finds open canaries), list pods and get ``pods/proxy`` (a
canary's pods' ``/metrics`` through the API server).
"""

from __future__ import annotations

import json
from typing import Any

from infra import knative
from infra.settings import KNATIVE
from serving.knserving import COMPONENT_LABELS, PORT, SERVICE_PREFIX, model_service

DEPLOY_ACCOUNT = "knflow-deploy"
#: The functions that call the Kubernetes API (as ``DEPLOY_ACCOUNT``) with the model template in their environment.
MODEL_FUNCTIONS = ("deploy", "canary")
CANARY_FUNCTION = "canary"
CANARY_PING = "knflow-canary"
CANARY_SCHEDULE = "* * * * *"  # Knative's PingSource takes whole minutes
RULES = [
    {"apiGroups": ["serving.knative.dev"], "resources": ["services"], "verbs": ["get", "list", "create", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get"]},
]
#: Inside a model's pod: one replica process on the container's one port (Knative scales the pods).
SERVER_ENV = (
    {"name": "KNFLOW_HOST", "value": "0.0.0.0"},
    {"name": "KNFLOW_GATEWAY_PORT", "value": str(PORT)},
    {"name": "KNFLOW_SERVING_MAX_REPLICAS", "value": "1"},
    # Knative's ingress routes by name, and a model pod keeps no token file: inference and /metrics (read by the
    # canary judge through the pod proxy) stay open to what the cluster routes to it, as KServe's servers do.
    {"name": "KNFLOW_SECURITY_HOSTS", "value": "*"},
    {"name": "KNFLOW_SECURITY_OPEN_INFERENCE", "value": "true"},
)


def model_template(ns: str, image: str, env: list[dict[str, Any]], gpu: dict[str, Any], labels: dict) -> dict:
    """The Knative Service every model's is made from: the one-model server from ``image``, min-scale 0, V2 REST
    on its port, func.yaml's environment (``env``), a GPU limit and placement when ``gpu`` has them."""
    spec = knative.ServiceSpec(
        name=f"{SERVICE_PREFIX}template", namespace=ns, image=image, env=(*SERVER_ENV, *env),
        command=("python", "-m", "serving.gateway"), labels=labels | COMPONENT_LABELS, min_scale=0, max_scale=10,
        target=8, container_concurrency=0, timeout_seconds=300, readiness_path="/v2/health/ready",
        liveness_path="/v2/health/live", port=PORT, metrics_path="/metrics", **gpu,
    )  # fmt: skip
    template = knative.knative_service(spec)
    knative.validate([model_service(template, "example", 1)])  # what the deploy step will send, checked now
    return template


def model_env(template: dict[str, Any]) -> list[dict[str, str]]:
    """The environment of the functions in ``MODEL_FUNCTIONS``: the knative target and the model template."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return [
        {"name": "KNFLOW_SERVING_TARGET", "value": KNATIVE},
        {"name": "KNFLOW_SERVING_MODEL_TEMPLATE", "value": text},
    ]


def rights(ns: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The ServiceAccount of ``MODEL_FUNCTIONS``, its Role (``RULES``) and the binding between them."""
    return [
        knative.service_account(DEPLOY_ACCOUNT, ns, labels),
        knative.role(DEPLOY_ACCOUNT, ns, RULES, labels),
        knative.role_binding(DEPLOY_ACCOUNT, ns, DEPLOY_ACCOUNT, DEPLOY_ACCOUNT, labels),
    ]


def canary_ping(ns: str, service: str, labels: dict[str, str]) -> dict[str, Any]:
    """The PingSource that sends the canary function (Service ``service``) a ping every minute."""
    sink = knative.ref(knative.SERVING, "Service", service)
    return knative.ping_source(CANARY_PING, ns, CANARY_SCHEDULE, '{"judge": "canaries"}', sink, labels)
