"""Two teams on one platform at once: team A's runs, artifacts and models are invisible (404) and untouchable with
team B's token in the API, the client and the CLI, while A's token and the local admin see them.

One real platform (broker, function runner, gateway, knflow server) for the module; each team has an editor token
scoped to its namespace. The namespace decision itself (names, prefixes, which namespace a request addresses) is
tested without servers first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3
import yaml
from cloudevents.core.v1.event import CloudEvent
from sklearn.datasets import load_iris

from eventing.events import NAMESPACE, new_event
from eventing.filters import matches
from functions.contract import DATA_ARRIVED, lifecycle_spec_path
from functions.runtime.pipeline import load_pipeline, parse_pipeline, pipeline_triggers
from infra.auth import TokenFile, tokens_path
from infra.errors import InvalidRequest, NotFound
from infra.namespaces import ANONYMOUS, EVERY, Scope, check, prefix, qualified, scoped, split
from infra.store import open_store
from knflow import Client
from knflow.control import PipelineControl
from knflow.platform import Platform
from tests.eventually import eventually_sync
from tests.lifecycle.tables import numeric_iris_csv as iris_csv
from tests.live_platform import admin_headers, knflow, running_platform

OPTIONS = {"model_name": "flowers", "train": {"model": "mlp", "epochs": 2}}


# -- the decision, without servers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Team", "team_a", "-a", "a-", "", "a" * 64, "a/b", "../x"])
def test_a_namespace_must_be_a_dns_label(name: str) -> None:
    with pytest.raises(InvalidRequest, match="DNS label"):
        check(name)


def test_default_keeps_the_layout_and_other_namespaces_get_their_own_prefix(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    assert prefix("default") == "" and scoped(store, "default") is store
    team = scoped(store, "team-a")
    info = team.put("models/m/1/model.onnx", b"onnx")

    assert info.key == "models/m/1/model.onnx"  # the namespace sees its own layout
    assert store.exists("namespaces/team-a/models/m/1/model.onnx") and not store.exists("models/m/1/model.onnx")
    assert [i.key for i in team.list("models/")] == ["models/m/1/model.onnx"]
    assert list(scoped(store, "team-b").list("")) == []
    assert team.get("models/m/1/model.onnx") == b"onnx"


def test_a_request_addresses_the_callers_home_namespace_unless_it_names_one() -> None:
    assert Scope(("team-b", "team-c")).home == "team-b"
    assert Scope(("team-b", "default")).home == "default"
    assert EVERY.home == "default" and EVERY.sees("team-a")
    assert ANONYMOUS.sees("default") and not ANONYMOUS.sees("team-a")


def test_the_gateway_keys_a_namespaces_models_apart_and_a_slash_reaches_none() -> None:
    assert qualified("default", "flowers") == "flowers" and qualified("team-a", "flowers") == "team-a/flowers"
    assert split("team-a/flowers") == ("team-a", "flowers") and split("flowers") == ("default", "flowers")
    with pytest.raises(NotFound):
        qualified("default", "team-a/flowers")  # gRPC or an encoded path naming another namespace's model


def test_a_namespaces_pipeline_takes_only_that_namespaces_runs() -> None:
    lifecycle = load_pipeline(lifecycle_spec_path())
    owned = lifecycle.model_copy(update={"metadata": lifecycle.metadata.model_copy(update={"namespace": "team-b"})})
    [ingest, *_] = pipeline_triggers(owned, lambda step: "http://127.0.0.1:1/")
    arrived = {"type": DATA_ARRIVED, "pipeline": lifecycle.name}

    def event(**extensions: str) -> CloudEvent:
        return new_event(DATA_ARRIVED, "/test", {}, extensions={**arrived, **extensions})

    assert matches(event(namespace="team-b"), ingest.filter, ingest.filters)
    assert not matches(event(namespace="team-a"), ingest.filter, ingest.filters)
    assert not matches(event(), ingest.filter, ingest.filters)  # default's runs neither
    [shared, *_] = pipeline_triggers(lifecycle, lambda step: "http://127.0.0.1:1/")
    assert (ingest.name, shared.name) == ("team-b.lifecycle-ingest", "lifecycle-ingest")  # two namespaces never meet
    assert matches(event(namespace="team-a"), shared.filter, shared.filters)  # default's pipelines are shared


def test_events_caused_by_a_run_carry_its_namespace() -> None:
    start = new_event("dev.example.start", "/test", {}, extensions={NAMESPACE: "team-a"})
    assert new_event("dev.example.next", "/test", {}, cause=start).get_extension(NAMESPACE) == "team-a"


# -- two teams on one platform ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Teams:
    platform: Platform
    env: dict[str, str]
    url: str
    tokens: dict[str, str]

    def client(self, team: str, namespace: str | None = None) -> Client:
        return Client(self.url, token=self.tokens[team], namespace=namespace or "", timeout=120)

    def status(self, team: str, path: str, **headers: str) -> int:
        return self.answer(team, path, **headers).status

    def answer(self, team: str, path: str, **headers: str) -> urllib3.BaseHTTPResponse:
        auth = {"Authorization": f"Bearer {self.tokens[team]}"} if team in self.tokens else admin_headers(self.env)
        return urllib3.request("GET", self.url + path, headers={**auth, **headers})


@pytest.fixture(scope="module")
def teams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Teams]:
    with running_platform(tmp_path_factory.mktemp("teams")) as (platform, env):
        tokens = TokenFile(tokens_path(platform.settings))
        made = {team: tokens.create(team, "editor", (team,)) for team in ("team-a", "team-b")}
        yield Teams(platform, env, platform.url("dashboard"), made)


@pytest.fixture(scope="module")
def run_of_a(teams: Teams) -> str:
    """Team A's run on iris, followed to its end: model ``flowers`` registered and served in namespace team-a."""
    run = teams.client("team-a").submit(iris_csv(), dataset="flowers", filename="f.csv", options=OPTIONS)
    outcome = run.wait(timeout=300)
    assert outcome.status == "deployed", outcome.summary()
    return run.runid


