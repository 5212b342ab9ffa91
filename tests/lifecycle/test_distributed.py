"""``train.workers``: a training in several processes under PyTorch's elastic agent (gloo on these CPUs), for knflow's
own models, a user's entrypoint and the trials of a tuning run; a worker killed mid-training fails the attempt and
the redelivered event resumes from the last checkpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from functions import train, tune
from functions.contract import TUNE_COMPLETED
from functions.distributed.jobs import WorkersFailed
from functions.ml.features import read_features
from functions.tuning.experiment import load_experiment
from infra.namespaces import NamespacedStore
from infra.store import ArtifactStore, ReadOnlyStore
from tests.eventually import eventually_sync
from tests.lifecycle.helpers import context_of, keys, ready_of
from tests.lifecycle.usercode import DDP, write_code

pytestmark = pytest.mark.slow

EPOCH_LINE = re.compile(r"epoch (\d+): .* with (\d+) workers")


def _epochs_logged(store: ArtifactStore, prefix: str) -> list[tuple[int, int]]:
    """(epoch, workers) of each epoch line the workers' log holds (rank 0 alone logs them)."""
    log = store.get(prefix + "train.log").decode()
    return [(int(m[1]), int(m[2])) for m in EPOCH_LINE.finditer(log)]


def _onnx_accuracy(store: ArtifactStore, data: dict[str, Any]) -> float:
    splits, _, _ = read_features(store, data["features"]["prefix"])
    session = ort.InferenceSession(store.get(data["onnx_key"]), providers=["CPUExecutionProvider"])
    answers = session.run(None, {session.get_inputs()[0].name: splits.x["test"].astype(np.float32)})
    return float((answers[0].argmax(axis=1) == splits.y["test"]).mean())


def test_two_workers_reach_the_accuracy_of_one_and_rank_0_alone_writes(prepared) -> None:
    store = prepared[0]
    outcomes = {}
    for workers in (1, 2):
        ready = ready_of(prepared, {"epochs": 5, "seed": 3, "workers": workers})
        outcomes[workers] = train.handle(ready, context_of(prepared)).get_data()
    one, two = outcomes[1], outcomes[2]
    assert two["status"] == "Succeeded" and two["params"]["workers"] == 2 and two["metrics"]["epochs"] == 5
    assert one["metrics"]["test_accuracy"] >= 0.94 and two["metrics"]["test_accuracy"] >= 0.94
    assert abs(one["metrics"]["test_accuracy"] - two["metrics"]["test_accuracy"]) <= 0.03
    assert _onnx_accuracy(store, two) == pytest.approx(two["metrics"]["test_accuracy"], abs=1e-6)
    prefix = two["metrics_key"].rsplit("/", 1)[0] + "/"
    written = {k.removeprefix(prefix) for k in keys(store, prefix)}
    assert written == {"run.json", "workers.json", "checkpoint.pt", "metrics.jsonl", "train.log", "model.onnx",
                       "result.json"}  # fmt: skip
    lines = [json.loads(line) for line in store.get(two["metrics_key"]).decode().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4, 5]  # one line per epoch: one rank wrote them
    assert _epochs_logged(store, prefix) == [(e, 2) for e in range(1, 6)]


def test_a_worker_other_than_rank_0_cannot_write_the_store(prepared) -> None:
    readonly = ReadOnlyStore(prepared[0], "worker rank 1")
    assert readonly.exists("raw/digits/d.csv")
    with pytest.raises(PermissionError, match="worker rank 1 reads the artifact store only"):
        readonly.put("runs/x/metrics.jsonl", b"{}")


