"""Progressive delivery: the gateway judges each open canary on its tick, promotes or rolls it back, and says so.

``judge_canary`` is the one rule (functions/deploy.py imports it). A canary deployed with a ``rollout`` policy
is recorded in the model's serving state (so a restarted gateway keeps judging it); the notice of a decision
(a CloudEvent of the type the deploying step asked for in ``announce``) waits in that state until the broker has
taken it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cloudevents.core.v1.event import CloudEvent

from eventing.bindings import from_json, to_json
from eventing.events import PARENTSPAN, RUNID, TRACEPARENT, event_traceparent, new_event, span_id_of
from infra.auth import auth_headers
from infra.errors import KnflowError
from serving.revisions import ServingState, TrafficTarget, rollback, set_traffic

if TYPE_CHECKING:
    from serving.gateway import Gateway

log = logging.getLogger(__name__)
PROMOTE, ROLLBACK, WAIT = "promote", "rollback", "wait"
PRODUCTION = "production"
SOURCE = "/knflow/serving/rollout"


@dataclass(frozen=True)
class RolloutPolicy:
    """When a canary is promoted (after this many requests) or rolled back (error rate above the limit)."""

    promote_after_requests: int = 100
    max_error_rate: float = 0.05


@dataclass(frozen=True)
class Canary:
    """An open canary: its revision and version, its policy, and the run (and trace) that deployed it."""

    revision: str
    version: int
    policy: RolloutPolicy
    announce: Announce | None = None


@dataclass(frozen=True)
class Announce:
    """How to tell the deploying run about the canary's outcome: the event type and the run's extensions
    (``runid``, its pipeline, its ``traceparent``, which the notice continues)."""

    type: str
    extensions: dict[str, str]


def judge_canary(policy: RolloutPolicy, requests: int, errors: int) -> str:
    """promote after enough good requests; roll back once the error rate is above the limit; else wait."""
    if requests > 0 and errors / requests > policy.max_error_rate and errors >= 2:
        return ROLLBACK
    if requests >= policy.promote_after_requests:
        return PROMOTE
    return WAIT


def canary_from_dict(raw: dict | None) -> Canary | None:
    if raw is None:
        return None
    announce = raw.get("announce")
    return Canary(
        raw["revision"],
        raw["version"],
        RolloutPolicy(**raw["policy"]),
        Announce(announce["type"], dict(announce["extensions"])) if announce else None,
    )


class Rollouts:
    """The gateway's canary judge and notice sender; ``tick()`` runs on the gateway's periodic loop."""

    def __init__(self, gateway: Gateway):
        self.gw = gateway
        settings = gateway.settings
        self.broker_url = settings.url(settings.broker_port, "/")
        self.credentials = auth_headers(settings)

    async def run(self, tick_s: float) -> None:
        """Judge and notify every ``tick_s`` seconds, apart from the autoscaler (a slow broker never delays it)."""
        while True:
            await asyncio.sleep(tick_s)
            await self.tick()

    async def tick(self) -> None:
        for name in list(self.gw.states):
            state = self.gw.states[name]
            try:
                if state.canary is not None:
                    await self._judge(state)
                if self.gw.states[name].notices:
                    await self._send(name)
            except Exception:  # one model's trouble must not stop judging the others
                log.exception("rollout: model %s", name)

    async def _judge(self, state: ServingState) -> None:
        canary = state.canary
        assert canary is not None
        requests, errors = self.gw.metrics.counts(canary.revision)
        verdict = judge_canary(canary.policy, requests, errors)
        if verdict == WAIT and any(t.revision == canary.revision and t.percent for t in state.traffic):
            return
        async with self.gw.state_lock:
            state = self.gw.states[state.model]
            if state.canary != canary:
                return
            if verdict == WAIT:  # someone moved the traffic by hand: the canary is no longer ours to judge
                log.info("rollout: canary %s no longer takes traffic; judging stops", canary.revision)
                await self.gw.commit(state.model, lambda s: replace(s, canary=None) if s.canary == canary else s)
                return
            why = f"{requests} requests, {errors} errors"
            decide: Callable[[ServingState], ServingState]
            if verdict == PROMOTE:
                decision = f"promoted after {why}"
                reason = f"canary {canary.revision} promoted after {why}"
                await asyncio.to_thread(
                    self.gw.registry.set_alias, state.model, PRODUCTION, canary.version, actor="serving", reason=reason
                )
                decide = functools.partial(set_traffic, targets=[TrafficTarget(canary.revision, 100)])
            else:
                decision = f"rolled back: error rate {errors / requests:.3g} > {canary.policy.max_error_rate} ({why})"
                reason = f"canary {canary.revision} {decision}"
                await asyncio.to_thread(
                    self.gw.registry.note, state.model, "rollback", version=canary.version, actor="serving",
                    reason=reason,
                )  # fmt: skip
                decide = rollback
            notice = to_json(self._notice(state, canary, verdict, decision)).decode() if canary.announce else None

            def conclude(s: ServingState) -> ServingState:
                if s.canary != canary:  # concluded already (by another gateway, or an answer that was lost)
                    return s
                notices = (*s.notices, notice) if notice else s.notices  # unannounced: the audit trail has it
                return replace(decide(s), canary=None, notices=notices)

            await self.gw.commit(state.model, conclude)
        log.info("rollout: model %s: %s", state.model, reason)
        self.gw.metrics.rollout(state.model, verdict)

    def _notice(self, state: ServingState, canary: Canary, verdict: str, decision: str) -> CloudEvent:
        endpoint = self.gw.settings.url(self.gw.port, f"/v2/models/{state.model}/infer")
        return outcome_notice(state.model, canary, verdict, decision, endpoint)

    async def _send(self, name: str) -> None:
        """Publish the model's pending notices in order; on failure keep them for the next tick."""
        for notice in self.gw.states[name].notices:
            event = from_json(notice.encode())
            try:
                await publish(self.broker_url, event, self.credentials)
            except KnflowError as exc:
                log.warning("rollout: broker %s did not take %s (%s); retrying next tick", self.broker_url, name, exc)
                return
            log.info("rollout: published %s for run %s", event.get_type(), event.get_extension(RUNID))
            async with self.gw.state_lock:

                def sent_out(s: ServingState, sent: str = notice) -> ServingState:
                    return replace(s, notices=tuple(n for n in s.notices if n != sent))

                await self.gw.commit(name, sent_out)


