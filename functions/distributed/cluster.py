"""The workers of a training as a Kubeflow Trainer TrainJob (``training.target = kubernetes``): ``train.workers`` pods
of knflow's image running the worker module under torchrun (Trainer's torch runtime sets its rendezvous), each with
``train.gpus_per_worker`` GPUs. The train step creates it, watches it to its end (bounded by
``training.timeout_s``, also its ``activeDeadlineSeconds``) and then reads what rank 0 left in the artifact store.

The TrainJob's name follows from the run (and trial), so a redelivered event finds the one an earlier delivery
created and watches it instead of starting another.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from functions.distributed.jobs import WORKER_MODULE, worker_args
from infra.errors import ConfigError
from infra.settings import Settings, TrainingSettings
from infra.store import ArtifactStore
from infra.trainjob import TrainJobClient, TrainJobError, TrainJobSpec, train_job

if TYPE_CHECKING:
    from functions.ml.params import TrainParams
    from functions.train import Job

log = logging.getLogger(__name__)
PART_OF = {"app.kubernetes.io/part-of": "knflow"}


def run_trainjob(store: ArtifactStore, job: Job, key: str, params: TrainParams, settings: Settings) -> None:
    """Create (or find) the job's TrainJob and wait for it; TrainJobError with Trainer's reason when it fails."""
    spec = trainjob_spec(job, worker_args(store, key), params, settings.training)
    client = TrainJobClient(api_client(settings.training), spec.namespace)
    created = client.create(train_job(spec))
    log.info("train: %s %s TrainJob %s/%s (%d workers)", job.prefix, "created" if created else "watching",
             spec.namespace, spec.name, spec.num_nodes)  # fmt: skip
    outcome = client.wait(spec.name, settings.training.timeout_s)
    if not outcome.complete:
        why = ": ".join(part for part in (outcome.reason, outcome.message) if part) or "no reason given"
        raise TrainJobError(f"TrainJob {spec.namespace}/{spec.name} failed: {why}")


def trainjob_name(job: Job) -> str:
    """A DNS-1035 name that one run's (or trial's) training always gets."""
    return "knflow-train-" + hashlib.sha256(job.prefix.encode()).hexdigest()[:20]


def worker_command(args: list[str]) -> tuple[str, ...]:
    """What every pod runs: torchrun (its options from Trainer's PET_* environment) over the worker module."""
    return ("python", "-m", "functions.distributed.launch", "-m", WORKER_MODULE, *args)


def trainjob_spec(job: Job, args: list[str], params: TrainParams, training: TrainingSettings) -> TrainJobSpec:
    """The TrainJob of one training, from the train function's settings: image, namespace, runtime, env, resources."""
    if not training.image:
        raise ConfigError("training.image is not set: a TrainJob runs knflow's image (knflow manifests sets it)")
    labels = PART_OF | {"knflow.dev/run": job.runid} | ({"knflow.dev/trial": job.trial} if job.trial else {})
    return TrainJobSpec(
        name=trainjob_name(job),
        namespace=training.namespace,
        image=training.image,
        command=worker_command(args),
        num_nodes=params.workers,
        runtime=training.runtime,
        env=tuple(_json(training.env, "training.env", list)),
        gpus_per_node=params.gpus_per_worker,
        resources=_json(training.resources, "training.resources", dict),
        deadline_s=max(1, int(training.timeout_s)),
        labels=labels,
    )


def api_client(training: TrainingSettings) -> Any:
    """The Kubernetes API client: the kubeconfig ``training.kubeconfig`` names, else the pod's ServiceAccount."""
    if training.kubeconfig:
        from infra.kubeapply import client_from_kubeconfig

        return client_from_kubeconfig(training.kubeconfig)
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException as exc:
        raise ConfigError(f"training.target is kubernetes but no cluster is configured: {exc}") from None
    return client.ApiClient()


def _json(text: str, setting: str, kind: type) -> Any:
    if not text:
        return kind()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{setting} is not JSON: {exc}") from None
    if not isinstance(value, kind):
        raise ConfigError(f"{setting} must be a JSON {'list' if kind is list else 'object'}")
    return value