def _worker_pids(job_key: str) -> dict[int, int]:
    """rank → pid of the running workers of the job at ``job_key`` (read from /proc: these are the test's own)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"functions.distributed.worker" not in argv or b"functions.distributed.launch" in argv:
                continue
            if job_key.encode() not in argv:
                continue
            env = dict(v.split(b"=", 1) for v in (entry / "environ").read_bytes().split(b"\0") if b"=" in v)
            found[int(env[b"RANK"])] = int(entry.name)
        except (OSError, ValueError, KeyError):
            continue  # not a process, or one that ended while read
    return found


def test_a_killed_worker_fails_the_attempt_and_the_redelivery_resumes_from_the_checkpoint(prepared) -> None:
    store = prepared[0]
    epochs = 20
    ready = ready_of(prepared, {"epochs": epochs, "hidden": 32, "batch_size": 16, "workers": 2})
    prefix = f"runs/{ready.get_extension('runid')}/"
    failure: list[BaseException] = []

    def attempt() -> None:
        try:
            train.handle(ready, context_of(prepared))
        except BaseException as exc:  # the attempt's outcome, asserted below
            failure.append(exc)

    first = threading.Thread(target=attempt)
    first.start()
    try:
        eventually_sync(lambda: store.exists(prefix + "metrics.jsonl"), timeout=60, what="the first epoch")
        pids = eventually_sync(lambda: _worker_pids(prefix + "workers.json"), what="the workers' pids")
        os.kill(pids[1], signal.SIGKILL)
    finally:
        first.join(timeout=60)
    assert not first.is_alive() and len(failure) == 1 and isinstance(failure[0], WorkersFailed), failure
    assert failure[0].retryable and failure[0].status == 503
    done_before = len(store.get(prefix + "metrics.jsonl").decode().splitlines())
    assert 1 <= done_before < epochs
    data = train.handle(ready, context_of(prepared)).get_data()  # the redelivery
    assert data["status"] == "Succeeded" and data["metrics"]["epochs"] == epochs
    resumed = [epoch for epoch, _ in _epochs_logged(store, prefix)]
    assert resumed == list(range(done_before + 1, epochs + 1))  # the second attempt ran only what was left
    lines = [json.loads(line) for line in store.get(prefix + "metrics.jsonl").decode().splitlines()]
    assert [m["epoch"] for m in lines] == list(range(1, epochs + 1))
    assert _worker_pids(prefix + "workers.json") == {}  # none left behind


def test_a_users_entrypoint_trains_in_two_workers_through_the_same_context(prepared, tmp_path: Path) -> None:
    store = prepared[0]
    code = write_code(tmp_path / "code", ddp=DDP)
    options = {"entrypoint": "ddp:fit", "code": str(code), "epochs": 4, "workers": 2}
    data = train.handle(ready_of(prepared, options), context_of(prepared)).get_data()
    assert data["status"] == "Succeeded" and data["params"]["workers"] == 2 and data["metrics"]["epochs"] == 4
    assert data["metrics"]["test_accuracy"] >= 0.9
    assert _onnx_accuracy(store, data) == pytest.approx(data["metrics"]["test_accuracy"], abs=1e-9)
    log = store.get(data["metrics_key"].rsplit("/", 1)[0] + "/train.log").decode()
    assert "RANK 0 OF 2 GROUP True ON cpu" in log and "RANK 1 OF 2 GROUP True ON cpu" in log
    lines = [json.loads(line) for line in store.get(data["metrics_key"]).decode().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4]  # rank 0's reports; the other rank's are not recorded


async def test_a_tuning_runs_trials_each_train_in_two_workers(prepared) -> None:
    store = prepared[0]
    spec = {
        "objective": {"metric": "val_accuracy"},
        "algorithm": "random",
        "parameters": [{"name": "lr", "type": "double", "min": 3e-3, "max": 3e-2, "log": True}],
        "maxTrialCount": 2,
        "parallelTrialCount": 1,
    }
    ready = ready_of(prepared, {"epochs": 3, "workers": 2}, tuning=spec)
    queue, completed = [ready], []
    while queue:
        event = queue.pop(0)
        ctx = context_of(prepared)
        for reply in (await tune.handle(event, ctx), train.handle(event, ctx)):
            if reply is not None:
                (completed if reply.get_type() == TUNE_COMPLETED else queue).append(reply)
        queue += ctx.emitted
    assert len(completed) == 1
    experiment = load_experiment(store, ready.get_extension("runid"))
    assert experiment.status == "Done" and len(experiment.trials) == 2
    for trial in experiment.trials.values():
        prefix = f"runs/{ready.get_extension('runid')}/trials/{trial.id}/"
        result = json.loads(store.get(prefix + "result.json"))
        assert result["status"] == "Succeeded" and result["params"]["workers"] == 2
        assert _epochs_logged(store, prefix) == [(1, 2), (2, 2), (3, 2)]
    assert completed[0].get_data()["best_trial"] in experiment.trials


def test_a_namespaces_training_in_two_workers_reads_and_writes_under_its_prefix(prepared) -> None:
    store, features, data_dir = prepared
    team = NamespacedStore(store, "team-a")
    for key in keys(store, features["prefix"]):  # the same features, as team-a's own
        team.put(key, store.get(key))
    in_team = (team, features, data_dir)
    out = train.handle(ready_of(in_team, {"epochs": 2, "seed": 3, "workers": 2}), context_of(in_team)).get_data()
    assert out["status"] == "Succeeded" and out["params"]["workers"] == 2
    assert store.exists(f"namespaces/team-a/{out['onnx_key']}") and not store.exists(out["onnx_key"])
    prefix = out["metrics_key"].rsplit("/", 1)[0] + "/"
    assert _epochs_logged(team, prefix) == [(1, 2), (2, 2)]  # rank 0 wrote its log in team-a's view
