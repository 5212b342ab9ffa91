"""Tune as a step: trials are requested up to parallelTrialCount, results are counted once per trial, the
experiment survives a restart, and the best trial ends in tune.completed. The last test runs real trainings."""

from __future__ import annotations

import json
import math
import time

import pytest

from eventing.bindings import from_json, to_json
from eventing.events import STEP_FAILED, new_event
from functions import featurize, ingest, register, train, tune
from functions.contract import FEATURES_READY, MODEL_TRAINED, TRIAL_REQUESTED, TUNE_COMPLETED
from functions.runoptions import RunOptions, save_options
from functions.tuning.experiment import load_experiment
from infra.errors import InvalidRequest
from infra.settings import load_settings
from tests.lifecycle.helpers import MemoryRegistry, StepContext, arrived, digits_csv

SPEC = {
    "objective": {"metric": "val_accuracy", "type": "maximize"},
    "algorithm": "tpe",
    "parameters": [
        {"name": "lr", "type": "double", "min": 1e-4, "max": 1.0, "log": True},
        {"name": "hidden", "type": "int", "min": 8, "max": 256},
    ],
    "maxTrialCount": 7,
    "parallelTrialCount": 3,
    "seed": 1,
}


def _start(ctx, spec=SPEC, runid="run-tune"):
    save_options(ctx.store, runid, RunOptions(tuning=spec))
    ready = new_event(
        FEATURES_READY,
        "/t",
        {"dataset": "digits", "prefix": "features/digits/x/"},
        runid=runid,
        extensions={"mode": "tune"},
    )
    return ready


def _result(request, status="Succeeded"):
    """What train would answer for a trial request, with a cheap objective instead of training."""
    data = request.get_data()
    value = 1 - 0.05 * (math.log10(data["params"]["lr"]) + 2.5) ** 2 - abs(data["params"]["hidden"] - 128) / 1000
    body = {
        "trial": data["trial"],
        "experiment": data["experiment"],
        "status": status,
        "params": data["params"],
        "metrics": {"val_accuracy": value} if status != "Failed" else {},
        "curve": [value / 2, value],
        "onnx_key": f"runs/x/trials/{data['trial']}/model.onnx",
        "sha256": "0" * 64,
    }
    return new_event(MODEL_TRAINED, "/t", body, cause=request, extensions={"mode": "trial"})


def _fresh(ctx):
    """A new tune invocation's view: same store, nothing carried in memory."""
    return StepContext(store=ctx.store, settings=ctx.settings)


async def test_trials_run_to_budget_with_restarts_and_duplicates(ctx):
    assert await tune.handle(_start(ctx), ctx) is None
    pending = list(ctx.emitted)
    assert [e.get_type() for e in pending] == [TRIAL_REQUESTED] * 3
    completed = []
    while pending:
        request = pending.pop(0)
        result = _result(request)
        answers = []
        for _ in range(2):  # every result is delivered twice, each time to a "restarted" tune
            c = _fresh(ctx)
            reply = await tune.handle(result, c)
            answers.append(([e.get_id() for e in c.emitted], reply and reply.get_data()))
            if len(answers) == 1:
                pending += c.emitted
                if reply is not None:
                    completed.append(reply)
        assert answers[1] == answers[0]  # delivered again, it answers again what it answered, recording nothing twice
        announced = _result(request)  # train announcing the stored result again: a new event, which changes nothing
        c = _fresh(ctx)
        assert await tune.handle(announced, c) is None and c.emitted == []
        experiment = load_experiment(ctx.store, "run-tune")
        assert experiment.count("Requested") <= 3
    experiment = load_experiment(ctx.store, "run-tune")
    assert len(experiment.trials) == 7 and experiment.count("Succeeded") == 7
    assert [t.id for t in experiment.ordered()] == [f"trial-{i:04d}" for i in range(7)]
    assert len(completed) == 1 and completed[0].get_type() == TUNE_COMPLETED
    done = completed[0].get_data()
    best = max(experiment.trials.values(), key=lambda t: t.value)
    assert done["best_trial"] == best.id and done["objective"]["value"] == best.value
    assert done["model"]["trial"] == best.id and done["reason"] == "trial budget spent"