def test_team_a_sees_its_run_and_team_b_gets_404_everywhere(teams: Teams, run_of_a: str) -> None:
    run = f"/api/runs/{run_of_a}"
    for path in (run, f"{run}/outcome", f"{run}/events", f"{run}/trace", f"{run}/curves"):
        assert teams.status("team-a", path) == 200, path
        assert teams.status("team-b", path) == 404, path
        assert teams.status("team-b", path, **{"X-Knflow-Namespace": "team-a"}) == 404, path
        assert teams.status("team-b", path + "?namespace=team-a") == 404, path
        assert teams.status("admin", path + "?namespace=team-a") == 200, path  # the local admin sees every namespace
        assert teams.status("admin", path) == 404, path  # ... one at a time: it is not in `default`

    assert run_of_a in [r["runid"] for r in teams.client("team-a").runs()]
    assert run_of_a not in [r["runid"] for r in teams.client("team-b").runs()]
    with pytest.raises(NotFound):
        teams.client("team-b").run(run_of_a).outcome()


def test_a_runs_events_carry_its_namespace_from_the_first_to_the_last(teams: Teams, run_of_a: str) -> None:
    events = teams.client("team-a").run(run_of_a).events()
    assert events and {e.extensions.get(NAMESPACE) for e in events} == {"team-a"}


