"""knflow on Knative: the rendered manifests mirror the local lifecycle, and the CLI prints or applies them."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from functions.contract import lifecycle_spec_path
from functions.runtime.pipeline import load_pipeline, pipeline_triggers
from infra import knative
from infra.durations import parse_duration
from infra.errors import ConfigError
from knflow.manifests import FUNCTION_ACCOUNT, ManifestOptions, function_service_name, read_func_yaml, render
from serving.knserving import model_service

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
    expected = {function_service_name(f) for f in FUNCTIONS} | {"knflow-deadletter", "knflow-canary"}
    assert set(services) == expected  # no inference gateway: each model is its own Service, made by deploy
    for function in [*FUNCTIONS, "deadletter", "canary"]:
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


def test_gpu_option_requests_a_gpu_and_placement_for_train_and_every_model() -> None:
    options = ManifestOptions(gpu=True, gpu_node_selector=(("accelerator", "h100"),))
    services = {s["metadata"]["name"]: s for s in _by_kind(render(FUNC_YAML, options))["Service"]}
    models = _model_template(list(services.values()))
    for service in (services["knflow-train"], models):
        pod = service["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        assert pod["nodeSelector"] == {"accelerator": "h100"}
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "limits" not in _container(services["knflow-ingest"])["resources"]


def _model_template(resources: list[dict]) -> dict:
    deploy = next(s for s in _by_kind(resources)["Service"] if s["metadata"]["name"] == "knflow-deploy")
    env = {e["name"]: e.get("value") for e in _container(deploy)["env"]}
    assert env["KNFLOW_SERVING_TARGET"] == "knative"
    return json.loads(env["KNFLOW_SERVING_MODEL_TEMPLATE"])


def test_each_model_is_a_knative_service_at_min_scale_zero_from_the_one_image() -> None:
    func = yaml.safe_load(FUNC_YAML.read_text())
    resources = render(FUNC_YAML, ManifestOptions(namespace="team-a"))
    digits = model_service(_model_template(resources), "digits", 3)
    assert knative.validate([digits]) == [digits]  # what deploy sends passes the strict validation
    assert digits["metadata"] == {
        "name": "knflow-model-digits", "namespace": "team-a",
        "labels": {"app.kubernetes.io/part-of": "knflow", "knflow.dev/component": "model",
                   "knflow.dev/model": "digits"},
    }  # fmt: skip
    revision = digits["spec"]["template"]
    assert revision["metadata"]["name"] == "knflow-model-digits-v3"
    assert revision["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "0"
    container = _container(digits)
    assert container["image"] == func["image"] and container["command"] == ["python", "-m", "serving.gateway"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["KNFLOW_SERVING_MODEL"], env["KNFLOW_SERVING_MODEL_VERSION"]) == ("digits", "3")
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "limits" not in container.get("resources", {})


def test_deploy_and_the_canary_judge_run_as_an_account_with_only_the_model_rights() -> None:
    kinds = _by_kind(render(FUNC_YAML))
    accounts = {
        s["metadata"]["name"]: s["spec"]["template"]["spec"].get("serviceAccountName") for s in kinds["Service"]
    }
    with_rights = {name for name, account in accounts.items() if account != FUNCTION_ACCOUNT}
    assert with_rights == {"knflow-deploy", "knflow-canary", "knflow-train"}
    assert {accounts["knflow-deploy"], accounts["knflow-canary"]} == {"knflow-deploy"}
    [role] = [r for r in kinds["Role"] if r["metadata"]["name"] == "knflow-deploy"]
    [binding] = [b for b in kinds["RoleBinding"] if b["metadata"]["name"] == "knflow-deploy"]
    assert role["rules"] == [
        {"apiGroups": ["serving.knative.dev"], "resources": ["services"], "verbs": ["get", "list", "create", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get"]},
    ]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "knflow-deploy"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "knflow-deploy", "namespace": "knflow"}]
    [ping] = kinds["PingSource"]
    assert ping["spec"]["schedule"] == "* * * * *" and ping["spec"]["sink"]["ref"]["name"] == "knflow-canary"


def test_train_runs_as_an_account_that_may_only_create_get_and_watch_trainjobs() -> None:
    func = read_func_yaml(FUNC_YAML)
    kinds = _by_kind(render(FUNC_YAML))
    train = next(s for s in kinds["Service"] if s["metadata"]["name"] == "knflow-train")
    assert train["spec"]["template"]["spec"]["serviceAccountName"] == "knflow-train"
    env = {e["name"]: e.get("value") for e in _container(train)["env"]}
    assert (env["KNFLOW_TRAINING_TARGET"], env["KNFLOW_TRAINING_NAMESPACE"]) == ("kubernetes", "knflow")
    assert env["KNFLOW_TRAINING_IMAGE"] == func["image"]
    workers_env = {e["name"] for e in json.loads(env["KNFLOW_TRAINING_ENV"])}
    assert "KNFLOW_ARTIFACTS" in workers_env  # the workers open the same store
    [role] = [r for r in kinds["Role"] if r["metadata"]["name"] == "knflow-train-trainjobs"]
    assert role["rules"] == [
        {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"], "verbs": ["create", "get", "watch"]}
    ]
    [binding] = [b for b in kinds["RoleBinding"] if b["metadata"]["name"] == "knflow-train-trainjobs"]
    assert binding["roleRef"]["name"] == "knflow-train-trainjobs"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "knflow-train", "namespace": "knflow"}]
    assert "knflow-train" in {a["metadata"]["name"] for a in kinds["ServiceAccount"]}


def test_minio_topic_renders_a_kafka_source_into_the_minio_function() -> None:
    assert "KafkaSource" not in _by_kind(render(FUNC_YAML))
    kinds = _by_kind(render(FUNC_YAML, ManifestOptions(minio_topic="minio-events")))
    [source] = kinds["KafkaSource"]
    assert source["apiVersion"] == "sources.knative.dev/v1beta1"
    assert source["spec"]["bootstrapServers"] == ["my-cluster-kafka-bootstrap.kafka:9092"]  # the Broker's Kafka
    assert source["spec"]["topics"] == ["minio-events"] and source["spec"]["initialOffset"] == "latest"
    assert source["spec"]["sink"]["ref"] == {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "name": "knflow-minio",
    }
    assert source["spec"]["ceOverrides"] == {"extensions": {"pipeline": "lifecycle"}}
    assert source["spec"]["delivery"]["deadLetterSink"]["ref"]["name"] == "knflow-deadletter"
    minio = next(s for s in kinds["Service"] if s["metadata"]["name"] == "knflow-minio")
    env = {e["name"]: e.get("value") for e in _container(minio)["env"]}
    assert env["KNFLOW_FUNCTION"] == "minio"
    assert minio["metadata"]["labels"]["knflow.dev/component"] == "function"  # K_SINK: the Broker
    other = _by_kind(render(FUNC_YAML, ManifestOptions(minio_topic="t", minio_kafka=("minio-kafka:9092",))))
    assert other["KafkaSource"][0]["spec"]["bootstrapServers"] == ["minio-kafka:9092"]


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
        "Namespace": 1, "ConfigMap": 1, "Broker": 1, "SinkBinding": 1, "ServiceAccount": 3, "Role": 2,
        "RoleBinding": 2, "PingSource": 1, "Service": len(FUNCTIONS) + 2, "Trigger": len(TRIGGERS),
    }  # fmt: skip
    assert "secretKeyRef" in result.stdout and "kind: Secret\n" not in result.stdout
    assert "&id" not in result.stdout and "*id" not in result.stdout  # no YAML anchors


def test_manifests_command_writes_a_directory(tmp_path: Path) -> None:
    result = _knflow(
        "manifests",
        "--output-dir",
        str(tmp_path / "out"),
        "--gpu",
        "--minio-topic",
        "minio",
        "--minio-kafka",
        "a:9092,b:9092",
    )
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "out").glob("*.yaml"))
    # namespace, config, broker, binding, 3 accounts, 2 roles, 2 bindings, ping, 3 platform services, the MinIO source
    assert len(files) == 16 + len(FUNCTIONS) + len(TRIGGERS)
    source = yaml.safe_load(next(f for f in files if "kafkasource" in f.name.lower()).read_text())
    assert source["spec"]["bootstrapServers"] == ["a:9092", "b:9092"]
    train = next(f for f in files if f.name.endswith("service-knflow-train.yaml"))
    assert "nvidia.com/gpu" in train.read_text()


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


SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}


def test_function_and_model_pods_are_annotated_for_prometheus_scraping() -> None:
    resources = render(FUNC_YAML)
    services = {s["metadata"]["name"]: s for s in _by_kind(resources)["Service"]}
    for function in [*FUNCTIONS, "deadletter", "canary"]:
        annotations = services[function_service_name(function)]["spec"]["template"]["metadata"]["annotations"]
        assert {k: annotations.get(k) for k in SCRAPE} == SCRAPE
    digits = model_service(_model_template(resources), "digits", 3)
    annotations = digits["spec"]["template"]["metadata"]["annotations"]
    assert {k: annotations.get(k) for k in SCRAPE} == SCRAPE  # the one-model server's /metrics on its port
    assert _container(digits)["ports"] == [{"containerPort": 8080}]


def test_a_namespace_gets_its_broker_and_each_function_only_the_rights_it_needs() -> None:
    kinds = _by_kind(render(FUNC_YAML, ManifestOptions(namespace="team-a")))
    assert {r["metadata"].get("namespace") for k, rs in kinds.items() if k != "Namespace" for r in rs} == {"team-a"}
    assert [n["metadata"]["name"] for n in kinds["Namespace"]] == ["team-a"]
    assert [b["metadata"]["name"] for b in kinds["Broker"]] == ["knflow"]

    accounts = {a["metadata"]["name"]: a for a in kinds["ServiceAccount"]}
    services = {s["metadata"]["name"]: s["spec"]["template"]["spec"]["serviceAccountName"] for s in kinds["Service"]}
    assert set(services.values()) <= set(accounts)  # every function runs as an account of its own namespace
    bound = {b["subjects"][0]["name"] for b in kinds["RoleBinding"]}
    assert bound == {"knflow-deploy", "knflow-train"}  # deploy patches Knative Services, train makes TrainJobs
    assert {b["subjects"][0]["namespace"] for b in kinds["RoleBinding"]} == {"team-a"}
    rightless = {name for name, account in services.items() if account not in bound}
    assert {"knflow-ingest", "knflow-featurize", "knflow-register", "knflow-deadletter"} <= rightless
    assert all(services[name] == FUNCTION_ACCOUNT for name in rightless)
    assert accounts[FUNCTION_ACCOUNT]["automountServiceAccountToken"] is False  # no API token in their pods
    deploy_rules = next(r for r in kinds["Role"] if r["metadata"]["name"] == "knflow-deploy")["rules"]
    assert {"serving.knative.dev"} == {
        g for rule in deploy_rules if "patch" in rule["verbs"] for g in rule["apiGroups"]
    }
