"""``train.entrypoint``: users' own training code, run by the train step in a child process with real PyTorch, real
scikit-learn and ONNX Runtime. Its models are exported and checked, its failures fail the trial or the run with the
reason and are not retried, and tuning reaches it. Every user file lives in a temporary directory."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from cloudevents.core.v1.event import CloudEvent
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from eventing.events import new_event
from functions import train, tune
from functions.contract import MODEL_TRAINED, TRIAL_REQUESTED
from functions.ml.features import read_features
from functions.runoptions import parse_options
from functions.tuning.experiment import SUCCEEDED, Experiment, Trial, load_experiment, save_experiment
from functions.usertrain.code import deployed_manifest
from functions.usertrain.measure import UserCodeFailed
from infra.errors import InvalidRequest
from infra.store import ArtifactStore
from tests.lifecycle.helpers import context_of, ready_of
from tests.lifecycle.usercode import BROKEN, SKLEARN, TORCH, write_code
from tests.processes import alive


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The users' code, in a directory of its own outside the package."""
    return write_code(tmp_path_factory.mktemp("usercode"), torchfit=TORCH, sk=SKLEARN, broken=BROKEN)


def _trial(ready: CloudEvent, trial: str, params: dict, experiment: Experiment | None = None) -> CloudEvent:
    """The trial request tune makes for ``trial`` of ``experiment`` (by default one without early stopping)."""
    runid = ready.get_extension("runid")
    spec = {"parameters": [{"name": "lr", "type": "double", "min": 0.01, "max": 1.0}]}
    experiment = experiment or Experiment(runid, spec, ready.get_data())
    data = tune.request_data(experiment, Trial(trial, int(trial.rsplit("-", 1)[1]), params))
    return new_event(TRIAL_REQUESTED, "/t", data, cause=ready, extensions={"mode": "trial"})


def _log(store: ArtifactStore, data: dict[str, Any]) -> str:
    prefix = data["metrics_key"].rsplit("/", 1)[0] if "metrics_key" in data else ""
    return store.get(f"{prefix}/train.log").decode()


def test_pytorch_entrypoint_is_exported_with_the_normalization_and_checked(prepared, code: Path) -> None:
    store = prepared[0]
    options = {"entrypoint": "torchfit:fit", "code": str(code), "epochs": 3, "hidden": 48, "lr": 0.01}
    out = train.handle(ready_of(prepared, options), context_of(prepared))
    assert out.get_type() == MODEL_TRAINED and out.get_extension("mode") == "train"
    data = out.get_data()
    assert data["status"] == "Succeeded" and data["metrics"]["epochs"] == 3 and len(data["curve"]) == 3
    assert data["metrics"]["test_accuracy"] >= 0.9 and data["metrics"]["onnx_max_abs_diff"] <= 1e-4
    assert data["signature"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert data["signature"]["outputs"] == [  # the label too, as knflow's own classifiers answer
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]
    assert data["params"] == {**options, "seed": 0}
    assert data["lineage"]["code"]["returned"] == "pytorch" and data["lineage"]["code"]["origin"] == f"directory {code}"
    assert 'PARAMS {"epochs": 3, "hidden": 48, "lr": 0.01}' in _log(store, data)
    splits, _, _ = read_features(store, data["features"]["prefix"])
    session = ort.InferenceSession(store.get(data["onnx_key"]), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"input": splits.x["test"].astype(np.float32)})[0]  # raw rows: normalized inside
    accuracy = float((probabilities.argmax(axis=1) == splits.y["test"]).mean())
    assert accuracy == pytest.approx(data["metrics"]["test_accuracy"], abs=1e-9)


