"""Deploy: the policy as plain functions, and the step with the serving calls stubbed at their one seam."""

from __future__ import annotations

import pytest

from eventing.events import new_event
from functions import deploy
from functions.contract import MODEL_DEPLOYED, MODEL_REGISTERED
from functions.deploy import PROMOTE, ROLLBACK, WAIT, DeployPolicy, decide, judge_canary, parse_policy
from infra.errors import InvalidRequest
from tests.lifecycle.helpers import MemoryRegistry, StepContext

POLICY = DeployPolicy(metric="test_accuracy", canary_percent=20, promote_after_requests=50, max_error_rate=0.05)


def test_first_model_goes_straight_to_production():
    d = decide(POLICY, {"test_accuracy": 0.9}, None)
    assert d.deploy and d.percent == 100


def test_a_better_model_gets_a_canary_and_a_worse_one_nothing():
    better = decide(POLICY, {"test_accuracy": 0.98}, {"test_accuracy": 0.97})
    assert better.deploy and better.percent == 20
    worse = decide(POLICY, {"test_accuracy": 0.96}, {"test_accuracy": 0.97})
    assert not worse.deploy and "does not beat" in worse.reason
    assert not decide(POLICY, {"test_accuracy": 0.97}, {"test_accuracy": 0.97}).deploy


def test_minimized_metric_and_required_improvement():
    policy = DeployPolicy(metric="test_loss", maximize=False, min_improvement=0.01)
    assert decide(policy, {"test_loss": 0.10}, {"test_loss": 0.12}).deploy
    assert not decide(policy, {"test_loss": 0.115}, {"test_loss": 0.12}).deploy


def test_canary_is_promoted_after_good_requests_and_rolled_back_on_errors():
    assert judge_canary(POLICY.thresholds, 10, 0) == WAIT
    assert judge_canary(POLICY.thresholds, 50, 1) == PROMOTE
    assert judge_canary(POLICY.thresholds, 30, 5) == ROLLBACK


def test_bad_policy_is_refused():
    with pytest.raises(InvalidRequest, match="unknown deploy policy"):
        parse_policy({"canary": 5})
    with pytest.raises(InvalidRequest):
        parse_policy({"canary_percent": 0})
    for bad in ({"log_sample_rate": 1.5}, {"log_sample_rate": True}, {"log_mode": "some"}):
        with pytest.raises(InvalidRequest, match="log_"):
            parse_policy(bad)


def test_a_sample_rate_asks_serving_to_log_the_revision_for_the_run_and_its_pipeline():
    cause = new_event(MODEL_REGISTERED, "/t", {}, runid="run-1", extensions={"pipeline": "lifecycle"})
    assert deploy.inference_logging(DeployPolicy(), cause) is None  # off unless asked
    logging = deploy.inference_logging(DeployPolicy(log_sample_rate=0.5, log_mode="request"), cause)
    assert logging == {"mode": "request", "sample_rate": 0.5, "extensions": {"runid": "run-1", "pipeline": "lifecycle"}}


def _stub_serving(monkeypatch, registry: MemoryRegistry) -> list:
    """The registry in memory and the serving call recorded; the list of the decisions rolled out."""
    calls: list = []
    monkeypatch.setattr(deploy, "open_registry", lambda store: registry)
    monkeypatch.setattr(
        deploy,
        "rollout",
        lambda settings, name, version, decision, policy, cause: (
            calls.append(decision)
            or {
                "revision": f"{name}-{version}",
                "traffic_percent": decision.percent,
                "canary": decision.percent < 100,
                "endpoint": f"{deploy.serving_url(settings)}/v2/models/{name}/infer",
            }
        ),
    )
    return calls


def test_step_rolls_out_and_announces_the_endpoint_once(ctx, monkeypatch):
    registry = MemoryRegistry()
    registry.register("digits", b"x", inputs=[], outputs=[], metrics={}, params={}, lineage={}, idempotency_key="k")
    calls = _stub_serving(monkeypatch, registry)
    event = new_event(MODEL_REGISTERED, "/t", {"name": "digits", "version": 1, "metrics": {"test_accuracy": 0.98}})
    out = deploy.handle(event, ctx)
    assert out.get_type() == MODEL_DEPLOYED and out.get_data()["endpoint"].endswith("/v2/models/digits/infer")
    assert deploy.handle(event, ctx).get_data() == out.get_data() and len(calls) == 1
    assert registry.aliases("digits") == {"production": 1}


