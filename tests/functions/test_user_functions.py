"""Users deploy their own functions: `knflow func new`, `knflow deploy`, `knflow functions ls|rm`, and pipelines that
name function directories, on the real platform processes (embedded broker). Every user file is written into a
temporary directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import orjson
import pytest
import urllib3
import yaml

from eventing.bindings import to_http_binary
from eventing.events import STEP_FAILED, new_event
from knflow.platform import Platform
from tests.eventually import eventually_sync
from tests.functions.func_template import write_func_create_directory
from tests.live_platform import admin_headers, knflow, running_platform

pytestmark = pytest.mark.slow
HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5.0, read=60.0))


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, dict[str, str]]]:
    with running_platform(tmp_path_factory.mktemp("userfn")) as running:
        yield running


@pytest.fixture
def env(platform: tuple[Platform, dict[str, str]]) -> dict[str, str]:
    return platform[1]


def data_dir(env: dict[str, str]) -> Path:
    return Path(env["KNFLOW_DATA_DIR"])


def invoke(
    platform: Platform, name: str, type_: str = "test.hello", data: object = None
) -> tuple[int, Mapping[str, str], bytes]:
    """POST a binary-mode event to a hosted function through the runner; (status, headers (any case), body)."""
    headers, body = to_http_binary(new_event(type_, "/tests", {"rows": 3} if data is None else data))
    answer = HTTP.request("POST", f"{platform.url('functions')}/functions/{name}", body=body, headers=headers)
    return answer.status, answer.headers, answer.data


def hosted(env: dict[str, str]) -> dict[str, dict]:
    """What the runner hosts: name -> its status (state, pid, restarts, module, python, ...)."""
    url = f"http://127.0.0.1:{env['KNFLOW_FUNCTIONS_PORT']}/functions"
    return orjson.loads(HTTP.request("GET", url, headers=admin_headers(env)).data)


def listed(env: dict[str, str]) -> dict[str, str]:
    """`knflow functions ls`, by function: its line."""
    listing = knflow(env, "functions", "ls")
    assert listing.returncode == 0, listing.stderr
    return {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}


def write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def new_function(env: dict[str, str], root: Path, name: str, *extra: str) -> Path:
    made = knflow(env, "func", "new", name, "--dir", str(root / name), *extra)
    assert made.returncode == 0, made.stderr
    return root / name


# -- func new --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["knative", "knflow"])
def test_func_new_writes_funcs_layout_whose_own_test_passes(env, tmp_path, shape):
    root = new_function(env, tmp_path, "greeter", "--shape", shape)
    meta = yaml.safe_load((root / "func.yaml").read_text())
    assert (meta["name"], meta["runtime"], meta["invoke"]) == ("greeter", "python", "cloudevent")
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} >= {
        "func.yaml", "pyproject.toml", "function/__init__.py", "function/func.py", "tests/test_func.py"
    }  # fmt: skip
    own_test = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root, capture_output=True, text=True
    )
    assert own_test.returncode == 0, own_test.stdout + own_test.stderr
    assert knflow(env, "func", "new", "greeter", "--dir", str(root)).returncode == 2  # never over a user's files


# -- deploy ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["knative", "knflow"])
def test_a_new_function_deploys_and_passes_events_on_within_their_run(platform, tmp_path, shape):
    running, env = platform
    root = new_function(env, tmp_path, f"pass-{shape}", "--shape", shape)
    deployed = knflow(env, "deploy", str(root))
    assert deployed.returncode == 0, deployed.stderr
    assert "knflow's interpreter" in deployed.stdout  # no dependencies: forked from the warm template
    status, headers, body = invoke(running, f"pass-{shape}", data={"rows": 7})
    assert status == 200
    reply = orjson.loads(body) if "cloudevents" in headers.get("Content-Type", "") else None
    reply_type = reply["type"] if reply else headers["ce-type"]
    reply_data = reply["data"] if reply else orjson.loads(body)
    assert (reply_type, reply_data) == (f"com.example.pass-{shape}.done", {"rows": 7})
    assert f"pass-{shape}" in hosted(env)


def test_a_directory_made_by_func_create_deploys_unchanged(platform, tmp_path):
    running, env = platform
    root = write_func_create_directory(tmp_path / "checkout")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    deployed = knflow(env, "deploy", str(root))
    assert deployed.returncode == 0, deployed.stderr
    assert "own environment" in deployed.stdout  # its pyproject declares dependencies (knflow has them all)
    status, _, body = invoke(running, "checkout")
    assert status == 200
    reply = orjson.loads(body)  # func's template answers in structured mode
    assert (reply["type"], reply["data"]) == ("function.response", {"message": "OK"})
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_a_later_edit_of_the_directory_changes_nothing_deployed(platform, tmp_path):
    running, env = platform
    root = new_function(env, tmp_path, "frozen", "--shape", "knflow")
    assert knflow(env, "deploy", str(root)).returncode == 0
    (root / "function" / "func.py").write_text("raise RuntimeError('edited after deploy')\n")
    os.kill(hosted(env)["frozen"]["pid"], signal.SIGKILL)  # its worker starts again, from the deployed copy
    eventually_sync(lambda: hosted(env)["frozen"]["restarts"] == 1, what="the worker's restart")
    status, _, _ = invoke(running, "frozen")
    assert status == 200


def test_a_function_with_a_pypi_dependency_gets_its_own_environment(platform, tmp_path):
    running, env = platform
    root = new_function(env, tmp_path, "titler", "--shape", "knflow")
    write(root, {"pyproject.toml": PYPROJECT_WITH_INFLECTION, "function/func.py": TITLER})
    deployed = knflow(env, "deploy", str(root))
    assert deployed.returncode == 0, deployed.stderr
    status, _, body = invoke(running, "titler", data={"name": "feature_store_loader"})
    assert status == 200, body
    assert orjson.loads(body) == {"title": "Feature Store Loader"}
    line = listed(env)["titler"]
    assert "deployed" in line and str(root) in line
    python = line.split("(python ")[1].rstrip(")")
    assert python.startswith(str(data_dir(env) / "functions" / "envs"))
    assert subprocess.run([sys.executable, "-c", "import inflection"], capture_output=True).returncode != 0
    again = new_function(env, tmp_path, "titler-two", "--shape", "knflow")
    write(again, {"pyproject.toml": PYPROJECT_WITH_INFLECTION, "function/func.py": TITLER})
    assert knflow(env, "deploy", str(again)).returncode == 0
    assert hosted(env)["titler-two"]["python"] == python  # the same dependency list: the same environment


# -- refused at deploy time --------------------------------------------------------------------------------------


def test_a_syntax_error_is_refused_with_the_file_and_line(env, tmp_path):
    root = new_function(env, tmp_path, "broken", "--shape", "knflow")
    source = (root / "function" / "func.py").read_text().splitlines()
    source.insert(6, "def oops(:")
    (root / "function" / "func.py").write_text("\n".join(source) + "\n")
    refused = knflow(env, "deploy", str(root))
    assert refused.returncode == 2
    assert f"{root}/function/func.py:7: SyntaxError" in refused.stderr
    assert_nothing_deployed(env, "broken")


def test_a_missing_handler_is_refused_with_the_file_and_line(env, tmp_path):
    root = new_function(env, tmp_path, "handless")
    func = root / "function" / "func.py"
    func.write_text(func.read_text().replace("async def handle(", "async def handel("))
    line = next(i for i, text in enumerate(func.read_text().splitlines(), 1) if text.startswith("class Function"))
    refused = knflow(env, "deploy", str(root))
    assert refused.returncode == 2
    assert f"{func}:{line}: new() returned a Function, which has no handle(scope, receive, send)" in refused.stderr
    assert_nothing_deployed(env, "handless")


def test_dependencies_that_cannot_be_installed_are_refused_with_pips_reason(env, tmp_path):
    root = new_function(env, tmp_path, "unmet", "--shape", "knflow")
    write(root, {"pyproject.toml": PYPROJECT_WITH_INFLECTION.replace("inflection>=0.5,<0.6", UNINSTALLABLE)})
    refused = knflow(env, "deploy", str(root))
    assert refused.returncode == 2
    assert "No matching distribution found for knflow-test-no-such-package" in refused.stderr
    assert_nothing_deployed(env, "unmet")
    envs = data_dir(env) / "functions" / "envs"
    assert not any(
        (e / "knflow-env.json").exists() and UNINSTALLABLE in e.joinpath("knflow-env.json").read_text()
        for e in envs.iterdir()
    )
    assert all((e / "knflow-env.json").exists() for e in envs.iterdir() if not e.name.startswith("."))


def assert_nothing_deployed(env: dict[str, str], name: str) -> None:
    assert name not in hosted(env)
    assert not (data_dir(env) / "functions" / "deployed" / f"{name}.json").exists()
    versions = data_dir(env) / "functions" / "sources" / name
    assert not versions.exists() or not any(versions.iterdir())


# -- pipelines -------------------------------------------------------------------------------------------------


def test_a_spec_naming_an_unknown_function_is_refused(env, tmp_path):
    for function, reason in (
        ("no-such-function", "unknown function 'no-such-function'"),
        ("./missing", "no such function directory"),
    ):
        spec = write(tmp_path, {"bad.yaml": yaml.safe_dump(one_step("bad", function, "test.bad"))}) / "bad.yaml"
        refused = knflow(env, "pipeline", "apply", str(spec))
        assert refused.returncode == 2
        assert "step only" in refused.stderr and reason in refused.stderr


def test_a_hanging_function_times_out_is_retried_and_dead_lettered(platform, tmp_path):
    running, env = platform
    root = new_function(env, tmp_path, "hangs", "--shape", "knflow")
    write(root, {"function/func.py": HANGS})
    spec = one_step("hang", "./hangs", "test.hang", delivery={"timeout": "PT1S", "retry": 1, "backoffDelay": "PT0.1S"})
    applied = knflow(env, "pipeline", "apply", str(write(tmp_path, {"hang.yaml": yaml.safe_dump(spec)}) / "hang.yaml"))
    assert applied.returncode == 0, applied.stderr
    assert "function hangs deployed" in applied.stdout
    event = new_event("test.hang", "/tests", {"n": 1}, extensions={"pipeline": "hang"})
    headers, body = to_http_binary(event)
    assert HTTP.request("POST", running.url("broker") + "/", body=body, headers=headers).status == 202
    history = running.history()
    runid = event.get_extension("runid")

    def failed():
        events, _ = history.page(runid=runid, type=STEP_FAILED, wait=1.0)
        return events[0] if events else None

    failure = eventually_sync(failed, timeout=60, what="step.failed for the hanging step")
    assert failure.data["trigger"] == "hang-only"
    assert failure.data["attempts"] == 2 and failure.data["status"] == 0
    assert "timed out after 1s" in failure.data["error"]


def test_removing_a_function_a_pipeline_runs_is_refused_and_an_unused_one_goes(env, tmp_path):
    new_function(env, tmp_path, "in-use", "--shape", "knflow")
    spec = write(tmp_path, {"uses.yaml": yaml.safe_dump(one_step("uses", "./in-use", "test.uses"))}) / "uses.yaml"
    applied = knflow(env, "pipeline", "apply", str(spec))
    assert applied.returncode == 0, applied.stderr
    refused = knflow(env, "functions", "rm", "in-use")
    assert refused.returncode == 2 and "pipelines uses run function in-use" in refused.stderr
    root = new_function(env, tmp_path, "short-lived", "--shape", "knflow")
    assert knflow(env, "deploy", str(root)).returncode == 0
    removed = knflow(env, "functions", "rm", "short-lived")
    assert removed.returncode == 0, removed.stderr
    assert_nothing_deployed(env, "short-lived")
    assert knflow(env, "functions", "rm", "ingest").returncode == 2  # built-in functions stay


def one_step(pipeline: str, function: str, event_type: str, **step: object) -> dict:
    body = {"name": "only", "function": function, "triggers": [{"filter": {"type": event_type}}], **step}
    return {
        "apiVersion": "knflow.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": pipeline},
        "spec": {"steps": [body]},
    }


UNINSTALLABLE = "knflow-test-no-such-package==0.0.1"

PYPROJECT_WITH_INFLECTION = """\
[project]
name = "function"
version = "0.1.0"
dependencies = ["inflection>=0.5,<0.6"]
"""

TITLER = """\
import inflection

from eventing.events import new_event


async def handle(event, ctx):
    title = inflection.titleize(event.get_data()["name"])
    return new_event("com.example.titled", "/functions/titler", {"title": title}, cause=event)
"""

HANGS = """\
import asyncio


async def handle(event, ctx):
    await asyncio.sleep(15)  # far past the step's delivery timeout
"""
