"""knflow on Knative: the rendered manifests mirror the local lifecycle, and the CLI prints or applies them."""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eventing.triggers import parse_duration
from functions.contract import lifecycle_spec_path
from functions.runtime.pipeline import load_pipeline, pipeline_triggers
from infra.errors import ConfigError
from knflow.manifests import ManifestOptions, function_service_name, render

ROOT = Path(__file__).parents[1]
FUNC_YAML = ROOT / "func.yaml"
LIFECYCLE = load_pipeline(lifecycle_spec_path())
FUNCTIONS = sorted({step.function for step in LIFECYCLE.steps})
TRIGGERS = pipeline_triggers(LIFECYCLE, lambda step: f"http://127.0.0.1:8181/functions/{step.function}")


def _by_kind(resources: list[dict]) -> dict[str, list[dict]]:
    out = collections.defaultdict(list)
    for resource in resources:
        out[resource["kind"]].append(resource)
    return out


def _container(service: dict) -> dict:
    return service["spec"]["template"]["spec"]["containers"][0]


def _knflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "knflow", *args],
        capture_output=True, text=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=120,
    )  # fmt: skip


def test_triggers_match_local_lifecycle_one_to_one() -> None:
    kinds = _by_kind(render(FUNC_YAML))
    services = {s["metadata"]["name"]: s for s in kinds["Service"]}
    local = {t.name: t for t in TRIGGERS}
    cluster = {t["metadata"]["name"]: t for t in kinds["Trigger"]}
    assert set(cluster) == set(local) and len(kinds["Trigger"]) == len(TRIGGERS)
    for name, trigger in local.items():
        spec = cluster[name]["spec"]
        assert spec["broker"] == "knflow"
        assert spec["filter"]["attributes"] == trigger.filter
        function = trigger.subscriber.rsplit("/", 1)[-1]
        assert spec["subscriber"]["ref"] == {
            "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": function_service_name(function)
        }  # fmt: skip
        delivery = spec["delivery"]
        assert delivery["retry"] == trigger.delivery.retry
        assert delivery["backoffPolicy"] == trigger.delivery.backoff_policy
        assert parse_duration(delivery["backoffDelay"]) == trigger.delivery.backoff_delay
        assert delivery["deadLetterSink"]["ref"] == {
            "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "knflow-deadletter"
        }  # fmt: skip
        # Knative's Trigger schema has no per-attempt timeout: the subscriber's request timeout carries it
        timeout = services[function_service_name(function)]["spec"]["template"]["spec"]["timeoutSeconds"]
        assert timeout == trigger.delivery.timeout


