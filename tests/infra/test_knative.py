"""infra.knative: builders validate against Knative's CRD schemas; broken resources fail naming kind/name and field."""

from __future__ import annotations

import copy
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from infra import knative
from infra.errors import ConfigError, KnflowError
from infra.kubeapply import apply, client_from_kubeconfig, resource_path
from tests.kubefake import kubeconfig

NS = "ml"


def _set() -> list[dict]:
    svc = knative.knative_service(knative.ServiceSpec(name="fn-a", namespace=NS, image="example/img:1", min_scale=0))
    subscriber = knative.ref(knative.SERVING, "Service", "fn-a")
    delivery = {"retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT1S"}
    return [
        knative.namespace(NS),
        knative.kafka_broker_config("kafka-broker-config", NS, ["k:9092"]),
        knative.kafka_broker("b", NS, "kafka-broker-config", dict(delivery)),
        svc,
        knative.trigger("t", NS, "b", {"type": "x.y"}, subscriber, delivery),
        knative.sink_binding("sb", NS, {"app": "a"}, knative.ref(knative.EVENTING, "Broker", "b")),
    ]


def _find(resources: list[dict], kind: str) -> dict:
    return next(r for r in resources if r["kind"] == kind)


def test_rendered_resources_validate_against_knative_schemas() -> None:
    resources = _set()
    assert knative.validate(copy.deepcopy(resources)) == resources


def test_validation_imports_the_models_of_the_kinds_it_checks_not_every_api_group() -> None:
    """cloudcoil's package ``__init__``s import every API group (about 5,000 models, seconds): a fresh process that
    validates rendered resources loads only the five model modules it uses."""
    script = (
        "import sys; from tests.infra.test_knative import _set; from infra import knative; "
        "assert knative.validate(_set()) == _set(); "
        "print(*sorted(m for m in sys.modules if m.startswith('cloudcoil.models.') and m.endswith(('v1', 'v1beta1'))))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == [
        "cloudcoil.models.knative_eventing.eventing.v1",
        "cloudcoil.models.knative_eventing.sources.v1",
        "cloudcoil.models.knative_serving.serving.v1",
        "cloudcoil.models.kubernetes.core.v1",
        "cloudcoil.models.kubernetes.rbac.v1",
    ]


def test_unknown_field_fails_naming_resource_and_field() -> None:
    resources = _set()
    _find(resources, "Trigger")["spec"]["delivery"]["timeoutz"] = "PT1S"
    with pytest.raises(ConfigError, match=r"Trigger/t: unknown field 'spec\.delivery\.timeoutz'"):
        knative.validate(resources)


def test_unknown_container_field_fails() -> None:
    resources = _set()
    _find(resources, "Service")["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    with pytest.raises(
        ConfigError, match=r"Service/fn-a: unknown field 'spec\.template\.spec\.containers\[0\]\.imagee'"
    ):
        knative.validate(resources)


def test_wrong_type_fails_with_schema_path() -> None:
    resources = _set()
    _find(resources, "Service")["spec"]["template"]["spec"]["containerConcurrency"] = "1"
    with pytest.raises(ConfigError, match=r"Service/fn-a: spec\.template\.spec\.containerConcurrency"):
        knative.validate(resources)


def test_bad_duration_fails() -> None:
    resources = _set()
    _find(resources, "Trigger")["spec"]["delivery"]["backoffDelay"] = "500ms"
    with pytest.raises(ConfigError, match=r"Trigger/t: spec\.delivery\.backoffDelay '500ms' is not an ISO-8601"):
        knative.validate(resources)


def test_trigger_pointing_at_missing_service_fails() -> None:
    resources = _set()
    _find(resources, "Trigger")["spec"]["subscriber"]["ref"]["name"] = "fn-missing"
    with pytest.raises(ConfigError, match=r"Trigger/t: spec\.subscriber\.ref names Service/fn-missing"):
        knative.validate(resources)


