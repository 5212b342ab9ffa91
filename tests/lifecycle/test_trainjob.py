"""The Kubernetes path of a training in several workers: the Kubeflow Trainer TrainJob knflow renders (validated
against the ``kubeflow-trainer-api`` typed models), the RBAC its creator gets, and what the train step sends the API
server and does with its answers, against a local stand-in that records the requests. No real cluster runs here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from functions import featurize, ingest, train
from functions.distributed.cluster import trainjob_name, trainjob_spec
from functions.train import Job
from infra import knative
from infra.errors import ConfigError
from infra.settings import load_settings
from infra.store import open_store
from infra.trainjob import RBAC_RULE, TrainJobError, TrainJobSpec, rbac, train_job, validate
from tests.kubefake import FakeKube, start_fake_kube
from tests.lifecycle.helpers import StepContext, arrived, digits_csv

PATH = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"


def _spec(**changes) -> TrainJobSpec:
    fields = {"name": "knflow-train-abc", "namespace": "ml", "image": "registry.example/knflow:1",
              "command": ("python", "-m", "functions.distributed.launch", "-m", "w", "k"), "num_nodes": 2}  # fmt: skip
    return TrainJobSpec(**(fields | changes))


def test_the_rendered_trainjob_validates_against_trainers_typed_models() -> None:
    resource = train_job(_spec(gpus_per_node=1, env=({"name": "KNFLOW_ARTIFACTS", "value": "s3://b"},)))
    trainer = resource["spec"]["trainer"]
    assert resource["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and resource["kind"] == "TrainJob"
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 1
    assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert resource["spec"]["runtimeRef"] == {"name": "torch-distributed"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["spec"].update(suspended=True), "unknown field 'spec.suspended'"),
        (lambda r: r["spec"]["trainer"].update(numNodes="two"), "numNodes"),
        (lambda r: r["metadata"].update(name="Not_A_Name"), "DNS-1035"),
        (lambda r: r["spec"]["trainer"].update(env=[{"name": "PET_NNODES", "value": "3"}]), "PET_NNODES"),
        (lambda r: r.update(apiVersion="kubeflow.org/v1"), "apiVersion/kind"),
    ],
)
def test_an_invalid_trainjob_is_refused_naming_what_is_wrong(change, message: str) -> None:
    resource = train_job(_spec())
    change(resource)
    with pytest.raises(ConfigError, match=message):
        validate(resource)


def test_the_train_functions_service_account_may_create_get_and_watch_trainjobs_and_nothing_else() -> None:
    resources = knative.validate(rbac("ml", "knflow-train"))  # strict: Kubernetes' RBAC schemas
    role = next(r for r in resources if r["kind"] == "Role")
    assert (
        role["rules"]
        == [RBAC_RULE]
        == [{"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"], "verbs": ["create", "get", "watch"]}]
    )
    binding = next(r for r in resources if r["kind"] == "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "knflow-train", "namespace": "ml"}]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeKube]:
    fake, stop = start_fake_kube(tmp_path)
    yield fake
    stop()


def _context(tmp_path: Path, config: Path) -> StepContext:
    env = {"KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_TRAINING_TARGET": "kubernetes", "KNFLOW_TRAINING_NAMESPACE": "ml",
           "KNFLOW_TRAINING_IMAGE": "registry.example/knflow:1", "KNFLOW_TRAINING_KUBECONFIG": str(config),
           "KNFLOW_TRAINING_TIMEOUT_S": "30"}  # fmt: skip
    return StepContext(store=open_store(f"file://{tmp_path / 'artifacts'}"), settings=load_settings(env=env))


def _run(ctx: StepContext, job: Job) -> None:
    from functions.distributed.jobs import run_workers
    from functions.ml.params import parse_params

    run_workers(ctx.store, job, "fingerprint", parse_params(job.params), ctx.settings)


JOB = Job("run-k8s", None, {"prefix": "features/d/abc/", "dataset": "d"}, {"workers": 2, "gpus_per_worker": 1}, None,
          None)  # fmt: skip


def test_the_train_step_creates_the_trainjob_and_watches_it_to_completion(cluster: FakeKube, tmp_path: Path) -> None:
    ctx = _context(tmp_path, cluster.kubeconfig)
    _run(ctx, JOB)
    create, watch = cluster.calls
    assert (create.method, create.path, create.content_type) == ("POST", PATH, "application/json")
    assert (watch.method, watch.path, watch.body) == ("GET", PATH, None)
    args = ["runs/run-k8s/workers.json", "default"]  # the job's key, in the run's namespace's view of the store
    expected = train_job(trainjob_spec(JOB, args, _params(JOB), ctx.settings.training))
    assert create.body == expected
    assert create.body["spec"]["trainer"]["command"][-2:] == args
    assert create.body["spec"]["trainer"]["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "1"}
    assert watch.query["watch"] == "true" and watch.query["fieldSelector"] == f"metadata.name={trainjob_name(JOB)}"
    assert json.loads(ctx.store.get("runs/run-k8s/workers.json"))["job"]["runid"] == "run-k8s"


def test_a_redelivery_watches_the_trainjob_an_earlier_delivery_created(cluster: FakeKube, tmp_path: Path) -> None:
    ctx = _context(tmp_path, cluster.kubeconfig)
    _run(ctx, JOB)
    _run(ctx, JOB)  # the same name: 409, and the step watches the one that exists
    assert [call.method for call in cluster.calls] == ["POST", "GET", "POST", "GET"] and len(cluster.trainjobs) == 1


def test_a_failed_trainjob_fails_the_run_with_its_reason_and_is_not_retried(cluster: FakeKube, tmp_path: Path) -> None:
    cluster.trainjob_end = ("Failed", "DeadlineExceeded", "the TrainJob ran past activeDeadlineSeconds")
    ctx = _context(tmp_path, cluster.kubeconfig)
    with pytest.raises(TrainJobError, match="failed: DeadlineExceeded: the TrainJob ran past") as failure:
        _run(ctx, JOB)
    assert failure.value.status == 424 and failure.value.retryable is False  # dead-lettered at once: step.failed


def test_a_failed_trainjob_fails_only_its_trial(cluster: FakeKube, tmp_path: Path, digits) -> None:
    cluster.trainjob_end = ("Failed", "BackoffLimitExceeded", "pod knflow-train-0 exited with 1")
    ctx = _context(tmp_path, cluster.kubeconfig)
    ctx.store.put("raw/digits/d.csv", digits_csv(digits))
    ready = featurize.handle(ingest.handle(arrived("raw/digits/d.csv", ctx.store), ctx), ctx)
    trial = Job(ready.get_extension("runid"), "trial-0000", ready.get_data(), {"workers": 2, "epochs": 1}, None, None)
    result = train.run(ctx.store, trial, None, ctx.log, ctx.settings)
    assert result["status"] == "Failed" and "BackoffLimitExceeded: pod knflow-train-0 exited with 1" in result["reason"]


def test_without_an_image_the_kubernetes_target_is_refused_naming_the_setting(tmp_path: Path) -> None:
    settings = load_settings(env={"KNFLOW_TRAINING_TARGET": "kubernetes"})
    with pytest.raises(ConfigError, match=r"training\.image is not set"):
        trainjob_spec(JOB, ["k", "default"], _params(JOB), settings.training)


def _params(job: Job):
    from functions.ml.params import parse_params

    return parse_params(job.params)
