"""Models on Knative Serving: one Knative Service per model, a revision per model version, a canary as the Service's
own traffic block, and the canary's request counts read from its pods' ``/metrics``.

``KnativeModels(api, template)`` makes every call through ``infra.kubeapi.KubeApi``. A model's Service is the
``serving.model_template`` Service (``knflow manifests`` renders it into the deploy function's environment) named
``knflow-model-<model>``, its revision ``<service>-v<version>``, running the one-model server (``python -m
serving.gateway`` with ``KNFLOW_SERVING_MODEL`` and ``KNFLOW_SERVING_MODEL_VERSION``). An open canary is written on the
Service itself (annotation ``knflow.dev/canary``: its revision and thresholds, the main revision it splits traffic
with, the run to tell, the counts read so far), so whoever judges it keeps no state; every change of an existing
Service carries its ``resourceVersion``, so two judges never both conclude one canary.

Counts come from each pod of the canary revision through the API server's pod proxy
(``/api/v1/namespaces/NS/pods/POD:8080/proxy/metrics``), not from the Service URL: each pod counts only its own
requests, while the Service URL (or the API server's service proxy) reaches one pod per request, and through the
activator would wake a revision scaled to zero. A pod's last reading is kept when it goes away, so counts survive
scale-down; what a pod served after its last reading is lost.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from infra.errors import ConfigError, InvalidRequest, NotFound, Unavailable
from infra.kubeapi import KubeApi, api_client
from infra.settings import Settings
from serving.rollout import Announce, Canary, RolloutPolicy, canary_from_dict

log = logging.getLogger(__name__)
SERVICE_PREFIX = "knflow-model-"
CANARY_TAG = "canary"
CANARY_ANNOTATION = "knflow.dev/canary"
MODEL_LABEL = "knflow.dev/model"
COMPONENT_LABELS = {"app.kubernetes.io/part-of": "knflow", "knflow.dev/component": "model"}
MODEL_ENV, VERSION_ENV = "KNFLOW_SERVING_MODEL", "KNFLOW_SERVING_MODEL_VERSION"
PORT = 8080  # the one-model server's port (Knative gives a container one)
MAX_MODEL_NAME = 40  # the tag route's host label "canary-knflow-model-<model>" must stay within 63 characters
_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def service_name(model: str) -> str:
    """The Knative Service of ``model``; ``InvalidRequest`` for a name Kubernetes cannot take."""
    if len(model) > MAX_MODEL_NAME or not _LABEL.match(model):
        raise InvalidRequest(
            f"model name {model!r} cannot name a Knative Service: use lowercase letters, digits and '-', starting "
            f"with a letter, at most {MAX_MODEL_NAME} characters"
        )
    return SERVICE_PREFIX + model


def revision_name(model: str, version: int) -> str:
    """The Knative revision that serves ``version`` of ``model``."""
    return f"{service_name(model)}-v{int(version)}"


def load_template(text: str) -> dict[str, Any]:
    """The model Service template (JSON); ``ConfigError`` when it is not a namespaced one-container Service."""
    try:
        template = json.loads(text)
        ok = template["kind"] == "Service" and template["metadata"]["namespace"]
        ok = ok and len(template["spec"]["template"]["spec"]["containers"]) == 1
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ConfigError("KNFLOW_SERVING_MODEL_TEMPLATE is not a namespaced Knative Service with one container")
    return template


def model_service(template: dict[str, Any], model: str, version: int) -> dict[str, Any]:
    """The template filled in for ``version`` of ``model``: names, labels and the one-model server's environment."""
    body = copy.deepcopy(template)
    labels = {**body["metadata"].get("labels", {}), **COMPONENT_LABELS, MODEL_LABEL: model}
    body["metadata"] = {**body["metadata"], "name": service_name(model), "labels": labels}
    revision = body["spec"]["template"]
    revision_labels = {**(revision.get("metadata") or {}).get("labels", {}), **COMPONENT_LABELS, MODEL_LABEL: model}
    revision["metadata"] = {
        **(revision.get("metadata") or {}), "name": revision_name(model, version), "labels": revision_labels,
    }  # fmt: skip
    container = revision["spec"]["containers"][0]
    env = [e for e in container.get("env") or [] if e["name"] not in (MODEL_ENV, VERSION_ENV)]
    container["env"] = [*env, {"name": MODEL_ENV, "value": model}, {"name": VERSION_ENV, "value": str(int(version))}]
    return body