def test_trigger_on_missing_broker_fails() -> None:
    resources = _set()
    _find(resources, "Trigger")["spec"]["broker"] = "other"
    with pytest.raises(ConfigError, match=r"Trigger/t: spec\.broker 'other'"):
        knative.validate(resources)


@pytest.mark.parametrize("name", ["s" * 64, "Upper", "1abc", "a_b"])
def test_bad_names_fail(name: str) -> None:
    resources = _set()
    _find(resources, "Service")["metadata"]["name"] = name
    with pytest.raises(ConfigError, match="DNS-1035"):
        knative.validate(resources)


def test_non_string_filter_attribute_and_missing_image_fail() -> None:
    resources = _set()
    _find(resources, "Trigger")["spec"]["filter"]["attributes"]["mode"] = 1
    with pytest.raises(ConfigError, match=r"filter\.attributes\.mode must be a string"):
        knative.validate(resources)
    resources = _set()
    _find(resources, "Service")["spec"]["template"]["spec"]["containers"][0]["image"] = ""
    with pytest.raises(ConfigError, match=r"containers\[0\]\.image is not set"):
        knative.validate(resources)


def test_min_scale_above_max_scale_fails() -> None:
    spec = knative.ServiceSpec(name="fn-a", namespace=NS, image="i", min_scale=5, max_scale=2)
    resources = [r if r["kind"] != "Service" else knative.knative_service(spec) for r in _set()]
    with pytest.raises(ConfigError, match="min-scale '5' / max-scale '2'"):
        knative.validate(resources)


RULES = [{"apiGroups": ["serving.knative.dev"], "resources": ["services"], "verbs": ["get", "patch"]}]


def _with_source_and_rights() -> list[dict]:
    """The base set, its Service running as a ServiceAccount with a Role, and a KafkaSource into it."""
    spec = knative.ServiceSpec(name="fn-a", namespace=NS, image="example/img:1", min_scale=0, service_account="sa")
    resources = [r if r["kind"] != "Service" else knative.knative_service(spec) for r in _set()]
    sink = knative.ref(knative.SERVING, "Service", "fn-a")
    delivery = {"retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT1S"}
    source = knative.kafka_source(
        "ks", NS, ["k:9092"], ["minio"], sink, extensions={"pipeline": "p"}, delivery=delivery
    )
    rights = [
        knative.service_account("sa", NS),
        knative.role("sa", NS, RULES),
        knative.role_binding("sa", NS, "sa", "sa"),
    ]
    return [*resources, source, *rights]


def test_kafka_source_and_rbac_validate_strictly() -> None:
    resources = _with_source_and_rights()
    assert knative.validate(copy.deepcopy(resources)) == resources
    source = _find(resources, "KafkaSource")
    assert source["apiVersion"] == "sources.knative.dev/v1beta1"
    assert source["spec"]["initialOffset"] == "latest" and source["spec"]["consumerGroup"] == "ks"
    assert source["spec"]["ceOverrides"] == {"extensions": {"pipeline": "p"}}


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (("spec", "topic"), "minio", r"KafkaSource/ks: unknown field 'spec\.topic'"),
        (("spec", "initialOffset"), "newest", r"KafkaSource/ks: spec\.initialOffset: Input should be 'earliest'"),
        (("spec", "topics"), [], r"KafkaSource/ks: spec\.topics: List should have at least 1 item"),
        (("spec", "delivery", "backoffDelay"), "1s", r"KafkaSource/ks: spec\.delivery\.backoffDelay '1s'"),
    ],
)
def test_a_broken_kafka_source_fails_naming_the_field(path: tuple[str, ...], value: object, error: str) -> None:
    resources = _with_source_and_rights()
    target = _find(resources, "KafkaSource")
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ConfigError, match=error):
        knative.validate(resources)


def test_kafka_source_sink_must_be_rendered() -> None:
    resources = _with_source_and_rights()
    _find(resources, "KafkaSource")["spec"]["sink"]["ref"]["name"] = "fn-missing"
    with pytest.raises(ConfigError, match=r"KafkaSource/ks: spec\.sink\.ref names Service/fn-missing"):
        knative.validate(resources)


