"""``knflow runs ls|show|compare|logs`` against the real platform: two small runs with different options, submitted
once through ``knflow.Client``, read back by the command line as a user runs it (piped, so tables are tab-separated),
in tables, JSON and YAML."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from infra.logs import JsonFormatter
from knflow import Client
from knflow.dashboard.runlogs import log_path
from knflow.platform import Platform
from tests.eventually import eventually_sync
from tests.lifecycle.tables import numeric_iris_csv as iris_csv
from tests.live_platform import knflow, running_platform

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Seeded:
    platform: Platform
    env: dict[str, str]  # the CLI's environment: the platform's settings and its admin token
    sweep: str  # dataset iris, experiment "sweep", lr 0.01, 2 epochs
    flowers: str  # dataset flowers, experiment by default (flowers), lr 0.003, 3 epochs


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    data = tmp_path_factory.mktemp("runs")
    with running_platform(data, log_format="json") as (platform, env):
        no_deploy = {"deploy": {"enabled": False}}
        sweep, sweep_id = submit_with_knflow_run(
            env, data, "sweep", {"train": {"model": "mlp", "epochs": 2, "lr": 0.01}, **no_deploy}
        )
        flowers = Client.from_settings(platform.settings).submit(
            iris_csv(), dataset="flowers", filename="flowers.csv",
            options={"train": {"model": "mlp", "epochs": 3, "lr": 0.003}, **no_deploy},
        )  # fmt: skip
        outcome = flowers.wait(timeout=300)
        assert outcome.registered is not None, outcome.summary()
        out, err = sweep.communicate(timeout=300)
        assert sweep.returncode == 0, out + err
        yield Seeded(platform, env, sweep_id, flowers.runid)


def submit_with_knflow_run(
    env: dict[str, str], data: Path, experiment: str, options: dict
) -> tuple[subprocess.Popen, str]:
    """``knflow run iris.csv --experiment E`` in its own process, and its run id once it has submitted the run."""
    (data / "iris.csv").write_bytes(iris_csv())
    (data / "options.json").write_text(json.dumps(options))
    args = ["run", str(data / "iris.csv"), "--dataset", "iris", "--experiment", experiment, "--options"]
    process = subprocess.Popen(
        [sys.executable, "-m", "knflow", *args, str(data / "options.json")],
        env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in process.stdout:  # type: ignore[union-attr]
        if found := re.search(r"submitted \S+ as run (\S+);", line):
            return process, found.group(1)
    raise AssertionError(f"knflow run did not submit: {process.communicate()}")


def cli(seeded: Seeded, *args: str) -> str:
    done = knflow(seeded.env, "runs", *args, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_runs_ls_filters_by_experiment_dataset_and_status(seeded: Seeded) -> None:
    rows = json.loads(cli(seeded, "ls", "-o", "json"))["runs"]
    assert {r["runid"]: (r["experiment"], r["dataset"], r["status"]) for r in rows} == {
        seeded.sweep: ("sweep", "iris", "succeeded"),
        seeded.flowers: ("flowers", "flowers", "succeeded"),
    }
    assert [r["runid"] for r in json.loads(cli(seeded, "ls", "--experiment", "sweep", "-o", "json"))["runs"]] == [
        seeded.sweep
    ]
    assert [r["runid"] for r in yaml.safe_load(cli(seeded, "ls", "--dataset", "flowers", "-o", "yaml"))["runs"]] == [
        seeded.flowers
    ]
    assert json.loads(cli(seeded, "ls", "--status", "failed", "-o", "json"))["runs"] == []
    header, *lines = cli(seeded, "ls").splitlines()  # piped: tab-separated, newest first
    assert header.split("\t") == ["RUN", "EXPERIMENT", "DATASET", "STATUS", "STEP", "STARTED", "DURATION", "MODEL"]
    assert [line.split("\t")[:4] for line in lines] == [
        [seeded.flowers, "flowers", "flowers", "succeeded"],
        [seeded.sweep, "sweep", "iris", "succeeded"],
    ]
    refused = knflow(seeded.env, "runs", "ls", "--status", "done")
    assert refused.returncode == 2 and "invalid choice: 'done'" in refused.stderr


def test_runs_show_prints_steps_trials_model_and_lineage(seeded: Seeded) -> None:
    text = cli(seeded, "show", seeded.sweep)
    facts = dict(line.split("\t", 1) for line in text.split("\n\n")[0].splitlines()[1:])
    assert (facts["experiment"], facts["dataset"], facts["status"]) == ("sweep", "iris", "succeeded")
    assert facts["model"].startswith("iris v")
    assert facts["lineage.run"] == seeded.sweep and facts["lineage.dataset"].startswith("datasets/iris/")
    steps = [line.split("\t")[:2] for line in text.split("\n\n")[1].splitlines()[1:]]
    assert steps[:4] == [["ingest", "succeeded"], ["featurize", "succeeded"], ["train", "succeeded"],
                         ["register", "succeeded"]]  # fmt: skip
    detail = yaml.safe_load(cli(seeded, "show", seeded.sweep, "-o", "yaml"))
    assert detail["run"]["runid"] == seeded.sweep and detail["model"]["params"]["lr"] == 0.01


def test_runs_compare_marks_the_fields_that_differ(seeded: Seeded) -> None:
    body = json.loads(cli(seeded, "compare", seeded.sweep, seeded.flowers, "-o", "json"))
    sweep, flowers = body["items"]
    assert (sweep["params"]["lr"], flowers["params"]["lr"]) == (0.01, 0.003)
    assert (sweep["experiment"], flowers["experiment"]) == ("sweep", "flowers")
    assert sweep["data"]["version"] == flowers["data"]["version"]  # the same rows: the same data set version
    assert {"params.lr", "params.epochs", "data.dataset", "data.key"} <= set(body["differs"])
    assert "data.version" not in body["differs"] and "params.model" not in body["differs"]
    rows = {
        line.split("\t")[1]: line.split("\t")
        for line in cli(seeded, "compare", seeded.sweep, seeded.flowers).splitlines()
    }
    assert rows["FIELD"][2:] == [seeded.sweep, seeded.flowers]
    assert rows["params.lr"] == ["*", "params.lr", "0.01", "0.003"]
    assert rows["params.model"][0] == "" and rows["experiment"][2:] == ["sweep", "flowers"]
    missing = knflow(seeded.env, "runs", "compare", seeded.sweep, "run-nope")
    assert missing.returncode == 2 and "no run 'run-nope'" in missing.stderr


def test_runs_logs_prints_the_runs_function_lines_by_step(seeded: Seeded) -> None:
    lines = [json.loads(line) for line in cli(seeded, "logs", seeded.sweep, "-o", "json").splitlines()]
    steps = {line["step"] for line in lines}
    assert {"ingest", "train", "register"} <= steps, lines
    # the worker names its function on every record, a library's too (the registry's, under register)
    assert any(line["logger"] == "serving.registry" and line["step"] == "register" for line in lines), lines
    assert any("raw/iris/" in line["message"] for line in lines if line["step"] == "ingest")
    assert not any("raw/flowers/" in line["message"] for line in lines)  # the other run's lines are not here
    train = [
        json.loads(line) for line in cli(seeded, "logs", seeded.sweep, "--step", "train", "-o", "json").splitlines()
    ]
    assert train and {line["step"] for line in train} == {"train"}
    plain = cli(seeded, "logs", seeded.sweep, "--step", "ingest").splitlines()
    assert plain and all(line.split("\t")[1] == "ingest" for line in plain)


def test_runs_logs_follow_prints_a_line_written_after_it_started(seeded: Seeded) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-m", "knflow", "runs", "logs", seeded.flowers, "--follow", "-o", "json"],
        env=seeded.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    printed: list[dict] = []
    reader = threading.Thread(target=lambda: printed.extend(json.loads(line) for line in follower.stdout), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        eventually_sync(lambda: len(printed) > 0, 60, "the follower to print the run's lines so far")
        before = len(printed)
        write_function_line(seeded, seeded.flowers, "train", "a line written while the follower waits")
        eventually_sync(
            lambda: any(p["message"] == "a line written while the follower waits" for p in printed[before:]),
            30, "the follower to print the new line",
        )  # fmt: skip
        assert follower.poll() is None  # still following
    finally:
        follower.terminate()
        follower.wait(30)


def write_function_line(seeded: Seeded, runid: str, function: str, message: str) -> None:
    """Append a record to the function runner's log the way a function worker writes one (JSON, runid, function)."""
    handler = logging.FileHandler(log_path(seeded.platform.settings))
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"functions.{function}.test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message, extra={"runid": runid, "function": function})
    finally:
        logger.removeHandler(handler)
        handler.close()