def request_counts(metrics_text: str) -> tuple[int, int]:
    """(requests, errors) a model server's ``/metrics`` reports: ``knflow_requests_total``, errors its 5xx answers."""
    requests = errors = 0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "knflow_requests_total":
                requests += int(sample.value)
                errors += int(sample.value) if sample.labels.get("code", "").startswith("5") else 0
    return requests, errors


@dataclass(frozen=True)
class CanaryRecord:
    """An open canary as the model Service's annotation holds it: the canary, the revision it splits traffic with,
    each pod's last reading (requests, errors), the counts of pods gone or restarted, and once judged, the verdict
    and its wording (kept before anything acts on it, so a judge that went down midway finishes the same verdict)."""

    canary: Canary
    main: str
    pods: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    carried: tuple[int, int] = (0, 0)
    verdict: str | None = None
    decision: str | None = None

    def totals(self) -> tuple[int, int]:
        """(requests, errors) the canary revision has answered, as far as read."""
        readings = [self.carried, *self.pods.values()]
        return sum(r for r, _ in readings), sum(e for _, e in readings)

    def read(self, readings: dict[str, tuple[int, int] | None]) -> CanaryRecord:
        """The record after a reading of the revision's pods (None: a pod listed but not read this time)."""
        carried = self.carried
        for name, old in self.pods.items():
            new = readings.get(name)
            if name not in readings or (new is not None and new[0] < old[0]):  # gone, or its server restarted
                carried = (carried[0] + old[0], carried[1] + old[1])
        pods = {name: new if new is not None else self.pods.get(name, (0, 0)) for name, new in readings.items()}
        return dataclasses.replace(self, pods=pods, carried=carried)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CanaryRecord:
        raw = json.loads(text)
        canary = canary_from_dict(raw["canary"])
        assert canary is not None
        pods = {name: (int(r), int(e)) for name, (r, e) in raw.get("pods", {}).items()}
        carried = tuple(raw.get("carried", (0, 0)))
        return cls(canary, raw["main"], pods, carried, raw.get("verdict"), raw.get("decision"))


def main_revision(service: dict[str, Any]) -> str | None:
    """The revision taking the largest share of the Service's traffic that is not the canary, or None."""
    targets = [
        t for t in (service.get("spec") or {}).get("traffic") or []
        if t.get("revisionName") and t.get("tag") != CANARY_TAG and t.get("percent", 0) > 0
    ]  # fmt: skip
    if targets:
        return max(targets, key=lambda t: t["percent"])["revisionName"]
    return (service.get("status") or {}).get("latestReadyRevisionName")


def takes_traffic(service: dict[str, Any], revision: str) -> bool:
    """Whether ``revision`` has a share of the Service's traffic."""
    targets = (service.get("spec") or {}).get("traffic") or []
    return any(t.get("revisionName") == revision and t.get("percent", 0) > 0 for t in targets)


