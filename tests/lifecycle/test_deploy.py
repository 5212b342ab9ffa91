"""Deploy: the policy as plain functions, and the step with the serving calls stubbed at their one seam."""

from __future__ import annotations

import pytest

from eventing.events import MODEL_DEPLOYED, MODEL_REGISTERED, new_event
from functions import deploy
from functions.deploy import PROMOTE, ROLLBACK, WAIT, DeployPolicy, decide, judge_canary, parse_policy
from infra.errors import InvalidRequest
from tests.lifecycle.helpers import MemoryRegistry

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
    assert judge_canary(POLICY, 10, 0) == WAIT
    assert judge_canary(POLICY, 50, 1) == PROMOTE
    assert judge_canary(POLICY, 30, 5) == ROLLBACK


def test_bad_policy_is_refused():
    with pytest.raises(InvalidRequest, match="unknown deploy policy"):
        parse_policy({"canary": 5})
    with pytest.raises(InvalidRequest):
        parse_policy({"canary_percent": 0})


def test_step_rolls_out_and_announces_the_endpoint_once(ctx, monkeypatch):
    registry = MemoryRegistry()
    registry.register("digits", b"x", inputs=[], outputs=[], metrics={}, params={}, lineage={}, idempotency_key="k")
    calls = []
    monkeypatch.setattr(deploy, "open_registry", lambda store: registry)
    monkeypatch.setattr(
        deploy,
        "rollout",
        lambda settings, name, version, decision: (
            calls.append(decision)
            or {
                "revision": f"{name}-{version}",
                "traffic_percent": decision.percent,
                "canary": False,
                "endpoint": f"{deploy.serving_url(settings)}/v2/models/{name}/infer",
            }
        ),
    )
    event = new_event(MODEL_REGISTERED, "/t", {"name": "digits", "version": 1, "metrics": {"test_accuracy": 0.98}})
    out = deploy.handle(event, ctx)
    assert out.get_type() == MODEL_DEPLOYED and out.get_data()["endpoint"].endswith("/v2/models/digits/infer")
    assert deploy.handle(event, ctx).get_data() == out.get_data() and len(calls) == 1
    assert registry.aliases("digits") == {"production": 1}


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
    event = new_event(MODEL_REGISTERED, "/t", {"name": "digits", "version": 2, "metrics": {"test_accuracy": 0.98}})
    assert deploy.handle(event, ctx) is None


def test_registered_event_without_a_model_is_refused(ctx):
    with pytest.raises(InvalidRequest, match=r"data\.name"):
        deploy.handle(new_event(MODEL_REGISTERED, "/t", {"version": 1}), ctx)


class FakeServing:
    """Answers describe() the way serving's control API does, and records promote/rollback calls."""

    def __init__(self, requests, errors):
        self.view = {"model": "digits", "revisions": [{"id": "digits-00002", "requests": requests, "errors": errors}]}
        self.calls = []

    def describe(self, name):
        return self.view

    def promote(self, name, revision):
        self.calls.append(("promote", revision))

    def rollback(self, name):
        self.calls.append(("rollback",))


@pytest.mark.parametrize(
    "requests, errors, verdict, calls",
    [(60, 0, PROMOTE, [("promote", "digits-00002")]), (40, 10, ROLLBACK, [("rollback",)]), (5, 0, WAIT, [])],
)
def test_settling_a_canary_promotes_rolls_back_or_waits(requests, errors, verdict, calls):
    registry = MemoryRegistry()
    for key in ("a", "b"):
        registry.register("digits", key.encode(), inputs=[], outputs=[], metrics={}, params={}, lineage={},
                          idempotency_key=key)  # fmt: skip
    registry.set_alias("digits", "production", 1)
    serving = FakeServing(requests, errors)
    assert deploy.settle_canary(serving, registry, "digits", 2, "digits-00002", POLICY) == verdict
    assert serving.calls == calls
    assert registry.aliases("digits")["production"] == (2 if verdict == PROMOTE else 1)
