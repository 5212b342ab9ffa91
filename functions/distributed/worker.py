"""One rank of a training of knflow's own models in several workers: ``python -m functions.distributed.worker KEY``
under PyTorch's elastic agent (this machine) or Kubeflow Trainer's torch runtime (a TrainJob's pods).

Every rank reads the job, the features and the last checkpoint from the artifact store (``KNFLOW_ARTIFACTS``) and
trains its shard of each epoch (``functions.ml.training.train`` with a ``World``); rank 0 alone writes: metrics.jsonl
and checkpoint.pt each epoch, as a training in one process does (the others hold the store read-only). A training
that diverges says so in its last checkpoint and every rank exits cleanly: the train step reads the outcome there.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import cast

import torch

from functions.distributed.jobs import read_job
from functions.ml.features import read_features
from functions.ml.metrics import CLASSIFICATION
from functions.ml.params import parse_params
from functions.ml.training import EpochHook, EpochMetrics, TrainingDiverged, train
from functions.ml.world import World
from functions.train import Job, StoreCheckpointer, epoch_hook
from functions.usertrain.channel import follow_parent
from infra.logs import configure_logging
from infra.namespaces import DEFAULT, scoped
from infra.settings import load_settings
from infra.store import ArtifactStore, ReadOnlyStore, open_store

log = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    follow_parent()
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    namespace = argv[2] if len(argv) > 2 else DEFAULT  # the job's key is in this namespace's view of the store
    store = scoped(open_store(settings.artifacts), namespace)
    fields, fingerprint = read_job(store, argv[1])
    job = Job(**fields)
    params = parse_params(job.params)
    world = World.from_env(params.gpus_per_worker)
    torch.set_num_threads(max(1, min(4, (os.cpu_count() or 1) // min(world.size, os.cpu_count() or 1))))
    world.join()
    # a ReadOnlyStore reads through to the store (by __getattr__) and refuses writes
    reader = store if world.leader else cast(ArtifactStore, ReadOnlyStore(store, f"worker rank {world.rank}"))
    try:
        run(reader, job, fingerprint, world)
    except BaseException:
        world.leave(clean=False)
        raise
    world.leave()
    return 0


def run(store: ArtifactStore, job: Job, fingerprint: str, world: World) -> None:
    """Train this rank's share of the job's remaining epochs."""
    params = parse_params(job.params)
    splits, transform, manifest = read_features(store, job.features["prefix"])
    checkpointer = StoreCheckpointer(store, job.prefix + "checkpoint.pt", fingerprint)
    hook = _timed(epoch_hook(store, job, log), len(splits.y["train"]), world) if world.leader else None
    task = manifest.get("task", CLASSIFICATION)
    try:
        train(
            splits, transform, manifest["num_classes"], params, task=task, checkpointer=checkpointer, on_epoch=hook,
            world=world,
        )  # fmt: skip
    except TrainingDiverged as exc:
        if world.leader:
            checkpointer.save({"diverged": str(exc), "history": []})
        log.warning("worker %d: %s", world.rank, exc)


def _timed(hook: EpochHook, rows: int, world: World) -> EpochHook:
    """The hook, logging each epoch's time and samples/s (metrics, checkpoint and the hook's own work included)."""
    last = [time.perf_counter()]

    def on_epoch(history: list[EpochMetrics]) -> bool:
        now = time.perf_counter()
        seconds, last[0] = now - last[0], now
        log.info("epoch %d: %.3f s, %.1f samples/s with %d workers", history[-1].epoch, seconds, rows / seconds,
                 world.size)  # fmt: skip
        return hook(history)

    return on_epoch


if __name__ == "__main__":
    sys.exit(main(sys.argv))
