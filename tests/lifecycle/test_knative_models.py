"""Models on Knative Serving: the deploy step and the canary judge send the Kubernetes API exactly the calls a model's
Knative Service needs (recorded by a fake API server), and a refused call ends the run in step.failed with the API's
reason (through a real in-process broker and function host)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventing.broker import BrokerServer
from eventing.events import STEP_FAILED, new_event
from eventing.triggers import DeliverySpec, Trigger
from functions import canary, deploy
from functions.contract import MODEL_DEPLOYED, MODEL_REGISTERED
from functions.runtime.host import FunctionHost
from functions.runtime.loader import load_function
from infra.errors import InvalidRequest
from infra.settings import load_settings
from knflow import cluster_models
from serving.knserving import CANARY_ANNOTATION, CanaryRecord, model_service, request_counts
from serving.registry import ModelRegistry
from tests.eventually import eventually
from tests.kubefake import Call, FakeKube, start_fake_kube
from tests.lifecycle.helpers import StepContext
from tests.serving.helpers import mlp_onnx

NS = "ml"
SERVICES = f"/apis/serving.knative.dev/v1/namespaces/{NS}/services"
DIGITS = f"{SERVICES}/knflow-model-digits"
PODS = f"/api/v1/namespaces/{NS}/pods"
MERGE = "application/merge-patch+json"
TEMPLATE = cluster_models.model_template(
    NS, "registry.example/knflow:1", [{"name": "KNFLOW_ARTIFACTS", "value": "s3://knflow?endpoint=http://minio:9000"}],
    {}, {"app.kubernetes.io/part-of": "knflow"},
)  # fmt: skip
SPEC = [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
OUT = [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]


def metrics_text(ok: int, failed: int) -> str:
    """A model server's ``/metrics`` as the gateway renders it: ``ok`` 200s and ``failed`` 500s."""
    return (
        "# TYPE knflow_requests_total counter\n"
        f'knflow_requests_total{{revision="digits-v2",code="200"}} {ok}\n'
        f'knflow_requests_total{{revision="digits-v2",code="500"}} {failed}\n'
    )


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[FakeKube]:
    fake, stop = start_fake_kube(tmp_path)
    yield fake
    stop()


@pytest.fixture
def kctx(kube: FakeKube, fstore) -> StepContext:  # type: ignore[no-untyped-def]
    env = {
        "KNFLOW_DATA_DIR": str(kube.kubeconfig.parent / "data"),
        "KNFLOW_ARTIFACTS": fstore.url,
        "KNFLOW_SERVING_TARGET": "knative",
        "KNFLOW_SERVING_MODEL_TEMPLATE": json.dumps(TEMPLATE),
        "KNFLOW_SERVING_KUBECONFIG": str(kube.kubeconfig),
    }
    registry = ModelRegistry(fstore)
    for version, accuracy in ((1, 0.9), (2, 0.95)):
        registry.register("digits", mlp_onnx(version), inputs=SPEC, outputs=OUT, metrics={"test_accuracy": accuracy})
    return StepContext(store=fstore, settings=load_settings(env=env))


def registered(version: int, accuracy: float) -> object:
    data = {"name": "digits", "version": version, "metrics": {"test_accuracy": accuracy}}
    return new_event(MODEL_REGISTERED, "/t", data, runid=f"run-{version}", extensions={"pipeline": "lifecycle"})


def test_the_first_version_creates_the_models_knative_service_with_all_its_traffic(kube, kctx):
    out = deploy.handle(registered(1, 0.9), kctx)
    assert out.get_type() == MODEL_DEPLOYED
    created = model_service(TEMPLATE, "digits", 1) | {
        "spec": {**model_service(TEMPLATE, "digits", 1)["spec"], "traffic": [
            {"revisionName": "knflow-model-digits-v1", "percent": 100}]},
    }  # fmt: skip
    assert kube.calls == [
        Call("GET", DIGITS, {}, "", None),
        Call("POST", SERVICES, {}, "application/json", created),
    ]
    template = created["spec"]["template"]
    assert template["metadata"]["name"] == "knflow-model-digits-v1"
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "0"
    container = template["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "serving.gateway"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KNFLOW_SERVING_MODEL"] == "digits" and env["KNFLOW_SERVING_MODEL_VERSION"] == "1"
    assert out.get_data()["endpoint"] == "http://knflow-model-digits.ml.svc.cluster.local/v2/models/digits/infer"
    assert out.get_data()["traffic_percent"] == 100 and not out.get_data()["canary"]
    assert ModelRegistry(kctx.store).get("digits", "production").version == 1