def test_team_a_artifacts_and_models_live_under_its_prefix_and_b_cannot_see_them(teams: Teams, run_of_a: str) -> None:
    store = open_store(teams.platform.settings.artifacts)
    assert any(store.list("namespaces/team-a/raw/flowers/"))
    assert any(store.list("namespaces/team-a/models/flowers/"))
    assert not any(store.list("models/flowers/")) and not any(store.list("raw/flowers/"))

    assert "flowers" in [m["name"] for m in teams.client("team-a").models()]
    assert "flowers" not in [m["name"] for m in teams.client("team-b").models()]
    assert teams.status("team-a", "/api/models/flowers") == 200
    assert teams.status("team-b", "/api/models/flowers") == 404
    assert teams.status("team-b", "/api/models/flowers?namespace=team-a") == 404


def test_a_token_cannot_submit_into_another_namespace(teams: Teams) -> None:
    with pytest.raises(NotFound, match="no namespace 'team-a'"):
        teams.client("team-b", "team-a").submit(b"a,label\n1,0\n", dataset="x", filename="x.csv")


def test_the_cli_addresses_a_namespace_and_refuses_another_teams(teams: Teams, tmp_path: Path) -> None:
    data = tmp_path / "tiny.csv"
    data.write_bytes(b"a,label\n1,0\n2,1\n")
    env = {**teams.env, "KNFLOW_SECURITY_TOKEN": teams.tokens["team-b"]}

    refused = knflow(env, "run", str(data), "--namespace", "team-a", "--timeout", "5", timeout=120)
    assert refused.returncode == 2 and "no namespace 'team-a'" in refused.stderr, refused.stdout + refused.stderr
    by_env = knflow({**env, "KNFLOW_NAMESPACE": "team-a"}, "run", str(data), "--timeout", "5", timeout=120)
    assert by_env.returncode == 2 and "no namespace 'team-a'" in by_env.stderr, by_env.stdout + by_env.stderr


def test_team_a_infers_on_its_model_and_team_b_and_anonymous_callers_get_404(teams: Teams, run_of_a: str) -> None:
    x, _ = load_iris(return_X_y=True)
    answer = teams.client("team-a").run(run_of_a).infer(x[:3])
    assert answer["probabilities"].shape == (3, 3)

    gateway = teams.platform.url("gateway")
    body = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}'
    b_token = {"Authorization": f"Bearer {teams.tokens['team-b']}", "Content-Type": "application/json"}
    for headers in (b_token, {**b_token, "X-Knflow-Namespace": "team-a"}, {}, {"X-Knflow-Namespace": "team-a"}):
        for method, path in (("POST", "/v2/models/flowers/infer"), ("GET", "/v2/models/flowers")):
            status = urllib3.request(method, gateway + path, body=body if method == "POST" else None, headers=headers)
            assert status.status == 404, (method, path, headers, status.data)
    assert urllib3.request("GET", gateway + "/v2/models/team-a%2Fflowers", headers=b_token).status == 404


def test_team_b_cannot_see_or_touch_team_a_serving_on_the_gateway(teams: Teams, run_of_a: str) -> None:
    gateway = teams.platform.url("gateway")
    b = {"Authorization": f"Bearer {teams.tokens['team-b']}", "Content-Type": "application/json"}
    a = {**b, "Authorization": f"Bearer {teams.tokens['team-a']}"}
    assert urllib3.request("GET", gateway + "/v1/models/flowers", headers=a).status == 200
    assert urllib3.request("GET", gateway + "/v1/models", headers=a).json()["models"] == ["flowers"]
    assert urllib3.request("GET", gateway + "/v1/models", headers=b).json()["models"] == []
    for method, path, body in (
        ("GET", "/v1/models/flowers", None),
        ("POST", "/v1/models/flowers/rollback", b"{}"),
        ("PUT", "/v1/models/flowers/traffic", b'{"traffic": [{"revision": "team-a/flowers-00001", "percent": 100}]}'),
        ("POST", "/v1/models/flowers/revisions", b'{"version": 1}'),
    ):
        for headers in (b, {**b, "X-Knflow-Namespace": "team-a"}):
            assert urllib3.request(method, gateway + path, body=body, headers=headers).status == 404, (method, path)
    assert teams.status("team-a", "/api/serving/flowers") == 200
    assert teams.status("team-b", "/api/serving/flowers") == 404
    assert "flowers" not in [
        m["model"] for m in urllib3.request("GET", teams.url + "/api/serving", headers=b).json()["models"]
    ]