def outcome_notice(
    model: str, canary: Canary, verdict: str, decision: str, endpoint: str, event_id: str | None = None
) -> CloudEvent:
    """The event telling the deploying run (``canary.announce``) that its canary was promoted or rolled back; it
    continues the run's trace. ``event_id``: a stable id, so a notice sent twice is one event to its readers."""
    data = {
        "name": model,
        "version": canary.version,
        "revision": canary.revision,
        "traffic_percent": 100 if verdict == PROMOTE else 0,
        "canary": False,
        "decision": decision,
        "endpoint": endpoint,
    }
    assert canary.announce is not None
    extensions: dict[str, str | None] = dict(canary.announce.extensions)
    runid = extensions.pop(RUNID, None)
    if TRACEPARENT in extensions:  # continue the deploying run's trace: the settlement is a child of the deploy
        parent = extensions[TRACEPARENT]
        extensions[TRACEPARENT] = event_traceparent(canary.announce.type, parent, runid)
        extensions[PARENTSPAN] = span_id_of(parent)
    if event_id:
        extensions["id"] = event_id
    subject = f"{model}/{canary.version}"
    return new_event(canary.announce.type, SOURCE, data, runid=runid, subject=subject, extensions=extensions)


async def publish(broker_url: str, event: CloudEvent, credentials: dict[str, str]) -> None:
    from eventing.client import publish_async

    await publish_async(broker_url, event, timeout=5.0, credentials=credentials)
