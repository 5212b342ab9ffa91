"""Deploy: on model.registered, apply the run's deployment policy and roll the model out through the serving API.

The policy is plain functions (``decide``); the serving call sits in ``rollout``. A canary carries the policy's
thresholds to serving, whose gateway judges it (``serving.rollout.judge_canary``, the one rule), promotes or rolls
it back, and publishes its own ``model.deployed`` event under this run's runid. With ``serving.target = knative``
(a cluster) the model is its own Knative Service instead (``serving.knserving``): this step creates or patches it,
a canary is its traffic block, and the ``canary`` function judges it on a ping (``functions/canary.py``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from eventing.events import RUN_EXTENSIONS, TRACEPARENT, namespace_of, new_event, runid_of
from functions.contract import MODEL_DEPLOYED, MODEL_REGISTERED, data_of
from functions.ml.metrics import CLASSIFICATION, DEFAULT_DEPLOY_METRIC, check_metric, maximized
from functions.register import open_registry
from functions.runoptions import load_options
from infra.auth import auth_headers
from infra.errors import InvalidRequest, NotFound
from infra.namespaces import HEADER
from infra.settings import KNATIVE
from serving.logger import ALL, REQUEST, RESPONSE
from serving.rollout import PROMOTE, ROLLBACK, WAIT, Announce, RolloutPolicy, judge_canary

log = logging.getLogger(__name__)
__all__ = ["PROMOTE", "ROLLBACK", "WAIT", "Decision", "DeployPolicy", "decide", "handle", "judge_canary"]
SOURCE = "/knflow/functions/deploy"
PRODUCTION = "production"
DECLINED = "deploy-declined"  # audit action when the policy keeps the current production version
LOG_MODES = (ALL, REQUEST, RESPONSE)


@dataclass(frozen=True)
class DeployPolicy:
    """When to deploy, how much traffic a canary gets, and when it is promoted or rolled back."""

    enabled: bool = True
    metric: str = "test_accuracy"
    maximize: bool = True
    min_improvement: float = 0.0
    canary_percent: int = 10
    promote_after_requests: int = RolloutPolicy.promote_after_requests  # the canary thresholds' defaults are serving's
    max_error_rate: float = RolloutPolicy.max_error_rate
    log_sample_rate: float = 0.0  # share of the revision's requests logged as inference events (drift reads them)
    log_mode: str = "all"  # KServe's logger mode: all, request or response

    @property
    def thresholds(self) -> RolloutPolicy:
        """What the canary judge (serving's) promotes or rolls back on."""
        return RolloutPolicy(self.promote_after_requests, self.max_error_rate)


@dataclass(frozen=True)
class Decision:
    """Whether to deploy, why, and with what share of traffic (100: straight to production)."""

    deploy: bool
    reason: str
    percent: int = 0


def parse_policy(raw: dict[str, Any] | None, task: str = CLASSIFICATION) -> DeployPolicy:
    """A policy from run options; unknown fields or out-of-range values raise InvalidRequest.

    Without a ``metric``, the task's (test_accuracy, or test_rmse for regression); without ``maximize``, the
    metric's name says which way is better (losses and errors such as rmse and mae are minimized).
    """
    raw = dict(raw or {})
    known = {f.name for f in dataclasses.fields(DeployPolicy)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidRequest(f"unknown deploy policy fields {unknown} (known: {sorted(known)})")
    raw.setdefault("metric", DEFAULT_DEPLOY_METRIC[task])
    raw.setdefault("maximize", maximized(str(raw["metric"])))
    policy = DeployPolicy(**raw)
    if not 0 < policy.canary_percent <= 100 or not 0 <= policy.max_error_rate <= 1 or policy.promote_after_requests < 1:
        raise InvalidRequest(f"bad deploy policy {policy}")
    check_metric(policy.metric, task, "the deploy policy's metric")
    rate = policy.log_sample_rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise InvalidRequest(f"deploy policy: log_sample_rate must be from 0 to 1, got {policy.log_sample_rate!r}")
    if policy.log_mode not in LOG_MODES:
        raise InvalidRequest(f"deploy policy: log_mode must be one of {LOG_MODES}, got {policy.log_mode!r}")
    return policy


def decide(policy: DeployPolicy, candidate: dict[str, float], production: dict[str, float] | None) -> Decision:
    """Deploy when there is no production model, or when the candidate beats it on the policy's metric."""
    if not policy.enabled:
        return Decision(False, "deployment is disabled for this run")
    if policy.metric not in candidate:
        return Decision(False, f"the candidate reports no {policy.metric}")
    if production is None:
        return Decision(True, "no production version yet", 100)
    if policy.metric not in production:
        return Decision(True, f"production reports no {policy.metric}", policy.canary_percent)
    gain = candidate[policy.metric] - production[policy.metric]
    gain = gain if policy.maximize else -gain
    if gain > policy.min_improvement:
        return Decision(True, f"{policy.metric} improves by {gain:.4g}", policy.canary_percent)
    return Decision(
        False,
        f"{policy.metric} {candidate[policy.metric]:.4g} does not beat production's {production[policy.metric]:.4g}",
    )


def handle(event: CloudEvent, ctx: Any) -> CloudEvent | None:
    """model.registered → model.deployed (None when the policy says not to deploy)."""
    if event.get_type() != MODEL_REGISTERED:
        return None
    data = data_of(event)
    name, version = data.get("name"), data.get("version")
    if not name or version is None:
        raise InvalidRequest("model.registered needs data.name and data.version")
    marker = f"runs/{runid_of(event)}/deployed-{name}-{version}.json"
    if ctx.store.exists(marker):
        return new_event(
            MODEL_DEPLOYED, SOURCE, json.loads(ctx.store.get(marker)), cause=event, subject=f"{name}/{version}"
        )
    options = load_options(ctx.store, runid_of(event))
    policy = parse_policy(options.deploy, options.task)
    decision = decided(ctx.store, f"runs/{runid_of(event)}/deploying-{name}-{version}.json", policy, data)
    ctx.log.info("deploy: %s/%s: %s", name, version, decision.reason)
    if not decision.deploy:  # no event by contract; the registry's audit trail keeps the decision
        open_registry(ctx.store).note(name, DECLINED, version=int(version), actor="deploy", reason=decision.reason)
        return None
    out = {
        "name": name,
        "version": version,
        "decision": decision.reason,
        **rollout(ctx.settings, name, version, decision, policy, event),
    }
    if out["traffic_percent"] == 100:  # no canary phase: this version is production now
        open_registry(ctx.store).set_alias(name, PRODUCTION, version, actor="deploy", reason=decision.reason)
    ctx.store.put(marker, json.dumps(out).encode(), content_type="application/json")
    return new_event(MODEL_DEPLOYED, SOURCE, out, cause=event, subject=f"{name}/{version}")


def decided(store: Any, key: str, policy: DeployPolicy, registered: dict[str, Any]) -> Decision:
    """The decision on the registered version, kept at ``key`` before its rollout: delivered again after deploy went
    down mid-rollout, the event is deployed as first decided (by then the version may be production, and would not
    beat itself)."""
    try:
        return Decision(**json.loads(store.get(key)))
    except NotFound:
        pass
    decision = decide(policy, registered.get("metrics") or {}, production_metrics(store, registered["name"]))
    if decision.deploy and store.put_if_absent(key, json.dumps(dataclasses.asdict(decision)).encode()) is None:
        return Decision(**json.loads(store.get(key)))  # another delivery of this event decided first
    return decision


def production_metrics(store: Any, name: str) -> dict[str, float] | None:
    """The metrics of the version the ``production`` alias points at, or None."""
    try:
        return dict(open_registry(store).get(name, PRODUCTION).metrics)
    except NotFound:
        return None


def run_extensions(event: CloudEvent) -> dict[str, str]:
    """The extensions that tie an event to its run (runid, pipeline) and its trace."""
    names = (*RUN_EXTENSIONS, TRACEPARENT)
    return {n: str(event.get_extension(n)) for n in names if event.get_extension(n) is not None}


def inference_logging(policy: DeployPolicy, cause: CloudEvent) -> dict[str, Any] | None:
    """The revision's ``logger``: the policy's share and mode, and this run's runid and pipeline on every event."""
    if not policy.log_sample_rate:
        return None
    run = {n: v for n, v in run_extensions(cause).items() if n in RUN_EXTENSIONS}
    return {"mode": policy.log_mode, "sample_rate": float(policy.log_sample_rate), "extensions": run}


def serving_url(settings: Any) -> str:
    """Where the inference gateway (and its revision API) listens."""
    return settings.url(settings.gateway_port)


def rollout(
    settings: Any, name: str, version: Any, decision: Decision, policy: DeployPolicy, cause: CloudEvent
) -> dict[str, Any]:
    """Create a serving revision taking the decided share of traffic → the event's revision/endpoint fields.

    A canary goes with the policy's thresholds; serving settles it and announces the outcome under this run. With a
    ``log_sample_rate``, the revision logs that share of its requests as inference events of this run and pipeline.
    """
    if settings.serving.target == KNATIVE:
        return knative_rollout(settings, name, int(version), decision, policy, cause)
    from serving.client import ServingClient

    canary = decision.percent < 100
    thresholds = dataclasses.asdict(policy.thresholds)
    headers = {**auth_headers(settings), HEADER: namespace_of(cause)}  # the run's namespace serves the model
    reply = ServingClient(serving_url(settings), headers=headers).deploy(
        name,
        version,
        percent=decision.percent,
        tag="canary" if canary else None,
        rollout=thresholds if canary else None,
        announce={"type": MODEL_DEPLOYED, "extensions": run_extensions(cause)} if canary else None,
        logger=inference_logging(policy, cause),
        idempotency_key=f"deploy/{cause.get_id()}",  # delivered again after deploy went down: the same revision
    )
    return {
        "revision": reply["revision"],
        "traffic_percent": decision.percent,
        "canary": canary,
        "endpoint": reply.get("endpoint") or f"{serving_url(settings)}/v2/models/{name}/infer",
    }


def knative_rollout(
    settings: Any, name: str, version: int, decision: Decision, policy: DeployPolicy, cause: CloudEvent
) -> dict[str, Any]:
    """Create or patch the model's Knative Service: the version's revision takes the decided share of its traffic
    (all of it when the model has no Service yet); a canary's thresholds and this run wait on the Service for the
    ``canary`` function."""
    from serving.knserving import open_models

    if policy.log_sample_rate:
        log.warning("deploy: inference logging is not wired on Knative; %s/%s logs no requests", name, version)
    announce = Announce(MODEL_DEPLOYED, run_extensions(cause))
    with open_models(settings) as models:
        return models.deploy(name, version, decision.percent, policy.thresholds, announce)