def test_the_gateways_metrics_show_a_team_its_own_revisions_and_the_platform_all(teams: Teams, run_of_a: str) -> None:
    x, _ = load_iris(return_X_y=True)
    teams.client("team-a").run(run_of_a).infer(x[:1])
    gateway = teams.platform.url("gateway") + "/metrics"

    def series(headers: dict[str, str]) -> str:
        return urllib3.request("GET", gateway, headers=headers).data.decode()

    assert 'revision="team-a/flowers-' in series({"Authorization": f"Bearer {teams.tokens['team-a']}"})
    assert 'revision="team-a/flowers-' in series(admin_headers(teams.env))  # Prometheus scrapes with it
    for headers in ({"Authorization": f"Bearer {teams.tokens['team-b']}"}, {}):  # {}: open inference, default's
        seen = series(headers)
        assert "knflow_requests_total" in seen and "team-a/" not in seen, seen


async def test_the_dashboard_shows_each_team_its_own_namespace_only(teams: Teams, run_of_a: str, browser) -> None:  # type: ignore[no-untyped-def]
    async def signed_in(token: str):  # type: ignore[no-untyped-def]
        page = await (await browser.new_context()).new_page()
        page.set_default_timeout(15_000)
        await page.goto(f"{teams.url}/?token={token}")  # the sign-in link: the token becomes the page's cookie
        await page.locator("#run-counts").wait_for()
        return page

    row = f'tr[data-runid="{run_of_a}"]'
    a = await signed_in(teams.tokens["team-a"])
    await a.locator(row).wait_for()
    await a.goto(f"{teams.url}/#/models")
    await a.locator('[data-model="flowers"]').wait_for()
    assert await a.locator("#namespace").is_hidden()  # one namespace: nothing to choose

    b = await signed_in(teams.tokens["team-b"])
    assert await b.locator(row).count() == 0
    await b.goto(f"{teams.url}/#/runs/{run_of_a}")
    await b.locator(".error").get_by_text("no run", exact=False).wait_for()
    await b.goto(f"{teams.url}/#/models")
    await b.locator('[data-panel="/api/models"]').wait_for()
    assert await b.locator('[data-model="flowers"]').count() == 0

    admin = await signed_in(admin_headers(teams.env)["Authorization"].split()[1])
    assert await admin.locator(row).count() == 0  # the admin starts in default
    options = await admin.locator("#namespace option").all_inner_texts()
    assert options[0] == "default" and {"team-a", "team-b"} <= set(options)
    await admin.select_option("#namespace", "team-a")
    await admin.locator(row).wait_for()


@pytest.fixture(scope="module")
def team_admins(teams: Teams) -> dict[str, str]:
    tokens = TokenFile(tokens_path(teams.platform.settings))
    return {team: tokens.create(f"{team}-admin", "admin", (team,)) for team in ("team-a", "team-b")}


def pipeline_call(teams: Teams, token: str, method: str, path: str, body: object = None) -> urllib3.BaseHTTPResponse:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return urllib3.request(method, teams.url + path, json=body, headers=headers)


def named(name: str, spec: dict | None = None) -> dict:
    spec = spec or load_pipeline(lifecycle_spec_path()).to_dict()
    return {**spec, "metadata": {**spec["metadata"], "name": name}}