class KnativeModels:
    """The models of one namespace as Knative Services; every call goes to the Kubernetes API (``KubeApi``)."""

    def __init__(self, api: KubeApi, template: dict[str, Any]):
        self.api, self.template = api, template
        self.ns = template["metadata"]["namespace"]
        self.services = f"/apis/serving.knative.dev/v1/namespaces/{self.ns}/services"

    def __enter__(self) -> KnativeModels:
        return self

    def __exit__(self, *exc: object) -> None:
        close = getattr(self.api.client, "close", None)
        if close:
            close()

    def get(self, model: str) -> dict[str, Any] | None:
        """The model's Service, or None when it has none."""
        try:
            return self.api.get(f"{self.services}/{service_name(model)}")
        except NotFound:
            return None

    def endpoint(self, model: str) -> str:
        """The V2 inference URL of ``model`` inside the cluster."""
        return f"http://{service_name(model)}.{self.ns}.svc.cluster.local/v2/models/{model}/infer"

    def deploy(
        self, model: str, version: int, percent: int, policy: RolloutPolicy, announce: Announce | None = None
    ) -> dict[str, Any]:
        """Create or patch the model's Service so ``version`` takes ``percent`` of its traffic: a canary (tagged
        ``canary``, judged later by its pods' counts) beside the main revision, or all of it when there is none."""
        body = model_service(self.template, model, version)
        revision = body["spec"]["template"]["metadata"]["name"]
        current = self.get(model)
        main = main_revision(current) if current else None
        record = None
        if main is None or main == revision or percent >= 100:
            traffic = [{"revisionName": revision, "percent": 100}]
        else:
            traffic = [
                {"revisionName": main, "percent": 100 - percent},
                {"revisionName": revision, "percent": percent, "tag": CANARY_TAG},
            ]
            record = CanaryRecord(Canary(revision, int(version), policy, announce), main)
        if current is None:
            self.api.create(self.services, body | {"spec": {**body["spec"], "traffic": traffic}})
        else:
            annotations = {CANARY_ANNOTATION: record.to_json() if record else None}
            self._patch(current, {"template": body["spec"]["template"], "traffic": traffic}, annotations)
        share = traffic[-1]["percent"]
        log.info("knative: %s/%s as revision %s takes %d%% of its traffic", model, version, revision, share)
        return {"revision": revision, "traffic_percent": share, "canary": record is not None,
                "endpoint": self.endpoint(model)}  # fmt: skip

    def _patch(
        self, current: dict[str, Any], spec: dict[str, Any] | None, annotations: dict[str, Any]
    ) -> dict[str, Any]:
        meta = current["metadata"]
        patch: dict[str, Any] = {"metadata": {"resourceVersion": meta["resourceVersion"], "annotations": annotations}}
        if spec is not None:
            patch["spec"] = spec
        return self.api.patch(f"{self.services}/{meta['name']}", patch)

    def open_canaries(self) -> list[tuple[dict[str, Any], CanaryRecord]]:
        """Every model Service with an open canary, and its record."""
        out = []
        for service in self.api.list(self.services, "knflow.dev/component=model"):
            text = (service["metadata"].get("annotations") or {}).get(CANARY_ANNOTATION)
            if text:
                out.append((service, CanaryRecord.from_json(text)))
        return out

    def read_counts(self, record: CanaryRecord) -> CanaryRecord:
        """The record after reading ``/metrics`` of each running pod of the canary revision."""
        pods_path = f"/api/v1/namespaces/{self.ns}/pods"
        pods = self.api.list(pods_path, f"serving.knative.dev/revision={record.canary.revision}")
        readings: dict[str, tuple[int, int] | None] = {}
        for pod in pods:
            if (pod.get("status") or {}).get("phase") != "Running":
                continue
            name = pod["metadata"]["name"]
            try:
                readings[name] = request_counts(self.api.text(f"{pods_path}/{name}:{PORT}/proxy/metrics"))
            except Unavailable as exc:  # a pod going away or not serving yet: its last reading stands
                log.info("knative: no metrics from pod %s (%s)", name, exc)
                readings[name] = None
        return record.read(readings)

    def keep(self, service: dict[str, Any], record: CanaryRecord | None) -> dict[str, Any]:
        """Write the canary's record back (None: the canary is no longer judged), traffic unchanged; the Service."""
        return self._patch(service, None, {CANARY_ANNOTATION: record.to_json() if record else None})

    def conclude(self, service: dict[str, Any], revision: str) -> None:
        """All traffic to ``revision`` (the canary promoted, or the main revision after a rollback); judging ends."""
        self._patch(service, {"traffic": [{"revisionName": revision, "percent": 100}]}, {CANARY_ANNOTATION: None})


def open_models(settings: Settings) -> KnativeModels:
    """The models of ``settings.serving.model_template``'s namespace, through the configured Kubernetes API."""
    template = load_template(settings.serving.model_template)
    return KnativeModels(KubeApi(api_client(settings.serving.kubeconfig)), template)
