"""The workers of a training on this machine: PyTorch's elastic agent (``torch.distributed.run``) starts one process
per worker with the ``env://`` rendezvous, gloo on the CPU or NCCL on GPUs. A worker that dies fails the attempt
(no restart: the redelivered event resumes from the last checkpoint); the agent and its workers die with the train
step. Their output is kept as ``<prefix>train.log``."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from functions.distributed.jobs import WORKER_MODULE, WorkersFailed, worker_args
from functions.distributed.launch import launch_command
from functions.usertrain.channel import PARENT_ENV
from functions.usertrain.process import kill_group, spawn, thread_environment, wait
from infra.errors import InvalidRequest
from infra.settings import Settings
from infra.store import ArtifactStore, location_of

if TYPE_CHECKING:
    from functions.ml.params import TrainParams
    from functions.train import Job

LOG, LOG_KEPT_BYTES = "train.log", 1 << 20


def run_local(store: ArtifactStore, job: Job, key: str, params: TrainParams, settings: Settings) -> None:
    """Run ``params.workers`` ranks of the worker on the job at ``key``; WorkersFailed unless all exit cleanly."""
    _check_gpus(params)
    argv = launch_command(sys.executable, params.workers, ["-m", WORKER_MODULE, *worker_args(store, key)])
    env = {
        **os.environ,
        **location_of(store).env(),
        "KNFLOW_LOG_LEVEL": settings.log_level,
        "KNFLOW_LOG_FORMAT": "text",
        PARENT_ENV: str(os.getpid()),
        **thread_environment(params.workers),
    }
    with tempfile.TemporaryDirectory(prefix="knflow-workers-") as tmp:
        log_path = Path(tmp) / LOG
        proc = spawn(argv, env, Path(tmp), log_path)
        try:
            done = wait(proc, settings.training.timeout_s)
        finally:
            kill_group(proc)
            store.put(job.prefix + LOG, log_path.read_bytes()[-LOG_KEPT_BYTES:], content_type="text/plain")
        if not done:
            limit = settings.training.timeout_s
            raise WorkersFailed(f"the workers of {job.prefix} ran past training.timeout_s ({limit:g} s)")
        if proc.returncode != 0:
            raise WorkersFailed(f"a worker of {job.prefix} failed ({_how(proc.returncode)}){_tail(log_path)}")


def _check_gpus(params: TrainParams) -> None:
    if params.gpus_per_worker == 0:
        return
    import torch

    needed, present = params.workers * params.gpus_per_worker, torch.cuda.device_count()
    if present < needed:
        raise InvalidRequest(
            f"train.workers={params.workers} with train.gpus_per_worker={params.gpus_per_worker} needs {needed} GPUs; "
            f"this machine has {present}"
        )


def _how(status: int | None) -> str:
    if status is not None and status < 0:
        return f"the agent was killed by {signal.Signals(-status).name}"
    return f"the agent exited with {status}"


def _tail(log_path: Path) -> str:
    """The lines of the agent's report that name the failed worker, else the last lines."""
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    named = [line for line in lines if line.startswith(("exitcode", "error_file", "rank", "Signal", "traceback"))]
    picked = named[-4:] or lines[-3:]
    return f": {' | '.join(picked)[-400:]}" if picked else ""