def test_a_namespaces_pipeline_is_invisible_and_untakeable_from_another_and_its_triggers_filter_it(
    teams: Teams, team_admins: dict[str, str]
) -> None:
    def call(team: str, method: str, path: str, body: object = None) -> urllib3.BaseHTTPResponse:
        return pipeline_call(teams, team_admins[team], method, path, body)

    applied = call("team-b", "PUT", "/api/pipelines/b-flow", named("b-flow"))
    assert applied.status == 200, applied.data
    assert call("team-b", "GET", "/api/pipelines/b-flow").json()["metadata"]["namespace"] == "team-b"
    assert call("team-a", "GET", "/api/pipelines/b-flow").status == 404
    assert "b-flow" not in [p["name"] for p in call("team-a", "GET", "/api/pipelines").json()["pipelines"]]
    assert call("team-a", "DELETE", "/api/pipelines/b-flow").status == 404
    with pytest.raises(NotFound, match="no pipeline 'b-flow'"):
        teams.client("team-a").submit(b"a,label\n1,0\n", dataset="x", filename="x.csv", pipeline="b-flow")
    store = open_store(teams.platform.settings.artifacts)
    assert store.exists("namespaces/team-b/pipelines/b-flow.yaml") and not store.exists("pipelines/b-flow.yaml")

    triggers = urllib3.request("GET", teams.platform.url("broker") + "/triggers", headers=admin_headers(teams.env))
    b_flow = [t for t in triggers.json()["items"] if t["name"].startswith("team-b.b-flow-")]
    assert b_flow and all(t["spec"]["filter"]["attributes"]["namespace"] == "team-b" for t in b_flow), b_flow
    assert call("team-b", "DELETE", "/api/pipelines/b-flow").status == 200
    assert not store.exists("namespaces/team-b/pipelines/b-flow.yaml")


def ingest_only(name: str) -> dict:
    """A pipeline ``name`` of the lifecycle's first step only: a run it takes ends with its data set ingested."""
    lifecycle = load_pipeline(lifecycle_spec_path()).to_dict()
    ingest = next(s for s in lifecycle["spec"]["steps"] if s["name"] == "ingest")
    return named(name, {**lifecycle, "spec": {**lifecycle["spec"], "steps": [ingest]}})


def deliveries(teams: Teams) -> dict[str, float]:
    """The broker's count of events delivered per trigger."""
    text = urllib3.request("GET", teams.platform.url("broker") + "/metrics", headers=admin_headers(teams.env)).data
    found = re.findall(r'^knflow_broker_deliveries_total\{trigger="([^"]+)"\} (\S+)$', text.decode(), re.M)
    return {trigger: float(n) for trigger, n in found}


def test_two_namespaces_apply_the_same_pipeline_name_and_each_takes_only_its_own_runs(
    teams: Teams, team_admins: dict[str, str]
) -> None:
    flow = ingest_only("flow")
    for team in ("team-a", "team-b"):
        applied = pipeline_call(teams, team_admins[team], "PUT", "/api/pipelines/flow", flow)
        assert applied.status == 200, applied.data
        assert applied.json()["triggers"] == [f"{team}.flow-ingest"]
    shared = pipeline_call(
        teams, admin_headers(teams.env)["Authorization"].split()[1], "PUT", "/api/pipelines/flow", flow
    )
    assert shared.status == 409 and "namespace's own" in shared.json()["error"]  # a shared one would take both's runs

    run = teams.client("team-a").submit(iris_csv(), dataset="tiny", filename="t.csv", pipeline="flow")
    eventually_sync(lambda: deliveries(teams).get("team-a.flow-ingest", 0) >= 1, timeout=60)
    assert deliveries(teams)["team-b.flow-ingest"] == 0
    eventually_sync(lambda: any(e.type == "dev.knflow.dataset.ingested" for e in run.events()), timeout=60)
    assert any(open_store(teams.platform.settings.artifacts).list("namespaces/team-a/datasets/tiny/"))
    for team in ("team-a", "team-b"):
        assert pipeline_call(teams, team_admins[team], "DELETE", "/api/pipelines/flow").status == 200