def test_a_better_version_is_a_canary_in_the_services_traffic_block(kube, kctx):
    deploy.handle(registered(1, 0.9), kctx)
    kube.calls.clear()
    out = deploy.handle(registered(2, 0.95), kctx)
    assert out.get_data()["canary"] and out.get_data()["traffic_percent"] == 10
    get, patch = kube.calls
    assert get == Call("GET", DIGITS, {}, "", None)
    assert (patch.method, patch.path, patch.content_type) == ("PATCH", DIGITS, MERGE)
    assert patch.body["spec"]["traffic"] == [
        {"revisionName": "knflow-model-digits-v1", "percent": 90},
        {"revisionName": "knflow-model-digits-v2", "percent": 10, "tag": "canary"},
    ]
    assert patch.body["spec"]["template"] == model_service(TEMPLATE, "digits", 2)["spec"]["template"]
    assert patch.body["metadata"]["resourceVersion"] == "1"  # the Service as read: a concurrent change is a 409
    record = CanaryRecord.from_json(patch.body["metadata"]["annotations"][CANARY_ANNOTATION])
    assert (record.canary.revision, record.main) == ("knflow-model-digits-v2", "knflow-model-digits-v1")
    assert record.canary.policy.promote_after_requests == 100
    assert record.canary.announce.extensions["runid"] == "run-2"
    assert ModelRegistry(kctx.store).get("digits", "production").version == 1  # production waits for the judge


def _judge(kube: FakeKube, kctx: StepContext, *, clear: bool = True) -> list[Call]:
    if clear:
        kube.calls.clear()
    canary.handle(new_event("dev.knative.sources.ping", "/ping", {"judge": "canaries"}), kctx)
    return list(kube.calls)


def test_the_judge_promotes_a_canary_once_its_pods_served_enough_requests(kube, kctx):
    deploy.handle(registered(1, 0.9), kctx)
    deploy.handle(registered(2, 0.95), kctx)
    kube.add_pod(NS, "digits-v2-a", "knflow-model-digits-v2", metrics_text(60, 0))
    calls = _judge(kube, kctx)  # 60 < 100 requests: the counts are kept on the Service, traffic unchanged
    assert [(c.method, c.path, c.query) for c in calls] == [
        ("GET", SERVICES, {"labelSelector": "knflow.dev/component=model"}),
        ("GET", PODS, {"labelSelector": "serving.knative.dev/revision=knflow-model-digits-v2"}),
        ("GET", f"{PODS}/digits-v2-a:8080/proxy/metrics", {}),
        ("PATCH", DIGITS, {}),
    ]  # fmt: skip
    assert "spec" not in calls[-1].body and kctx.emitted == []
    del kube.pods[(NS, "digits-v2-a")]  # scaled to zero: its 60 requests stay counted
    kube.add_pod(NS, "digits-v2-b", "knflow-model-digits-v2", metrics_text(45, 1))
    *_, verdict, promote = _judge(kube, kctx)
    kept = CanaryRecord.from_json(verdict.body["metadata"]["annotations"][CANARY_ANNOTATION])
    assert (kept.verdict, kept.decision) == ("promote", "promoted after 106 requests, 1 errors")  # before acting
    assert "spec" not in verdict.body
    assert promote.body == {
        "metadata": {"resourceVersion": "4", "annotations": {CANARY_ANNOTATION: None}},
        "spec": {"traffic": [{"revisionName": "knflow-model-digits-v2", "percent": 100}]},
    }
    assert ModelRegistry(kctx.store).get("digits", "production").version == 2
    [notice] = kctx.emitted
    assert notice.get_type() == MODEL_DEPLOYED and notice.get_extension("runid") == "run-2"
    assert notice.get_data()["decision"] == "promoted after 106 requests, 1 errors"
    assert _judge(kube, kctx)[1:] == []  # nothing open any more


