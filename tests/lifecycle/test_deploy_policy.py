"""The deploy policy's rule (``functions/deploy.py``): which policies are accepted, and when a candidate replaces
production, with a case on each side of every boundary and the reason each decision gives."""

from __future__ import annotations

import pytest

from eventing.events import new_event
from functions import deploy
from functions.contract import MODEL_DEPLOYED, MODEL_REGISTERED
from functions.deploy import Decision, DeployPolicy, decide, parse_policy
from infra.errors import InvalidRequest
from infra.namespaces import HEADER


def test_a_policy_without_a_metric_takes_the_tasks_and_its_direction():
    assert parse_policy(None) == DeployPolicy(metric="test_accuracy", maximize=True)
    assert parse_policy({}, "regression") == DeployPolicy(metric="test_rmse", maximize=False)
    assert parse_policy({"metric": "test_f1"}).maximize is True
    assert parse_policy({"metric": "test_mae"}, "regression").maximize is False
    assert parse_policy({"metric": "test_rmse", "maximize": True}, "regression").maximize is True  # as asked


@pytest.mark.parametrize(
    "good",
    [
        {"canary_percent": 1},
        {"canary_percent": 100},
        {"max_error_rate": 0},
        {"max_error_rate": 1},
        {"promote_after_requests": 1},
        {"log_sample_rate": 0},
        {"log_sample_rate": 1},
        {"log_sample_rate": 0.25, "log_mode": "request"},
        {"log_mode": "response"},
        {"log_mode": "all"},
    ],
)
def test_policies_at_the_edges_of_each_range_are_accepted(good):
    policy = parse_policy(good)
    assert all(getattr(policy, k) == v for k, v in good.items())


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"canary_percent": 0}, "bad deploy policy"),
        ({"canary_percent": 101}, "bad deploy policy"),
        ({"max_error_rate": -0.01}, "bad deploy policy"),
        ({"max_error_rate": 1.01}, "bad deploy policy"),
        ({"promote_after_requests": 0}, "bad deploy policy"),
        ({"log_sample_rate": -0.1}, "log_sample_rate must be from 0 to 1, got -0.1"),
        ({"log_sample_rate": 1.1}, "log_sample_rate must be from 0 to 1, got 1.1"),
        ({"log_sample_rate": True}, "log_sample_rate must be from 0 to 1, got True"),
        ({"log_sample_rate": "0.5"}, "log_sample_rate must be from 0 to 1, got '0.5'"),
        ({"log_mode": "requests"}, r"log_mode must be one of \('all', 'request', 'response'\), got 'requests'"),
        ({"metric": "test_rmse"}, "the deploy policy's metric 'test_rmse' is not measured for a classification run"),
        ({"canary": 5}, r"unknown deploy policy fields \['canary'\] \(known: \['canary_percent', "),
    ],
)
def test_policies_outside_a_range_are_refused_naming_what_is_wrong(bad, reason):
    with pytest.raises(InvalidRequest, match=reason):
        parse_policy(bad)


def test_the_first_model_goes_straight_to_production():
    assert decide(DeployPolicy(), {"test_accuracy": 0.1}, None) == Decision(True, "no production version yet", 100)


def test_a_disabled_policy_or_a_candidate_without_the_metric_deploys_nothing():
    off = decide(DeployPolicy(enabled=False), {"test_accuracy": 0.99}, None)
    assert off == Decision(False, "deployment is disabled for this run")
    assert decide(DeployPolicy(), {"test_f1": 0.99}, None) == Decision(False, "the candidate reports no test_accuracy")


def test_a_production_without_the_metric_is_replaced_by_a_canary():
    policy = DeployPolicy(canary_percent=15)
    got = decide(policy, {"test_accuracy": 0.5}, {"test_f1": 0.99})
    assert got == Decision(True, "production reports no test_accuracy", 15)


def test_a_maximized_metric_must_improve_by_more_than_the_minimum():
    policy = DeployPolicy(metric="test_accuracy", min_improvement=0.25, canary_percent=20)
    assert decide(policy, {"test_accuracy": 0.5}, {"test_accuracy": 0.25}) == Decision(False, (
        "test_accuracy 0.5 does not beat production's 0.25"
    ))  # fmt: skip
    assert decide(policy, {"test_accuracy": 0.5625}, {"test_accuracy": 0.25}) == Decision(
        True, "test_accuracy improves by 0.3125", 20
    )
    assert not decide(policy, {"test_accuracy": 0.125}, {"test_accuracy": 0.25}).deploy


def test_a_minimized_metric_improves_downwards():
    policy = DeployPolicy(metric="test_rmse", maximize=False, canary_percent=30)
    assert decide(policy, {"test_rmse": 0.5}, {"test_rmse": 0.75}) == Decision(True, "test_rmse improves by 0.25", 30)
    assert not decide(policy, {"test_rmse": 0.75}, {"test_rmse": 0.5}).deploy
    assert not decide(policy, {"test_rmse": 0.5}, {"test_rmse": 0.5}).deploy  # equal is no improvement