def test_a_namespaces_pipeline_kept_among_defaults_moves_under_its_prefix_at_start(
    teams: Teams, team_admins: dict[str, str]
) -> None:
    old = ingest_only("old-b")
    old["metadata"]["namespace"] = "team-b"
    store = open_store(teams.platform.settings.artifacts)
    store.put("pipelines/old-b.yaml", yaml.safe_dump(old).encode())  # where knflow kept it before
    control = PipelineControl(teams.platform.settings)
    [trigger] = pipeline_triggers(
        parse_pipeline({**old, "metadata": {"name": "old-b"}}), lambda s: control.functions_url
    )
    control.broker.call("PUT", f"/triggers/{trigger.name}", trigger.to_resource())  # under its name of then

    control.ensure_defaults()
    assert store.exists("namespaces/team-b/pipelines/old-b.yaml") and not store.exists("pipelines/old-b.yaml")
    names = {t["name"] for t in control.broker.call("GET", "/triggers")["items"]}
    assert "team-b.old-b-ingest" in names and "old-b-ingest" not in names
    assert pipeline_call(teams, team_admins["team-a"], "GET", "/api/pipelines/old-b").status == 404
    assert pipeline_call(teams, team_admins["team-b"], "DELETE", "/api/pipelines/old-b").status == 200


def test_defaults_pipelines_are_shared_so_only_an_admin_of_every_namespace_changes_them(
    teams: Teams, team_admins: dict[str, str]
) -> None:
    tokens = TokenFile(tokens_path(teams.platform.settings))
    default_admin = tokens.create("default-admin", "admin", ("default",))
    lifecycle = load_pipeline(lifecycle_spec_path()).to_dict()
    refused = pipeline_call(teams, default_admin, "PUT", "/api/pipelines/lifecycle", lifecycle)
    assert refused.status == 403 and "shared" in refused.json()["error"], refused.data
    assert pipeline_call(teams, default_admin, "DELETE", "/api/pipelines/lifecycle").status == 403
    taken = pipeline_call(teams, team_admins["team-a"], "PUT", "/api/pipelines/lifecycle", lifecycle)
    assert taken.status == 409 and "shared pipeline" in taken.json()["error"], taken.data
    seen = pipeline_call(teams, team_admins["team-a"], "GET", "/api/pipelines").json()["pipelines"]
    assert {"name": "lifecycle", "namespace": "default"}.items() <= seen[0].items()


def test_a_namespaces_schedule_starts_its_runs_and_another_namespace_neither_sees_nor_touches_it(
    teams: Teams, team_admins: dict[str, str], run_of_a: str
) -> None:
    tick = ingest_only("tick")
    assert pipeline_call(teams, team_admins["team-a"], "PUT", "/api/pipelines/tick", tick).status == 200
    a, b = teams.tokens["team-a"], teams.tokens["team-b"]
    every_2s = {"cron": "* * * * * */2", "dataset": "flowers", "pipeline": "tick"}
    added = pipeline_call(teams, a, "PUT", "/api/schedules/tick", every_2s)
    assert added.status == 200, added.data
    store = open_store(teams.platform.settings.artifacts)
    assert store.exists("namespaces/team-a/schedules/tick.json") and not store.exists("schedules/tick.json")

    def ingested() -> list[dict]:
        url = f"{teams.platform.url('broker')}/events?type=dev.knflow.dataset.ingested&limit=1000"
        rows = urllib3.request("GET", url, headers={"Authorization": f"Bearer {a}"}).json()["events"]
        return [e for e in rows if e.get("pipeline") == "tick"]

    [first, *_] = eventually_sync(ingested, timeout=60)
    assert first["namespace"] == "team-a" and first["data"]["dataset"] == "flowers"
    assert [s["name"] for s in pipeline_call(teams, a, "GET", "/api/schedules").json()["schedules"]] == ["tick"]
    assert pipeline_call(teams, b, "GET", "/api/schedules").json()["schedules"] == []
    assert pipeline_call(teams, b, "GET", "/api/schedules/tick").status == 404
    assert pipeline_call(teams, b, "DELETE", "/api/schedules/tick").status == 404
    assert pipeline_call(teams, b, "GET", "/api/schedules?namespace=team-a").status == 404
    assert teams.status("admin", "/api/schedules") == 200  # default's: none of team-a's
    assert "tick" not in [s["name"] for s in teams.answer("admin", "/api/schedules").json()["schedules"]]
    pings = teams.platform.url("broker") + "/sources/ping"
    assert urllib3.request("GET", pings, headers={"Authorization": f"Bearer {b}"}).json()["items"] == []
    assert urllib3.request("GET", pings + "/team-a.tick", headers={"Authorization": f"Bearer {b}"}).status == 404
    assert pipeline_call(teams, a, "DELETE", "/api/schedules/tick").status == 204
    assert pipeline_call(teams, team_admins["team-a"], "DELETE", "/api/pipelines/tick").status == 200