def test_one_service_per_function_from_the_one_image() -> None:
    func = yaml.safe_load(FUNC_YAML.read_text())
    services = {s["metadata"]["name"]: s for s in _by_kind(render(FUNC_YAML))["Service"]}
    expected = {function_service_name(f) for f in FUNCTIONS} | {"knflow-gateway", "knflow-deadletter"}
    assert set(services) == expected
    for function in [*FUNCTIONS, "deadletter"]:
        service = services[function_service_name(function)]
        container = _container(service)
        assert container["image"] == func["image"]
        env = {e["name"]: e for e in container["env"]}
        assert env["KNFLOW_FUNCTION"]["value"] == function
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "knflow-minio", "key": "secretkey"}
        annotations = service["spec"]["template"]["metadata"]["annotations"]
        assert annotations["autoscaling.knative.dev/min-scale"] == "0"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
    assert (
        _container(services["knflow-train"])
        and services["knflow-train"]["spec"]["template"]["spec"]["containerConcurrency"] == 1
    )
    gateway = services["knflow-gateway"]["spec"]["template"]
    assert gateway["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "1"
    assert "limits" not in _container(services["knflow-gateway"]).get("resources", {})


def test_gpu_option_requests_a_gpu_and_placement() -> None:
    options = ManifestOptions(gpu=True, gpu_node_selector=(("accelerator", "h100"),))
    services = {s["metadata"]["name"]: s for s in _by_kind(render(FUNC_YAML, options))["Service"]}
    for name in ("knflow-gateway", "knflow-train"):
        pod = services[name]["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        assert pod["nodeSelector"] == {"accelerator": "h100"}
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "limits" not in _container(services["knflow-ingest"])["resources"]


def test_broker_is_kafka_class_with_its_config_and_a_sink_binding() -> None:
    kinds = _by_kind(render(FUNC_YAML, ManifestOptions(namespace="team-a", partitions=3, replication_factor=1)))
    (broker,) = kinds["Broker"]
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == "Kafka"
    assert broker["spec"]["config"]["name"] == kinds["ConfigMap"][0]["metadata"]["name"] == "kafka-broker-config"
    assert kinds["ConfigMap"][0]["data"] == {
        "bootstrap.servers": "my-cluster-kafka-bootstrap.kafka:9092",
        "default.topic.partitions": "3",
        "default.topic.replication.factor": "1",
    }
    binding = kinds["SinkBinding"][0]["spec"]
    assert binding["sink"]["ref"]["name"] == "knflow"
    assert binding["subject"]["selector"]["matchLabels"]["knflow.dev/component"] == "function"
    assert {r["metadata"].get("namespace", "team-a") for kind in kinds.values() for r in kind} == {"team-a"}
    assert kinds["Namespace"][0]["metadata"]["name"] == "team-a"


def test_too_long_broker_name_fails_before_output() -> None:
    with pytest.raises(ConfigError, match=r"Broker/b+: metadata.name must be a DNS-1035"):
        render(FUNC_YAML, ManifestOptions(broker="b" * 64))


def test_func_yaml_without_image_fails(tmp_path: Path) -> None:
    bad = tmp_path / "func.yaml"
    bad.write_text(FUNC_YAML.read_text().replace("image: ghcr.io/knflow/knflow:0.1.0", "image: ''"))
    with pytest.raises(ConfigError, match="no image set"):
        render(bad)


def test_manifests_command_prints_parsable_yaml() -> None:
    result = _knflow("manifests")
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    counts = collections.Counter(d["kind"] for d in documents)
    assert counts == {
        "Namespace": 1, "ConfigMap": 1, "Broker": 1, "SinkBinding": 1,
        "Service": len(FUNCTIONS) + 2, "Trigger": len(TRIGGERS),
    }  # fmt: skip
    assert "secretKeyRef" in result.stdout and "kind: Secret\n" not in result.stdout
    assert "&id" not in result.stdout and "*id" not in result.stdout  # no YAML anchors


def test_manifests_command_writes_a_directory(tmp_path: Path) -> None:
    result = _knflow("manifests", "--output-dir", str(tmp_path / "out"), "--gpu")
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "out").glob("*.yaml"))
    assert len(files) == 6 + len(FUNCTIONS) + len(TRIGGERS)  # namespace, config, broker, binding, 2 services
    assert (
        "nvidia.com/gpu" in (tmp_path / "out" / next(f.name for f in files if "knflow-gateway" in f.name)).read_text()
    )