def test_scikit_learn_pipeline_serves_scikit_learns_answers_on_the_test_split(prepared, code: Path) -> None:
    store = prepared[0]
    out = train.handle(ready_of(prepared, {"entrypoint": "sk:boosted", "code": str(code)}), context_of(prepared))
    data = out.get_data()
    conversion = data["lineage"]["code"]["conversion"]
    assert data["lineage"]["code"]["returned"] == "sklearn" and conversion["precision"] == "float64"
    assert [o["name"] for o in data["signature"]["outputs"]] == ["label", "probabilities"]
    splits, _, _ = read_features(store, data["features"]["prefix"])
    # the same Pipeline fitted on the same rows, here: what scikit-learn itself answers on the test split
    model = make_pipeline(StandardScaler(), GradientBoostingClassifier(n_estimators=20, random_state=0))
    model.fit(splits.x["train"].astype(np.float64), splits.y["train"])
    session = ort.InferenceSession(store.get(data["onnx_key"]), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(None, {"input": splits.x["test"].astype(np.float32)})
    want = model.predict_proba(splits.x["test"].astype(np.float64))
    np.testing.assert_allclose(probabilities, want, rtol=0, atol=1e-5)
    assert (label == model.predict(splits.x["test"].astype(np.float64))).all()
    assert data["metrics"]["onnx_max_abs_diff"] <= 1e-5 and data["metrics"]["epochs"] == 0


@pytest.mark.parametrize(
    "entrypoint, reason",
    [
        ("broken:raises", r"broken:raises raised ValueError: the labels are not what I expected \(broken.py line \d"),
        ("broken:not_a_model", r"broken:not_a_model: the entrypoint returned a list, not a model: return a torch"),
        ("broken:kills_itself", r"broken:kills_itself died: killed by signal 9 \(SIGKILL\) .*going down"),
        ("broken:kills_its_process_group", r"died: killed by signal 9 \(SIGKILL\) before returning a model"),
        ("broken:exits", r"broken:exits raised SystemExit: 3"),
        ("missing:fit", r"cannot load missing:fit from directory .*: ModuleNotFoundError: No module named 'missing'"),
    ],
)
def test_failing_code_fails_the_run_with_its_reason_and_is_not_retried(
    prepared, code: Path, entrypoint: str, reason: str
) -> None:
    with pytest.raises(UserCodeFailed, match=reason) as failure:
        train.handle(ready_of(prepared, {"entrypoint": entrypoint, "code": str(code)}), context_of(prepared))
    assert failure.value.status == 422 and failure.value.retryable is False  # the broker dead-letters it at once


@pytest.mark.parametrize("entrypoint", ["broken:raises", "broken:not_a_model", "broken:kills_itself"])
def test_failing_code_fails_the_trial_with_its_reason(prepared, code: Path, entrypoint: str) -> None:
    ready = ready_of(prepared, {"entrypoint": entrypoint, "code": str(code)})
    data = train.handle(_trial(ready, "trial-0000", {"lr": 0.1}), context_of(prepared)).get_data()
    assert data["status"] == "Failed" and data["reason"].startswith(entrypoint)
    assert data["params"] == {"lr": 0.1, "entrypoint": entrypoint, "code": str(code), "seed": 0}
    # a redelivery of the request answers the same failure without running the code again
    assert train.handle(_trial(ready, "trial-0000", {"lr": 0.1}), context_of(prepared)).get_data() == data


def test_code_that_runs_past_its_timeout_is_stopped(prepared, code: Path) -> None:
    started = time.monotonic()
    options = {"entrypoint": "broken:sleeps", "code": str(code), "timeout_s": 3}
    with pytest.raises(UserCodeFailed, match=r"ran past train.timeout_s \(3 s\) and was stopped"):
        train.handle(ready_of(prepared, options), context_of(prepared))
    assert time.monotonic() - started < 60


def test_the_median_rule_stops_a_trial_through_the_reporter(prepared, code: Path) -> None:
    store = prepared[0]
    ready = ready_of(prepared, {"entrypoint": "torchfit:poor", "code": str(code)})
    runid = ready.get_extension("runid")
    done = {f"t{i}": Trial(f"t{i}", i, {}, SUCCEEDED, 0.95, (0.9, 0.95, 0.95)) for i in range(3)}
    spec = {
        "parameters": [{"name": "lr", "type": "double", "min": 0.1, "max": 1}],
        "earlyStopping": {"minTrialsRequired": 3, "startStep": 2},
    }
    experiment = Experiment(runid, spec, ready.get_data(), done)
    save_experiment(store, experiment)
    data = train.handle(_trial(ready, "trial-0003", {"lr": 0.5}, experiment), context_of(prepared)).get_data()
    assert data["status"] == "EarlyStopped" and data["curve"] == [0.1, 0.1] and data["metrics"]["epochs"] == 2
    assert "STOPPED AT 2" in _log(store, data)
    lines = store.get(data["metrics_key"]).decode().splitlines()
    assert [json.loads(line) for line in lines] == [{"epoch": e, "val_accuracy": 0.1} for e in (1, 2)]


def test_a_redelivered_event_resumes_from_the_entrypoints_last_checkpoint(prepared, code: Path) -> None:
    store = prepared[0]
    ready = ready_of(prepared, {"entrypoint": "torchfit:resumable", "code": str(code)})
    prefix = f"runs/{ready.get_extension('runid')}/"
    with pytest.raises(UserCodeFailed, match="the worker went away"):
        train.handle(ready, context_of(prepared))
    assert not store.exists(prefix + "result.json")
    assert [json.loads(x)["epoch"] for x in store.get(prefix + "metrics.jsonl").decode().splitlines()] == [1, 2]
    data = train.handle(ready, context_of(prepared)).get_data()
    assert "START 3" in _log(store, data)
    assert [json.loads(x) for x in store.get(data["metrics_key"]).decode().splitlines()] == [
        {"epoch": e, "val_accuracy": e / 10} for e in (1, 2, 3, 4)
    ]
    assert data["metrics"]["epochs"] == 4 and data["curve"] == [0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize(
    "algorithm",
    [
        "random",
        "grid",
        "tpe",
        {"name": "hyperband", "settings": {"r_max": 3, "eta": 3, "resource": "max_iter"}},
    ],
    ids=["random", "grid", "tpe", "hyperband"],
)
async def test_every_search_algorithm_hands_its_parameters_to_the_entrypoint(
    prepared, code: Path, algorithm: Any
) -> None:
    store = prepared[0]
    spec = {
        "objective": {"metric": "val_accuracy", "type": "maximize"},
        "algorithm": algorithm,
        "parameters": [
            {"name": "C", "type": "double", "min": 0.01, "max": 10.0, "log": True},
            {"name": "max_iter", "type": "int", "min": 20, "max": 60},
        ],
        "maxTrialCount": 2,
        "parallelTrialCount": 2,
    }
    ready = ready_of(prepared, {"entrypoint": "sk:logistic", "code": str(code), "max_iter": 40}, tuning=spec)
    results = await _drive(prepared, ready)
    assert len(results) == 2 and all(r["status"] == "Succeeded" for r in results)
    experiment = load_experiment(store, ready.get_extension("runid"))
    assert experiment is not None and experiment.status == "Done"
    for trial in experiment.trials.values():
        printed = _log(store, trial.result).split("PARAMS ", 1)[1].splitlines()[0]
        assert json.loads(printed) == trial.params  # what the algorithm chose reached the code
    if isinstance(algorithm, dict):
        assert {t.params["max_iter"] for t in experiment.trials.values()} == {1}  # hyperband's first rung budget


async def _drive(prepared, ready: CloudEvent) -> list[dict[str, Any]]:
    """Tune and train in this process, event by event, until the experiment ends; → the trials' results."""
    queue, results = [ready], []
    while queue:
        event = queue.pop(0)
        ctx = context_of(prepared)
        queue += [r for r in [await tune.handle(event, ctx), train.handle(event, ctx)] if r is not None]
        queue += ctx.emitted
        if event.get_type() == MODEL_TRAINED:
            results.append(event.get_data())
    return results


def test_code_with_an_environment_of_its_own_runs_with_its_interpreter_without_credentials(
    prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-user-code")
    function = write_code(tmp_path / "myfunction", broken=BROKEN)
    python = function / ".venv" / "bin" / "python"  # an environment of its own: here, a wrapper that says so
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nMY_FUNCTION_ENV=its-own exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    ready = ready_of(prepared, {"entrypoint": "broken:environment", "code": str(function)})
    with pytest.raises(UserCodeFailed, match="done looking"):
        train.handle(ready, context_of(prepared))
    log = prepared[0].get(f"runs/{ready.get_extension('runid')}/train.log").decode()
    assert "ENV its-own" in log and "SEEN \n" in log


def test_a_deployed_function_is_found_by_name(prepared, code: Path) -> None:
    manifest = deployed_manifest(prepared[2], "trainers")
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"directory": str(code)}))
    out = train.handle(ready_of(prepared, {"entrypoint": "sk:boosted", "code": "trainers", "n_estimators": 3}),
                       context_of(prepared))  # fmt: skip
    assert out.get_data()["lineage"]["code"]["origin"] == "function trainers"
    with pytest.raises(InvalidRequest, match="no function of that name is deployed"):
        train.handle(ready_of(prepared, {"entrypoint": "sk:boosted", "code": "nobody"}), context_of(prepared))