def test_the_judge_rolls_back_a_failing_canary_to_the_main_revision(kube, kctx):
    deploy.handle(registered(1, 0.9), kctx)
    deploy.handle(registered(2, 0.95), kctx)
    kube.add_pod(NS, "digits-v2-a", "knflow-model-digits-v2", metrics_text(8, 4))
    rollback = _judge(kube, kctx)[-1]
    assert rollback.body["spec"] == {"traffic": [{"revisionName": "knflow-model-digits-v1", "percent": 100}]}
    assert rollback.body["metadata"]["annotations"] == {CANARY_ANNOTATION: None}
    assert ModelRegistry(kctx.store).get("digits", "production").version == 1
    [notice] = kctx.emitted
    assert notice.get_data()["traffic_percent"] == 0 and "rolled back" in notice.get_data()["decision"]


def _judge_goes_down_before_telling_the_run(kube, kctx, monkeypatch, requests: int, errors: int) -> None:
    """A canary v2 beside v1 whose pods counted ``requests`` and ``errors``; a judge that acts, then goes down."""
    deploy.handle(registered(1, 0.9), kctx)
    deploy.handle(registered(2, 0.95), kctx)
    kube.add_pod(NS, "digits-v2-a", "knflow-model-digits-v2", metrics_text(requests, errors))

    def down(event):
        raise SystemExit("the judge went down before telling the run")

    monkeypatch.setattr(kctx, "emit_sync", down)
    with pytest.raises(SystemExit):
        _judge(kube, kctx)
    monkeypatch.undo()


def test_a_judge_that_went_down_after_its_verdict_finishes_that_verdict_whatever_the_counts_became(
    kube, kctx, monkeypatch
):
    _judge_goes_down_before_telling_the_run(kube, kctx, monkeypatch, 120, 0)
    assert ModelRegistry(kctx.store).get("digits", "production").version == 2  # acted on before it went down
    kube.add_pod(NS, "digits-v2-a", "knflow-model-digits-v2", metrics_text(120, 200))  # now failing badly
    calls = _judge(kube, kctx)
    assert [c.path for c in calls if c.method == "GET"] == [SERVICES]  # judged before: no counts read again
    assert calls[-1].body["spec"] == {"traffic": [{"revisionName": "knflow-model-digits-v2", "percent": 100}]}
    [notice] = kctx.emitted
    assert notice.get_data()["decision"] == "promoted after 120 requests, 0 errors"  # the verdict first made
    assert notice.get_id() == "knflow-model-digits-v2.promote"
    assert ModelRegistry(kctx.store).get("digits", "production").version == 2
    promoted = [
        r for r in ModelRegistry(kctx.store).audit("digits") if r["action"] == "set_alias" and r["version"] == 2
    ]
    assert [r["once"] for r in promoted] == ["knflow-model-digits-v2.promote"]  # in the trail once


def test_a_rollback_finished_again_after_the_judge_went_down_is_in_the_audit_trail_once(kube, kctx, monkeypatch):
    _judge_goes_down_before_telling_the_run(kube, kctx, monkeypatch, 8, 4)
    rollback = _judge(kube, kctx)[-1]
    assert rollback.body["spec"] == {"traffic": [{"revisionName": "knflow-model-digits-v1", "percent": 100}]}
    [notice] = kctx.emitted
    assert notice.get_id() == "knflow-model-digits-v2.rollback"
    noted = [r for r in ModelRegistry(kctx.store).audit("digits") if r["action"] == "rollback"]
    assert len(noted) == 1 and "rolled back" in noted[0]["reason"], noted