async def test_redelivered_start_rerequests_only_pending_trials(ctx):
    start = _start(ctx)
    await tune.handle(start, ctx)
    first = [e.get_data()["trial"] for e in ctx.emitted]
    await tune.handle(_result(ctx.emitted[0]), _fresh(ctx))
    again = _fresh(ctx)
    await tune.handle(start, again)
    assert [e.get_data()["trial"] for e in again.emitted] == [*first[1:], "trial-0003"]


async def test_a_result_delivered_again_after_tune_went_down_requests_the_trials_it_made_room_for(ctx):
    await tune.handle(_start(ctx), ctx)
    first = ctx.emitted[0]
    result = _result(first)
    # tune stored the result and went down before its trial requests got out: only experiment.json says so
    emits, reply = tune.record(ctx.store, "run-tune", result.get_data(), result.get_id())
    assert [d["trial"] for d in emits] == ["trial-0003"] and reply is None
    again = _fresh(ctx)
    assert await tune.handle(result, again) is None
    assert [e.get_id() for e in again.emitted] == ["run-tune.trial-0003"]
    assert load_experiment(ctx.store, "run-tune").trials["trial-0003"].requested_by == first.get_data()["trial"]
    # once trial-0003 has its result, the same redelivery asks for nothing more
    await tune.handle(_result(again.emitted[0]), _fresh(ctx))
    late = _fresh(ctx)
    assert await tune.handle(result, late) is None and [e.get_data()["trial"] for e in late.emitted] == []


async def test_a_completing_or_failing_result_delivered_again_answers_the_same(ctx):
    await tune.handle(_start(ctx, {**SPEC, "maxTrialCount": 1, "parallelTrialCount": 1}), ctx)
    result = _result(ctx.emitted[0])
    done = await tune.handle(result, _fresh(ctx))
    assert done is not None and done.get_type() == TUNE_COMPLETED
    again = await tune.handle(result, _fresh(ctx))
    assert again is not None and again.get_data() == done.get_data()

    await tune.handle(_start(ctx, {**SPEC, "maxFailedTrialCount": 0}, runid="run-fails"), ctx)
    failing = _result(ctx.emitted[-1], status="Failed")
    for _ in range(2):  # the experiment's failure is the answer each time
        with pytest.raises(InvalidRequest, match="1 trials failed"):
            await tune.handle(failing, _fresh(ctx))


async def test_goal_ends_the_experiment_early(ctx):
    await tune.handle(_start(ctx, {**SPEC, "objective": {"metric": "val_accuracy", "goal": -100.0}}), ctx)
    replies = [await tune.handle(_result(r), _fresh(ctx)) for r in list(ctx.emitted)]
    assert [r is not None for r in replies] == [False, False, True]
    assert replies[-1].get_data()["reason"] == "goal reached"
    assert len(load_experiment(ctx.store, "run-tune").trials) == 3


async def test_too_many_failed_trials_fail_the_experiment(ctx):
    await tune.handle(_start(ctx, {**SPEC, "maxFailedTrialCount": 1}), ctx)
    requests = list(ctx.emitted)
    await tune.handle(_result(requests[0], status="Failed"), _fresh(ctx))
    with pytest.raises(InvalidRequest, match="2 trials failed"):
        await tune.handle(_result(requests[1], status="Failed"), _fresh(ctx))
    assert load_experiment(ctx.store, "run-tune").status == "Failed"


async def test_other_events_are_not_tunes_business(ctx):
    assert await tune.handle(new_event(FEATURES_READY, "/t", {}, extensions={"mode": "train"}), ctx) is None
    assert await tune.handle(new_event(MODEL_TRAINED, "/t", {"trial": None}), ctx) is None