def test_a_registration_delivered_again_after_deploy_went_down_mid_rollout_is_deployed_again(ctx, monkeypatch):
    registry = MemoryRegistry()
    metrics = {"test_accuracy": 0.98}
    registry.register(
        "digits", b"x", inputs=[], outputs=[], metrics=metrics, params={}, lineage={}, idempotency_key="k"
    )
    calls = _stub_serving(monkeypatch, registry)
    event = new_event(MODEL_REGISTERED, "/t", {"name": "digits", "version": 1, "metrics": metrics}, runid="run-d")
    out = deploy.handle(event, ctx)
    # deploy made version 1 production and went down before its answer was stored: only the alias says so
    ctx.store.delete("runs/run-d/deployed-digits-1.json")
    again = deploy.handle(event, StepContext(store=ctx.store, settings=ctx.settings))
    assert again is not None and again.get_type() == MODEL_DEPLOYED  # not declined for failing to beat itself
    assert again.get_data() == out.get_data() and [c.percent for c in calls] == [100, 100]
    assert registry.aliases("digits") == {"production": 1} and registry.notes == []


def test_step_skips_a_model_that_does_not_beat_production(ctx, monkeypatch):
    registry = MemoryRegistry()
    registry.register(
        "digits",
        b"x",
        inputs=[],
        outputs=[],
        metrics={"test_accuracy": 0.99},
        params={},
        lineage={},
        idempotency_key="a",
    )
    registry.set_alias("digits", "production", 1)
    monkeypatch.setattr(deploy, "open_registry", lambda store: registry)
    monkeypatch.setattr(deploy, "rollout", lambda *a: pytest.fail("rolled out"))
    registry.register(
        "digits",
        b"y",
        inputs=[],
        outputs=[],
        metrics={"test_accuracy": 0.98},
        params={},
        lineage={},
        idempotency_key="b",
    )
    event = new_event(MODEL_REGISTERED, "/t", {"name": "digits", "version": 2, "metrics": {"test_accuracy": 0.98}})
    assert deploy.handle(event, ctx) is None
    [note] = registry.notes  # the decision is kept in the registry's audit trail, since no event says it
    assert (note["action"], note["version"], note["actor"]) == (deploy.DECLINED, 2, "deploy")
    assert "does not beat" in note["reason"]


def test_registered_event_without_a_model_is_refused(ctx):
    with pytest.raises(InvalidRequest, match=r"data\.name"):
        deploy.handle(new_event(MODEL_REGISTERED, "/t", {"version": 1}), ctx)


class RecordingClient:
    """Stands in for serving.client.ServingClient at its one seam: records the deploy call."""

    calls: list = []

    def __init__(self, base_url, headers=None):
        self.base_url, self.headers = base_url, headers

    def deploy(self, name, version, **options):
        self.calls.append((name, version, options))
        return {"revision": f"{name}-00002", "endpoint": f"{self.base_url}/v2/models/{name}/infer"}


def test_a_canary_goes_to_serving_with_the_policy_thresholds_and_the_run(ctx, monkeypatch):
    import serving.client

    monkeypatch.setattr(serving.client, "ServingClient", RecordingClient)
    RecordingClient.calls = []
    cause = new_event(MODEL_REGISTERED, "/t", {"name": "digits", "version": 2})
    decision = decide(POLICY, {"test_accuracy": 0.98}, {"test_accuracy": 0.97})
    out = deploy.rollout(ctx.settings, "digits", 2, decision, POLICY, cause)
    assert out["canary"] and out["traffic_percent"] == 20
    [(name, version, options)] = RecordingClient.calls
    assert (name, version, options["percent"]) == ("digits", 2, 20)
    assert options["rollout"] == {"promote_after_requests": 50, "max_error_rate": 0.05}
    announce = options["announce"]
    assert announce["type"] == MODEL_DEPLOYED and announce["extensions"]["runid"] == cause.get_extension("runid")
    assert options["tag"] == "canary"
    assert options["idempotency_key"] == f"deploy/{cause.get_id()}"  # the gateway makes one revision per event
    assert announce["extensions"]["traceparent"] == cause.get_extension("traceparent")