def test_the_brokers_history_gives_a_team_its_own_namespaces_events_only(teams: Teams, run_of_a: str) -> None:
    url = f"{teams.platform.url('broker')}/events?runid={run_of_a}&limit=1000"

    def events(headers: dict[str, str]) -> list[dict]:
        return urllib3.request("GET", url, headers=headers).json()["events"]

    assert events({"Authorization": f"Bearer {teams.tokens['team-a']}"})
    assert events(admin_headers(teams.env))
    assert events({"Authorization": f"Bearer {teams.tokens['team-b']}"}) == []


def test_the_models_cli_reaches_team_a_model_with_its_token_only(teams: Teams, run_of_a: str) -> None:
    as_a = {**teams.env, "KNFLOW_SECURITY_TOKEN": teams.tokens["team-a"]}
    as_b = {**teams.env, "KNFLOW_SECURITY_TOKEN": teams.tokens["team-b"]}

    status = knflow(as_a, "models", "status", "flowers", timeout=120)
    assert status.returncode == 0 and '"model": "flowers"' in status.stdout, status.stdout + status.stderr
    for args in (("status", "flowers"), ("rollback", "flowers"), ("status", "flowers", "--namespace", "team-a")):
        refused = knflow(as_b, "models", *args, timeout=120)
        said = refused.stderr
        assert refused.returncode == 2 and ("is not deployed" in said or "no namespace 'team-a'" in said), said
    assert "flowers" in knflow(teams.env, "models", "ls", "--namespace", "team-a").stdout.split()
    assert "flowers" not in knflow(teams.env, "models", "ls").stdout.split()  # the store's default namespace


def test_comparing_and_reading_logs_of_team_a_run_is_404_for_team_b(teams: Teams, run_of_a: str) -> None:
    both = f"/api/compare?runs={run_of_a},{run_of_a}/trial-0001"  # the run has no trials: A learns just that
    assert "has no trial" in teams.answer("team-a", both).json()["error"]
    assert teams.answer("team-b", both).json()["error"] == f"no run {run_of_a!r} in the broker history"
    assert teams.status("team-b", f"/api/runs/{run_of_a}/logs") == 404

    as_a = {**teams.env, "KNFLOW_SECURITY_TOKEN": teams.tokens["team-a"]}
    as_b = {**teams.env, "KNFLOW_SECURITY_TOKEN": teams.tokens["team-b"]}
    shown = knflow(as_a, "runs", "show", run_of_a, "-o", "json", timeout=120)
    assert shown.returncode == 0 and run_of_a in shown.stdout, shown.stdout + shown.stderr
    refused = knflow(as_b, "runs", "show", run_of_a, timeout=120)
    assert refused.returncode == 2 and f"no run {run_of_a!r}" in refused.stderr, refused.stdout + refused.stderr
    assert run_of_a not in knflow(as_b, "runs", "ls", "-o", "json", timeout=120).stdout