@pytest.mark.parametrize(
    ("kind", "path", "error"),
    [
        ("RoleBinding", ("roleRef", "name"), r"RoleBinding/sa: roleRef names Role/gone"),
        ("RoleBinding", ("subjects", 0, "name"), r"RoleBinding/sa: subjects\[0\] names ServiceAccount/gone"),
        (
            "Service",
            ("spec", "template", "spec", "serviceAccountName"),
            r"serviceAccountName names ServiceAccount/gone",
        ),
    ],
)
def test_rights_must_name_rendered_roles_and_accounts(kind: str, path: tuple, error: str) -> None:
    resources = _with_source_and_rights()
    target = _find(resources, kind)
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "gone"
    with pytest.raises(ConfigError, match=error):
        knative.validate(resources)


def test_a_role_with_an_unknown_field_fails() -> None:
    resources = _with_source_and_rights()
    _find(resources, "Role")["rules"][0]["verb"] = ["get"]
    with pytest.raises(ConfigError, match=r"Role/sa: unknown field 'rules\[0\]\.verb'"):
        knative.validate(resources)


def test_resource_paths() -> None:
    resources = {r["kind"]: r for r in _set()}
    assert resource_path(resources["Namespace"]) == "/api/v1/namespaces/ml"
    assert resource_path(resources["ConfigMap"]) == "/api/v1/namespaces/ml/configmaps/kafka-broker-config"
    assert resource_path(resources["Service"]) == "/apis/serving.knative.dev/v1/namespaces/ml/services/fn-a"
    assert resource_path(resources["SinkBinding"]) == "/apis/sources.knative.dev/v1/namespaces/ml/sinkbindings/sb"
    more = {r["kind"]: r for r in _with_source_and_rights()}
    assert resource_path(more["KafkaSource"]) == "/apis/sources.knative.dev/v1beta1/namespaces/ml/kafkasources/ks"
    assert resource_path(more["ServiceAccount"]) == "/api/v1/namespaces/ml/serviceaccounts/sa"
    assert resource_path(more["Role"]) == "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/roles/sa"
    assert resource_path(more["RoleBinding"]) == "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/rolebindings/sa"


@pytest.mark.parametrize("content", [None, "", "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n"])
def test_kubeconfig_without_cluster_fails_naming_it(tmp_path, content) -> None:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=f"kubeconfig {path}"):
        client_from_kubeconfig(path)


class _FakeApiServer(BaseHTTPRequestHandler):
    """Records each request; answers 200, or 422 for a resource named 'refused'."""

    seen: list = []

    def do_PATCH(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, self.headers["Content-Type"], orjson.loads(body)))
        status = 422 if self.path.split("?")[0].endswith("/refused") else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"message": "invalid"}' if status == 422 else body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def api_server(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApiServer)
    _FakeApiServer.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{server.server_port}")
    server.shutdown()


def test_apply_sends_server_side_apply_patches(api_server) -> None:
    resources = _set()
    with client_from_kubeconfig(api_server) as client:
        applied = apply(resources, client)
    assert applied == [f"{r['kind']}/{r['metadata']['name']}" for r in resources]
    paths = [p.split("?")[0] for p, _, _ in _FakeApiServer.seen]
    assert paths == [resource_path(r) for r in resources]
    assert all("fieldManager=knflow" in p and "force=true" in p for p, _, _ in _FakeApiServer.seen)
    assert {ct for _, ct, _ in _FakeApiServer.seen} == {"application/apply-patch+yaml"}
    assert [b for _, _, b in _FakeApiServer.seen] == resources


def test_apply_refusal_names_the_resource(api_server) -> None:
    resources = _set()
    _find(resources, "Service")["metadata"]["name"] = "refused"
    with (
        client_from_kubeconfig(api_server) as client,
        pytest.raises(KnflowError, match=r"Service/refused refused: .* HTTP 422 invalid"),
    ):
        apply(resources, client)
