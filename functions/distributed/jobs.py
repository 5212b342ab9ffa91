"""The train step's side of a training of knflow's own models in several workers: when it takes workers, the job
they read from the store (``<prefix>workers.json``), and where they run: this machine (PyTorch's elastic agent) or,
with ``training.target = kubernetes``, a Kubeflow Trainer TrainJob."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from infra.errors import KnflowError
from infra.namespaces import DEFAULT
from infra.settings import Settings
from infra.store import ArtifactStore

if TYPE_CHECKING:
    from functions.ml.params import TrainParams
    from functions.train import Job

JOB_FILE = "workers.json"
#: what every rank runs, after the launcher's options (``torchrun ... -m MODULE KEY NAMESPACE``)
WORKER_MODULE = "functions.distributed.worker"


def worker_args(store: ArtifactStore, key: str) -> list[str]:
    """The worker module's arguments: the job's key and the namespace whose view of the store holds it."""
    return [key, getattr(store, "namespace", DEFAULT)]


class WorkersFailed(KnflowError):
    """A worker died or the workers ran out of time: the attempt fails and a redelivery resumes from the last
    checkpoint (503, retried)."""

    status = 503
    retryable = True


def uses_workers(params: TrainParams, settings: Settings) -> bool:
    """Several workers; on Kubernetes also one with GPUs (a TrainJob gets the GPUs, not the train function's pod)."""
    return params.workers > 1 or (settings.training.target == "kubernetes" and params.gpus_per_worker > 0)


def run_workers(store: ArtifactStore, job: Job, fingerprint: str, params: TrainParams, settings: Settings) -> None:
    """Write the workers' job and run them where the settings say; returns when they all exited cleanly."""
    key = job.prefix + JOB_FILE
    spec = {"job": dataclasses.asdict(job), "fingerprint": fingerprint}
    store.put(key, json.dumps(spec, sort_keys=True).encode(), content_type="application/json")
    if settings.training.target == "kubernetes":
        from functions.distributed.cluster import run_trainjob

        run_trainjob(store, job, key, params, settings)
    else:
        from functions.distributed.local import run_local

        run_local(store, job, key, params, settings)


def read_job(store: ArtifactStore, key: str) -> tuple[dict[str, Any], str]:
    """The train step's job (as a dict of ``functions.train.Job``'s fields) and the checkpoint's fingerprint."""
    spec = json.loads(store.get(key))
    return spec["job"], spec["fingerprint"]
