"""Canary judge on Knative: on each ping, every model Service's open canary is judged from its pods' request counts,
then promoted or rolled back by patching the Service's traffic block, and the deploying run is told.

Locally the gateway judges its canaries itself (``serving.rollout``); on a cluster the models are Knative Services
and nothing runs beside them, so a PingSource (``knflow manifests`` renders it) brings a ping here every minute.
The rule is the gateway's (``serving.rollout.judge_canary``); the state is the annotation on each Service
(``serving.knserving``). A promoted version becomes the registry's ``production``; a rollback is noted in its audit
trail. The verdict is written on the Service before anything acts on it, and the ``model.deployed`` notice has a
stable id (revision and verdict): a judge interrupted midway finishes that verdict on the next ping, telling the run
again as the same event, whatever the counts have become since, and noting it in the audit trail only if the first
judge had not (the record carries the same id as ``once``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from functions.register import open_registry
from infra.errors import KnflowError
from infra.settings import KNATIVE
from serving.knserving import MODEL_LABEL, CanaryRecord, KnativeModels, open_models, takes_traffic
from serving.rollout import PRODUCTION, PROMOTE, WAIT, judge_canary, outcome_notice

SOURCE = "/knflow/functions/canary"


def handle(event: CloudEvent, ctx: Any) -> None:
    """A ping → judge every open canary (each model on its own: one model's trouble does not stop the others)."""
    if ctx.settings.serving.target != KNATIVE:
        ctx.log.info("canary: serving.target is %s; the gateway judges canaries there", ctx.settings.serving.target)
        return None
    failures: list[KnflowError] = []
    with open_models(ctx.settings) as models:
        for service, record in models.open_canaries():
            try:
                judge(models, ctx, service, record)
            except KnflowError as exc:
                ctx.log.error("canary: %s: %s", service["metadata"]["name"], exc)
                failures.append(exc)
    if failures:
        raise failures[0]
    return None


def judge(models: KnativeModels, ctx: Any, service: dict[str, Any], record: CanaryRecord) -> str:
    """Read the canary's counts and act on the verdict (promote, roll back, or keep the new counts); the verdict."""
    model, canary = service["metadata"]["labels"][MODEL_LABEL], record.canary
    if not takes_traffic(service, canary.revision):  # someone moved the traffic by hand: not ours to judge
        ctx.log.info("canary: %s no longer takes traffic; judging stops", canary.revision)
        models.keep(service, None)
        return WAIT
    if record.verdict is None or record.decision is None:
        record = models.read_counts(record)
        requests, errors = record.totals()
        verdict = judge_canary(canary.policy, requests, errors)
        if verdict == WAIT:
            models.keep(service, record)
            return verdict
        why = f"{requests} requests, {errors} errors"
        if verdict == PROMOTE:
            decision = f"promoted after {why}"
        else:
            decision = f"rolled back: error rate {errors / requests:.3g} > {canary.policy.max_error_rate} ({why})"
        service = models.keep(service, dataclasses.replace(record, verdict=verdict, decision=decision))
    else:
        verdict, decision = record.verdict, record.decision  # judged before the judge went down: finish that verdict
    registry = open_registry(ctx.store)
    verdict_id = f"{canary.revision}.{verdict}"  # a verdict finished again is noted and told under the same id
    reason = f"canary {canary.revision} {decision}"
    if verdict == PROMOTE:
        target = canary.revision
        registry.set_alias(model, PRODUCTION, canary.version, actor="serving", reason=reason, once=verdict_id)
    else:
        target = record.main
        registry.note(model, "rollback", version=canary.version, actor="serving", reason=reason, once=verdict_id)
    if canary.announce:
        ctx.emit_sync(outcome_notice(model, canary, verdict, decision, models.endpoint(model), event_id=verdict_id))
    models.conclude(service, target)
    ctx.log.info("canary: %s: %s", model, decision)
    return verdict
