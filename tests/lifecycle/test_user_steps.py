"""Users' own steps in the lifecycle, on the real platform processes (embedded broker): the README's tutorial run
as written, and a pipeline built in Python whose "validate" step refuses a small data set (the run ends in
step.failed with its reason, not retried) and whose "notify" step POSTs each deployed model to a receiver."""

from __future__ import annotations

import http.server
import io
import re
import subprocess
import threading
from collections.abc import Iterator

import numpy as np
import orjson
import pytest

from functions.contract import DATASET_INGESTED, FEATURES_READY, MODEL_DEPLOYED
from infra.store import open_store
from knflow.commands.demo import digits_npz
from knflow.drive import submit, watch
from knflow.pipeline import Pipeline, on
from knflow.platform import Platform
from tests.eventually import eventually_sync
from tests.live_platform import ROOT, knflow, running_platform

pytestmark = pytest.mark.slow
VALIDATED = "com.example.validate.done"
QUICK = {"train": {"epochs": 2}}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, dict[str, str]]]:
    with running_platform(tmp_path_factory.mktemp("usersteps")) as running:
        yield running


def tutorial_blocks() -> list[str]:
    """The shell blocks of the README's "Add your own step", in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Add your own step", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def test_the_readme_tutorial_adds_a_step_that_a_run_passes_through(platform, tmp_path):
    running, env = platform
    outputs = []
    for block in tutorial_blocks():
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{block}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)
    assert "function validate deployed" in "".join(outputs)
    validated = orjson.loads(outputs[-1].strip().splitlines()[-1])["events"]  # what curl printed
    assert [e["type"] for e in validated] == [VALIDATED] and validated[0]["data"]["dataset"] == "digits"
    outcome = watch(running.history(), "raw/digits/digits.npz", timeout=600)
    types = [e.type for e in outcome.events]
    assert outcome.failure is None, outcome.failure.data if outcome.failure else None
    assert types.index(DATASET_INGESTED) < types.index(VALIDATED) < types.index(FEATURES_READY)
    assert MODEL_DEPLOYED in types


class Receiver(http.server.ThreadingHTTPServer):
    """Collects the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(orjson.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/deployed"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_a_pipeline_built_in_python_refuses_small_data_and_notifies_each_deployment(platform, tmp_path, receiver):
    running, env = platform
    for name, shape, code in (("validate", "knflow", VALIDATE), ("notify", "knative", NOTIFY)):
        assert knflow(env, "func", "new", name, "--shape", shape, cwd=tmp_path).returncode == 0
        (tmp_path / name / "function" / "func.py").write_text(code)
    pipeline = Pipeline.lifecycle("lifecycle").insert_between(
        "ingest", "featurize", name="validate", function="./validate", emits=VALIDATED, settings={"min_rows": 200}
    )
    pipeline.step("notify", function="./notify", takes=[on(MODEL_DEPLOYED)], settings={"url": receiver.url})
    applied = knflow(env, "pipeline", "apply", str(pipeline.save(tmp_path / "lifecycle.yaml")))
    assert applied.returncode == 0, applied.stderr
    shown = running.api("dashboard").call("GET", "/api/pipelines/lifecycle")
    assert [s["function"] for s in shown["spec"]["steps"] if s["name"] in ("validate", "notify")] == [
        "validate",
        "notify",
    ]

    store, history = open_store(running.settings.artifacts), running.history()
    with np.load(io.BytesIO(digits_npz())) as digits:
        tiny = _npz(digits["x"][:150], digits["y"][:150])
    small = watch(history, submit(store, "tiny", "tiny.npz", tiny, QUICK), timeout=180)
    failure = small.failure
    assert failure is not None and failure.data["trigger"] == "lifecycle-validate"
    assert (failure.data["status"], failure.data["attempts"]) == (400, 1)  # a 4xx is not retried
    assert "data set tiny has 150 rows; this pipeline needs 200" in failure.data["error"]
    assert FEATURES_READY not in [e.type for e in small.events]

    good = watch(history, submit(store, "notified", "digits.npz", digits_npz(), QUICK), timeout=600)
    assert good.failure is None, good.failure.data if good.failure else None
    deployed = good.deployed or {}
    posted = eventually_sync(
        lambda: [b for b in receiver.bodies if b["runid"] == good.runid], timeout=60, what="the notification"
    )
    assert posted[0]["model"] == deployed["name"] == "notified" and posted[0]["version"] == deployed["version"]


def _npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


VALIDATE = '''\
"""validate: refuse a data set with fewer rows than the step's settings ask for (knflow's shape)."""

from cloudevents.core.v1.event import CloudEvent

from eventing.events import new_event
from functions.runtime import Context
from infra.errors import InvalidRequest


async def handle(event: CloudEvent, ctx: Context) -> CloudEvent:
    data = event.get_data()
    least = ctx.step_settings["min_rows"]
    if data["rows"] < least:
        raise InvalidRequest(f"data set {data['dataset']} has {data['rows']} rows; this pipeline needs {least}")
    return new_event("com.example.validate.done", f"/functions/{ctx.function}", data, cause=event)
'''

NOTIFY = '''\
"""notify: POST each deployed model to the URL of the step's settings (Knative's shape); no reply."""

import aiohttp

from functions.runtime import context_of


def new():
    return Function()


class Function:
    async def handle(self, scope, receive, send):
        event, ctx = scope["event"], context_of(scope)
        deployed = event.get_data()
        body = {"model": deployed["name"], "version": deployed["version"], "runid": event.get_extension("runid")}
        async with aiohttp.ClientSession() as http, http.post(ctx.step_settings["url"], json=body) as answer:
            answer.raise_for_status()  # a refusal is a 500: delivery tries again
'''