def test_without_code_the_entrypoint_comes_from_the_installed_packages(
    prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = write_code(tmp_path / "site-packages", my_trainers=SKLEARN)  # importable by the interpreter, as installed
    monkeypatch.setenv("PYTHONPATH", str(site))
    ready = ready_of(prepared, {"entrypoint": "my_trainers:boosted", "n_estimators": 3})
    data = train.handle(ready, context_of(prepared)).get_data()
    assert data["status"] == "Succeeded" and data["lineage"]["code"]["origin"] == "installed packages"


@pytest.mark.parametrize(
    "train_options, message",
    [
        ({"entrypoint": "no_colon"}, "train.entrypoint must be 'module:function'"),
        ({"entrypoint": "m:f", "code": ""}, "train.code must be"),
        ({"entrypoint": "m:f", "timeout_s": -1}, "train.timeout_s must be a positive number"),
        ({"entrypoint": "m:f", "seed": "x"}, "train.seed must be a whole number"),
    ],
)
def test_bad_entrypoint_options_are_refused_when_the_run_starts(train_options: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_options({"train": train_options}, "run.json")
    assert parse_options({"train": {"entrypoint": "m:f", "anything": [1, "x"]}}, "run.json").train["anything"]


def test_a_relative_code_directory_is_refused_naming_the_fix(prepared) -> None:
    with pytest.raises(InvalidRequest, match="give a directory as an absolute path"):
        train.handle(ready_of(prepared, {"entrypoint": "m:f", "code": "./mine"}), context_of(prepared))


def test_the_context_can_be_used_by_hand_with_a_local_reporter() -> None:
    from functions.usertrain import LocalReporter, Split, TrainContext

    x = np.arange(12, dtype=np.float64).reshape(3, 2, 2)
    split = Split(x, np.array([0, 1, 0]))
    reporter = LocalReporter()
    ctx = TrainContext(split, split, split, ("a", "b", "c", "d"), 2, {}, 0, "cpu", reporter,
                       mean=np.float32(6.0), std=np.float32(2.0), kind="image")  # fmt: skip
    assert ctx.input_shape == (2, 2) and ctx.normalize(x).shape == (3, 1, 2, 2)
    assert ctx.normalize(x).dtype == np.float32 and ctx.normalize(x)[0, 0, 0, 0] == -3.0
    assert reporter.report(1, loss=np.float32(0.5)) is False and reporter.history == [{"epoch": 1, "loss": 0.5}]
    with pytest.raises(ValueError, match="metric loss is nan"):
        reporter.report(2, loss=float("nan"))
    with pytest.raises(ValueError, match="epoch must be a whole number"):
        reporter.report(0, loss=1.0)


def test_the_child_dies_with_the_train_step(tmp_path: Path) -> None:
    """A worker killed mid-training leaves no training behind: the child follows its parent."""
    import signal
    import subprocess

    from tests.eventually import eventually_sync

    pidfile, jobdir = tmp_path / "child.pid", tmp_path / "job"
    jobdir.mkdir()
    (jobdir / "job.json").write_text(json.dumps({"entrypoint": "sleeper:fit", "code_dir": str(tmp_path)}))
    # importing the entrypoint's module records the child's pid and sleeps
    (tmp_path / "sleeper.py").write_text(f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
                                         "time.sleep(600)\n")  # fmt: skip
    script = (
        "import sys; from pathlib import Path; from functions.usertrain.code import UserCode; "
        "from functions.usertrain.process import run_child; "
        f"run_child(UserCode(None, sys.executable, 'x'), Path({str(jobdir)!r}), lambda m: None, "
        f"log_path=Path({str(jobdir / 'log')!r}), timeout_s=None)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    try:
        pid = int(eventually_sync(lambda: pidfile.exists() and pidfile.read_text(), timeout=120, what="the child"))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        eventually_sync(lambda: not alive(pid), timeout=30, what=f"child {pid} to die with its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_a_regression_run_with_user_code_is_refused_when_it_starts() -> None:
    from functions.runoptions import parse_options
    from infra.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="classification runs only"):
        parse_options({"task": "regression", "train": {"entrypoint": "train:fit"}}, "run.json")