def test_a_canary_moved_by_hand_is_no_longer_judged(kube, kctx):
    deploy.handle(registered(1, 0.9), kctx)
    deploy.handle(registered(2, 0.95), kctx)
    service = kube.services[(NS, "knflow-model-digits")]
    service["spec"]["traffic"] = [{"revisionName": "knflow-model-digits-v1", "percent": 100}]
    calls = _judge(kube, kctx)
    assert len(calls) == 2 and calls[1].body["metadata"]["annotations"] == {CANARY_ANNOTATION: None}
    assert kctx.emitted == []


def _rights_used(calls: list[Call]) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of each recorded call, as the API server's RBAC authorizer names them."""
    verbs = {"POST": "create", "PATCH": "patch"}
    used = set()
    for call in calls:
        parts = call.path.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        rest = parts[4:] if parts[0] == "api" else parts[5:]  # resource[/name[/subresource/...]]
        resource, verb = rest[0], verbs.get(call.method) or ("list" if len(rest) == 1 else "get")
        if len(rest) > 2:  # a subresource: pods/NAME:PORT/proxy/metrics
            resource = f"{resource}/{rest[2]}"
        used.add((group, resource, verb))
    return used


def test_the_deploy_account_holds_exactly_the_rights_deploy_and_the_judge_use(kube, kctx):
    deploy.handle(registered(1, 0.9), kctx)
    deploy.handle(registered(2, 0.95), kctx)
    kube.add_pod(NS, "digits-v2-a", "knflow-model-digits-v2", metrics_text(50, 0))
    _judge(kube, kctx, clear=False)  # keeps the counts
    kube.pods[(NS, "digits-v2-a")]["metrics"] = metrics_text(120, 0)
    _judge(kube, kctx, clear=False)  # promotes
    granted = {
        (group, resource, verb)
        for rule in cluster_models.RULES
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert _rights_used(kube.calls) == granted


def test_a_model_name_kubernetes_cannot_take_is_refused_naming_the_rule(kube, kctx):
    event = new_event(MODEL_REGISTERED, "/t", {"name": "Digits_v2", "version": 1, "metrics": {"test_accuracy": 1.0}})
    with pytest.raises(InvalidRequest, match="cannot name a Knative Service: use lowercase"):
        deploy.handle(event, kctx)


def test_request_counts_read_the_gateways_metrics():
    assert request_counts(metrics_text(7, 3)) == (10, 3)
    assert request_counts("# TYPE knflow_requests_total counter\n") == (0, 0)


async def test_a_refused_api_call_ends_the_run_in_step_failed_with_the_apis_reason(kube, kctx, tmp_path):
    forbidden = (
        'services.serving.knative.dev is forbidden: User "system:serviceaccount:ml:default" cannot create '
        'resource "services" in API group "serving.knative.dev" in the namespace "ml"'
    )
    kube.refuse[("POST", SERVICES)] = (403, "Forbidden", forbidden)
    host = FunctionHost(load_function("deploy"), kctx.settings)
    [address] = await host.start(["127.0.0.1:0"])
    delivery = DeliverySpec(retry=3, backoff_delay=0.05)
    trigger = Trigger("deploy", f"http://{address}/", filter={"type": MODEL_REGISTERED}, delivery=delivery)
    broker_settings = load_settings(env={"KNFLOW_DATA_DIR": str(tmp_path / "broker")})
    try:
        async with BrokerServer(broker_settings, [trigger], sources=[], port=0) as broker:
            await broker.publish(registered(1, 0.9))

            async def failed():  # type: ignore[no-untyped-def]
                events, _ = await broker.log.history(runid="run-1", type=STEP_FAILED, after=None, limit=10)
                return [e for _, e in events]

            [report] = await eventually(failed, timeout=20)
    finally:
        await host.stop()
    data = report.get_data()
    assert data["status"] == 403 and data["attempts"] == 1  # a forbidden call is not retried
    error = json.loads(data["error"])
    assert error["error"] == (f"Kubernetes API refused POST {SERVICES}: HTTP 403 Forbidden {forbidden}")
    assert (error["function"], error["retryable"]) == ("deploy", False)
    assert [c.method for c in kube.calls] == ["GET", "POST"]