def test_the_run_extensions_tie_the_serving_call_to_the_run():
    cause = new_event(MODEL_REGISTERED, "/t", {}, runid="run-1", extensions={"pipeline": "p"})
    assert deploy.run_extensions(cause) == {
        "runid": "run-1",
        "pipeline": "p",
        "traceparent": cause.get_extension("traceparent"),
    }


def test_a_straight_to_production_rollout_asks_serving_for_all_traffic_and_no_canary(ctx, monkeypatch):
    import serving.client

    calls = []

    class Client:
        def __init__(self, base_url, headers=None):
            self.base_url, self.headers = base_url, headers

        def deploy(self, name, version, **options):
            calls.append((self.base_url, self.headers, name, version, options))
            return {"revision": f"{name}-00001"}

    monkeypatch.setattr(serving.client, "ServingClient", Client)
    cause = new_event(MODEL_REGISTERED, "/t", {}, extensions={"namespace": "team-a"})
    out = deploy.rollout(ctx.settings, "m", 1, Decision(True, "first", 100), DeployPolicy(), cause)
    url = f"http://{ctx.settings.host}:{ctx.settings.gateway_port}"
    assert out == {
        "revision": "m-00001",
        "traffic_percent": 100,
        "canary": False,
        "endpoint": f"{url}/v2/models/m/infer",
    }
    [(base, headers, name, version, options)] = calls
    assert base == url and headers[HEADER] == "team-a" and (name, version) == ("m", 1)
    once = {"idempotency_key": f"deploy/{cause.get_id()}"}  # asked again for this event: the same revision
    assert options == {"percent": 100, "tag": None, "rollout": None, "announce": None, "logger": None, **once}


def test_the_step_ignores_other_events_and_deploys_by_the_runs_policy(ctx, monkeypatch):
    assert deploy.handle(new_event("other", "/t", {"name": "m", "version": 1}), ctx) is None
    with pytest.raises(InvalidRequest, match=r"^model\.registered needs data\.name and data\.version$"):
        deploy.handle(new_event(MODEL_REGISTERED, "/t", {"name": "m"}), ctx)
    monkeypatch.setattr(deploy, "production_metrics", lambda store, name: {"test_accuracy": 0.9})
    monkeypatch.setattr(deploy, "rollout", lambda *a: {"revision": "m-2", "traffic_percent": 10, "canary": True})
    event = new_event(MODEL_REGISTERED, "/t", {"name": "m", "version": 0, "metrics": {"test_accuracy": 0.95}})
    out = deploy.handle(event, ctx)
    assert out.get_type() == MODEL_DEPLOYED and out.get_subject() == "m/0"
    assert out.get_data() == {
        "name": "m",
        "version": 0,
        "decision": "test_accuracy improves by 0.05",
        "revision": "m-2",
        "traffic_percent": 10,
        "canary": True,
    }


def test_on_knative_the_model_service_gets_the_decided_share_and_the_canarys_thresholds(monkeypatch, caplog):
    import contextlib

    import serving.knserving
    from infra.settings import load_settings
    from serving.rollout import Announce, RolloutPolicy

    calls = []

    class Models:
        def deploy(self, name, version, percent, thresholds, announce):
            calls.append((name, version, percent, thresholds, announce))
            return {"revision": "m-00002", "traffic_percent": percent, "canary": percent < 100, "endpoint": "e"}

    env = {"KNFLOW_SERVING_TARGET": "knative", "KNFLOW_SERVING_MODEL_TEMPLATE": "{}"}
    settings = load_settings(env=env, config_file=None)
    opened = []
    monkeypatch.setattr(
        serving.knserving, "open_models", lambda s: opened.append(s) or contextlib.nullcontext(Models())
    )
    cause = new_event(MODEL_REGISTERED, "/t", {}, runid="run-1", extensions={"pipeline": "p"})
    policy = DeployPolicy(promote_after_requests=7, max_error_rate=0.25, log_sample_rate=0.5)
    with caplog.at_level("WARNING", logger="functions.deploy"):
        out = deploy.rollout(settings, "m", "2", Decision(True, "better", 10), policy, cause)
    assert out["revision"] == "m-00002"
    extensions = {"runid": "run-1", "pipeline": "p", "traceparent": cause.get_extension("traceparent")}
    assert calls == [("m", 2, 10, RolloutPolicy(7, 0.25), Announce(MODEL_DEPLOYED, extensions))]
    assert [r.getMessage() for r in caplog.records] == [
        "deploy: inference logging is not wired on Knative; m/2 logs no requests"
    ]
    caplog.clear()
    deploy.knative_rollout(settings, "m", 2, Decision(True, "first", 100), DeployPolicy(), cause)
    assert calls[-1][2] == 100 and caplog.records == [] and opened == [settings, settings]