@pytest.mark.parametrize("content", [None, ""])
def test_apply_without_a_cluster_fails_naming_the_kubeconfig(tmp_path: Path, content: str | None) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    if content is not None:
        kubeconfig.write_text(content)
    result = _knflow("apply", env={"KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "no Kubernetes cluster configured" in result.stderr and str(kubeconfig) in result.stderr


def test_apply_dry_run_needs_no_cluster(tmp_path: Path) -> None:
    result = _knflow("apply", "--dry-run", env={"KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "Trigger/lifecycle-train-trials (dry run: not applied)" in result.stdout


# -- user functions: their own image ---------------------------------------------------------------------------


def _with_user_step(function: str, **step: object) -> object:
    from knflow.pipeline import Pipeline

    pipeline = Pipeline.lifecycle("checked")
    pipeline.insert_between("ingest", "featurize", name="validate", function=function, emits="acme.validated", **step)
    return pipeline.spec()


def _user_dir(tmp_path: Path, image: str | None) -> Path:
    root = tmp_path / "validate-src"  # deployed (and rendered) under func.yaml's name, not the directory's
    (root / "function").mkdir(parents=True)
    (root / "function" / "__init__.py").write_text("from .func import new\n")
    (root / "func.yaml").write_text(
        "specVersion: 0.36.0\nname: validate\nruntime: python\n" + (f"image: {image}\n" if image else "")
    )
    return root


def test_a_user_function_runs_from_the_image_its_func_yaml_names(tmp_path: Path) -> None:
    spec = _with_user_step(str(_user_dir(tmp_path, "registry.example/validate:1")), settings={"min_rows": 100})
    services = {s["metadata"]["name"]: s for s in _by_kind(render(FUNC_YAML, pipelines=[spec]))["Service"]}
    container = _container(services["knflow-checked-validate"])
    assert container["image"] == "registry.example/validate:1"
    assert "command" not in container  # the image's own entrypoint, as func build makes it
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KNFLOW_STEP_SETTINGS"] == '{"min_rows": 100}' and env["LISTEN_ADDRESS"] == "0.0.0.0:8080"
    assert "KNFLOW_FUNCTION" not in env and env["KNFLOW_ARTIFACTS"].startswith("s3://")
    labels = services["knflow-checked-validate"]["metadata"]["labels"]
    assert labels["knflow.dev/component"] == "function"  # the SinkBinding gives it K_SINK
    trigger = next(
        t
        for t in _by_kind(render(FUNC_YAML, pipelines=[spec]))["Trigger"]
        if t["metadata"]["name"] == "checked-validate"
    )
    assert trigger["spec"]["subscriber"]["ref"]["name"] == "knflow-checked-validate"


def test_a_steps_image_wins_and_a_deployed_function_uses_its_recorded_image(tmp_path: Path) -> None:
    own = _with_user_step(str(_user_dir(tmp_path, "registry.example/validate:1")), image="registry.example/v:2")
    services = {s["metadata"]["name"]: s for s in _by_kind(render(FUNC_YAML, pipelines=[own]))["Service"]}
    assert _container(services["knflow-validate"])["image"] == "registry.example/v:2"
    by_name = _with_user_step("validate")
    rendered = render(FUNC_YAML, pipelines=[by_name], images={"validate": "registry.example/validate:3"})
    services = {s["metadata"]["name"]: s for s in _by_kind(rendered)["Service"]}
    assert _container(services["knflow-validate"])["image"] == "registry.example/validate:3"


@pytest.mark.parametrize("where", ["directory", "deployed"])
def test_a_user_function_without_an_image_is_refused_at_render_time(tmp_path: Path, where: str) -> None:
    spec = _with_user_step(str(_user_dir(tmp_path, None)) if where == "directory" else "validate")
    with pytest.raises(ConfigError, match=r"pipeline checked, step validate: function .* names no image of its own"):
        render(FUNC_YAML, pipelines=[spec])


def test_manifests_command_renders_a_pipeline_file_with_a_function_directory(tmp_path: Path) -> None:
    _user_dir(tmp_path, "registry.example/validate:1")
    spec = _with_user_step("./validate-src").model_dump(mode="json", exclude_none=True)
    (tmp_path / "checked.yaml").write_text(yaml.safe_dump(spec))
    result = _knflow("manifests", "--func-yaml", str(FUNC_YAML), "--pipeline", str(tmp_path / "checked.yaml"),
                     env={"KNFLOW_DATA_DIR": str(tmp_path / "data")})  # fmt: skip
    assert result.returncode == 0, result.stderr
    images = {
        d["metadata"]["name"]: _container(d)["image"]
        for d in yaml.safe_load_all(result.stdout)
        if d and d["kind"] == "Service"
    }
    assert images["knflow-validate"] == "registry.example/validate:1"
