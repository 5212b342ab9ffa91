"""Users' own training code through the real platform processes, events only: the README's tutorial (a PyTorch
function tuned with TPE and the median stopping rule, its best model registered, deployed and asked over V2), a
scikit-learn Pipeline served with scikit-learn's own answers, and code that raises failing its run once, with why.

The tutorial's files are read from README.md, so the test runs the steps a new user follows.
"""

from __future__ import annotations

import json
import re
import runpy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import urllib3
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from functions.ml.features import read_features
from infra.localservices import free_platform_ports
from infra.settings import load_settings
from infra.store import ArtifactStore, open_store
from knflow.commands.demo import digits_npz
from knflow.drive import held_out_split, probe, submit, watch
from knflow.platform import Platform
from tests.lifecycle.usercode import BROKEN, SKLEARN, write_code

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[2] / "README.md"


def tutorial(name: str) -> str:
    """The body of the fenced block that follows ``<!-- tutorial: NAME -->`` in README.md."""
    after = README.read_text().split(f"<!-- tutorial: {name} -->", 1)[1]
    return after.split("```", 2)[1].split("\n", 1)[1]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data = tmp_path_factory.mktemp("platform")
    env = {
        "KNFLOW_DATA_DIR": str(data),
        **free_platform_ports(),
    }
    (data / "knflow.toml").write_text("")
    with Platform.start(load_settings(env, config_file=data / "knflow.toml")) as running:
        yield running


@pytest.fixture(scope="module")
def store(platform: Platform) -> ArtifactStore:
    return open_store(platform.settings.artifacts)


def test_the_readme_tutorial_tunes_my_pytorch_code_and_serves_the_best_trial(
    platform: Platform, store: ArtifactStore, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = tmp_path / "mytrain"
    code.mkdir()
    (code / "train.py").write_text(tutorial("train.py"))
    options = json.loads(tutorial("run.json"))
    options["train"]["code"] = str(code)
    key = submit(store, "digits", "digits.npz", digits_npz(), options)  # what `knflow demo --options run.json` does
    outcome = watch(platform.history(), key, timeout=900, store=store)

    assert outcome.failure is None, outcome.failure.data if outcome.failure else None
    tuning = outcome.tuning or {}
    statuses = [t["status"] for t in tuning["trials"]]
    assert len(statuses) == 5 and statuses.count("EarlyStopped") >= 1 and "Failed" not in statuses
    best = tuning["best_trial"]
    log = store.get(f"runs/{outcome.runid}/trials/{best}/train.log").decode()
    printed = json.loads(re.search(r"^params (\{.*\}) device ", log, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert printed == {"epochs": 6, **tuning["params"]}  # the best trial's values reached the function
    stopped = next(t["trial"] for t in tuning["trials"] if t["status"] == "EarlyStopped")
    reported = store.get(f"runs/{outcome.runid}/trials/{stopped}/metrics.jsonl").decode().splitlines()
    assert len(reported) < 6  # stopped through ctx.reporter.report before its last epoch

    registered = outcome.registered or {}
    assert registered["name"] == "digits-mine" and registered["lineage"]["trial"] == best
    assert registered["lineage"]["code"]["entrypoint"] == "train:train"
    deployed = outcome.deployed or {}
    assert deployed["endpoint"].endswith("/v2/models/digits-mine/infer")
    x, y = held_out_split(store, outcome.features or {})
    result = probe(platform.url("gateway"), "digits-mine", x, y, requests=60, headers=platform.headers)
    assert result.requests == 60 and result.accuracy >= 0.85

    ask = tutorial("ask.py").replace("http://127.0.0.1:8182", platform.url("gateway"))
    (tmp_path / "ask.py").write_text(ask)
    runpy.run_path(str(tmp_path / "ask.py"))
    assert re.fullmatch(r"digit \d is 0\n", capsys.readouterr().out)


def test_a_scikit_learn_pipeline_is_served_with_scikit_learns_answers(
    platform: Platform, store: ArtifactStore, tmp_path: Path
) -> None:
    code = write_code(tmp_path / "sk", sk=SKLEARN)
    options = {"model_name": "digits-sklearn", "train": {"entrypoint": "sk:boosted", "code": str(code)}}
    key = submit(store, "digits-sk", "digits.npz", digits_npz(), options)
    outcome = watch(platform.history(), key, timeout=600, store=store)
    assert outcome.failure is None, outcome.failure.data if outcome.failure else None
    assert outcome.registered and outcome.registered["lineage"]["code"]["conversion"]["precision"] == "float64"
    assert outcome.deployed is not None

    splits, _, _ = read_features(store, (outcome.features or {})["prefix"])
    x_test = splits.x["test"].reshape(len(splits.x["test"]), -1)
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x_test.shape), "data": x_test.ravel().tolist()}]
    }
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5.0, read=120.0))
    answer = http.request("POST", f"{platform.url('gateway')}/v2/models/digits-sklearn/infer", body=orjson.dumps(body))
    assert answer.status == 200, answer.data[:300]
    outputs = {o["name"]: o for o in orjson.loads(answer.data)["outputs"]}
    served = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    # scikit-learn's own answer: the same Pipeline fitted on the same rows (the function is deterministic)
    model = make_pipeline(StandardScaler(), GradientBoostingClassifier(n_estimators=20, random_state=0))
    model.fit(splits.x["train"].reshape(len(splits.x["train"]), -1).astype(np.float64), splits.y["train"])
    np.testing.assert_allclose(served, model.predict_proba(x_test.astype(np.float64)), rtol=0, atol=1e-5)
    assert outputs["label"]["data"] == model.predict(x_test.astype(np.float64)).tolist()


def test_code_that_raises_fails_its_run_once_saying_why(
    platform: Platform, store: ArtifactStore, tmp_path: Path
) -> None:
    code = write_code(tmp_path / "broken", broken=BROKEN)
    options = {"train": {"entrypoint": "broken:raises", "code": str(code)}}
    key = submit(store, "broken-code", "digits.npz", digits_npz(), options)
    outcome = watch(platform.history(), key, timeout=300, store=store)
    failure = outcome.failure
    assert failure is not None and failure.data["trigger"] == "lifecycle-train"
    assert failure.data["status"] == 422 and failure.data["attempts"] == 1  # the user's error: not retried
    assert "broken:raises raised ValueError: the labels are not what I expected" in failure.data["error"]
    assert outcome.registered is None