def registered(ctx, name: str, metrics: dict, key: str) -> int:  # type: ignore[no-untyped-def]
    """A version of ``name`` in the run's registry (the real one, over the step's store); its number."""
    from functions.register import open_registry

    card = open_registry(ctx.store).register(
        name, b"onnx", inputs=[], outputs=[], metrics=metrics, params={}, lineage={}, idempotency_key=key
    )
    return card.version


def test_the_step_deploys_by_the_runs_own_policy_against_productions_metrics(ctx, monkeypatch, caplog):
    from functions.register import open_registry
    from functions.runoptions import parse_options, save_options

    registry = open_registry(ctx.store)
    registered(ctx, "m", {"test_rmse": 0.5}, "a")
    registry.set_alias("m", "production", 1, actor="test")
    candidate = registered(ctx, "m", {"test_rmse": 0.4}, "b")
    event = new_event(MODEL_REGISTERED, "/t", {"name": "m", "version": candidate, "metrics": {"test_rmse": 0.4}})
    options = parse_options({"task": "regression", "deploy": {"canary_percent": 25}}, "w")
    save_options(ctx.store, event.get_extension("runid"), options)
    calls = []
    monkeypatch.setattr(
        deploy, "rollout", lambda *args: calls.append(args) or {"revision": "m-2", "traffic_percent": 25}
    )
    with caplog.at_level("INFO", logger="tests.lifecycle"):
        out = deploy.handle(event, ctx)
    [(settings, name, version, decision, policy, cause)] = calls
    assert (name, version, cause) == ("m", candidate, event) and settings is ctx.settings
    assert policy == parse_policy({"canary_percent": 25}, "regression") and decision.percent == 25
    assert [r.getMessage() for r in caplog.records] == [f"deploy: m/{candidate}: test_rmse improves by 0.1"]
    assert registry.aliases("m") == {"production": 1}  # a canary: production moves only when serving promotes it
    assert out.get_extension("runid") == event.get_extension("runid")  # the deployed event continues the run
    [marker] = ctx.store.list(f"runs/{event.get_extension('runid')}/deployed-")
    assert marker.content_type == "application/json"
    replayed = deploy.handle(event, ctx)  # the same event again: the answer recorded the first time
    assert replayed.get_data() == out.get_data() and len(calls) == 1
    assert replayed.get_subject() == f"m/{candidate}" and replayed.get_extension("runid") == event.get_extension(
        "runid"
    )


def test_the_step_records_a_decline_and_a_first_deploy_in_the_registrys_audit(ctx, monkeypatch):
    from functions.register import open_registry

    registry = open_registry(ctx.store)
    monkeypatch.setattr(deploy, "rollout", lambda *args: {"revision": "m-1", "traffic_percent": 100})
    first = registered(ctx, "m", {"test_accuracy": 0.9}, "a")
    deploy.handle(
        new_event(MODEL_REGISTERED, "/t", {"name": "m", "version": first, "metrics": {"test_accuracy": 0.9}}), ctx
    )
    assert registry.aliases("m") == {"production": first}
    promoted = registry.audit("m")[-1]
    assert (promoted["actor"], promoted["reason"]) == ("deploy", "no production version yet")
    worse = registered(ctx, "m", {"test_accuracy": 0.8}, "b")
    event = new_event(MODEL_REGISTERED, "/t", {"name": "m", "version": str(worse), "metrics": {"test_accuracy": 0.8}})
    assert deploy.handle(event, ctx) is None
    declined = registry.audit("m")[-1]
    assert (declined["action"], declined["version"], declined["actor"]) == (deploy.DECLINED, worse, "deploy")
    assert declined["reason"] == "test_accuracy 0.8 does not beat production's 0.9"


def test_a_local_rollout_passes_the_logging_share_and_takes_servings_endpoint(ctx, monkeypatch):
    import serving.client

    calls = []

    class Client:
        def __init__(self, base_url, headers=None):
            pass

        def deploy(self, name, version, **options):
            calls.append(options)
            return {"revision": "m-00003", "endpoint": "http://models.example/v2/models/m/infer"}

    monkeypatch.setattr(serving.client, "ServingClient", Client)
    cause = new_event(MODEL_REGISTERED, "/t", {}, runid="run-9", extensions={"pipeline": "p"})
    policy = DeployPolicy(log_sample_rate=0.5, log_mode="response")
    out = deploy.rollout(ctx.settings, "m", 3, Decision(True, "better", 10), policy, cause)
    assert out["endpoint"] == "http://models.example/v2/models/m/infer" and out["canary"] is True
    logger = {"mode": "response", "sample_rate": 0.5, "extensions": {"runid": "run-9", "pipeline": "p"}}
    assert calls[0]["logger"] == logger