async def test_short_real_tune_trains_trials_and_registers_only_the_best(ctx, digits, monkeypatch):
    registry = MemoryRegistry()
    monkeypatch.setattr(register, "open_registry", lambda store: registry)
    spec = {
        "objective": {"metric": "val_accuracy"},
        "algorithm": "random",
        "parameters": [
            {"name": "lr", "type": "double", "min": 1e-4, "max": 3e-2, "log": True},
            {"name": "hidden", "type": "int", "min": 16, "max": 256},
        ],
        "maxTrialCount": 4,
        "parallelTrialCount": 2,
        "earlyStopping": {"minTrialsRequired": 2, "startStep": 2},
    }
    started = time.monotonic()
    ctx.store.put("raw/digits/d.csv", digits_csv(digits))
    options = {"tuning": spec, "train": {"epochs": 5}, "model_name": "digits-tuned"}
    ready = featurize.handle(ingest.handle(arrived("raw/digits/d.csv", ctx.store, options=options), ctx), ctx)
    assert ready.get_extension("mode") == "tune" and train.handle(ready, ctx) is None
    queue, registered, trial_results = [ready], [], []
    while queue:
        event = queue.pop(0)
        assert from_json(to_json(event)).get_data() == event.get_data()  # every event crosses the wire intact
        c = StepContext(store=ctx.store, settings=load_settings(env={}))
        for handler in (tune.handle, train.handle, register.handle):
            reply = await handler(event, c) if handler is tune.handle else handler(event, c)
            if reply is not None:
                (registered if handler is register.handle else queue).append(reply)
        queue += c.emitted
        if event.get_type() == MODEL_TRAINED:
            trial_results.append(event.get_data())
    assert len(trial_results) == 4 and len(registered) == 1
    assert from_json(to_json(registered[0])).get_data() == registered[0].get_data()
    card = registry.cards["digits-tuned"]
    assert len(card) == 1
    best = max((r for r in trial_results if r["status"] != "Failed"), key=lambda r: r["metrics"]["val_accuracy"])
    assert card[0].sha256 == best["sha256"] and registered[0].get_data()["lineage"]["trial"] == best["trial"]
    assert best["metrics"]["test_accuracy"] >= 0.9
    experiment = json.loads(ctx.store.get(f"runs/{ready.get_extension('runid')}/experiment.json"))
    assert experiment["status"] == "Done" and experiment["best"] == best["trial"]
    assert time.monotonic() - started < 60


async def test_tuning_run_without_a_spec_is_refused(ctx):
    ready = new_event(
        FEATURES_READY, "/t", {"prefix": "features/x/y/"}, runid="run-nospec", extensions={"mode": "tune"}
    )
    with pytest.raises(InvalidRequest, match="no tuning spec"):
        await tune.handle(ready, ctx)
    assert load_experiment(ctx.store, "run-nospec") is None


async def test_a_dead_lettered_trial_request_counts_as_a_failed_trial(ctx):
    await tune.handle(_start(ctx), ctx)
    request = ctx.emitted[0]
    assert request.get_id() == f"run-tune.{request.get_data()['trial']}"
    failure = new_event(STEP_FAILED, "/broker", {"event_id": request.get_id(), "event_type": TRIAL_REQUESTED,
                        "subscriber": "http://train", "status": 500, "error": "boom", "attempts": 4},
                        cause=request)  # fmt: skip
    c = _fresh(ctx)
    await tune.handle(failure, c)
    trial = load_experiment(ctx.store, "run-tune").trials[request.get_data()["trial"]]
    assert trial.status == "Failed" and "boom" in trial.result["reason"]
    assert [e.get_data()["trial"] for e in c.emitted] == ["trial-0003"]  # its slot goes to a new trial
    other = new_event(STEP_FAILED, "/broker", {"event_id": "x", "event_type": MODEL_TRAINED}, cause=request)
    assert await tune.handle(other, _fresh(ctx)) is None


def test_two_tune_replicas_recording_trials_at_once_lose_no_result(store):
    """Trials of one run finish in parallel; two tune replicas (threads here, no shared memory but the store)
    record them at the same time, and every result is in experiment.json."""
    from concurrent.futures import ThreadPoolExecutor

    spec = {**SPEC, "maxTrialCount": 12, "parallelTrialCount": 12}
    emits, _ = tune.start_experiment(store, "run-race", spec, {"dataset": "digits"})
    assert len(emits) == 12
    requests = [new_event(TRIAL_REQUESTED, "/t", data, runid="run-race") for data in emits]
    results = [_result(r).get_data() for r in requests]
    with ThreadPoolExecutor(2) as replicas:
        list(replicas.map(lambda result: tune.record(store, "run-race", result), results))
    experiment = load_experiment(store, "run-race")
    assert sorted(t.id for t in experiment.trials.values() if t.finished) == sorted(r["trial"] for r in results)
    assert experiment.status == "Done"
