"""Trials of one tuning run run in parallel, up to parallelTrialCount, on the embedded broker and on Kafka.

The real broker and the real tune function (in a function host) run the experiment; train is a stand-in
subscriber that takes a second per trial and answers with a cheap objective, and records when each trial
started and ended.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import web

from eventing.bindings import from_http, to_http_binary
from eventing.broker import BrokerServer
from eventing.events import new_event
from eventing.triggers import Trigger
from functions.contract import FEATURES_READY, MODEL_TRAINED, TRIAL_REQUESTED
from functions.runoptions import RunOptions, save_options
from functions.runtime.host import FunctionHost
from functions.runtime.loader import load_function
from functions.tuning.experiment import DONE, load_experiment
from infra.settings import load_settings
from infra.store import open_store
from tests.eventing.conftest import broker_env
from tests.eventually import eventually
from tests.lifecycle.test_tune import SPEC, _result
from tests.webapps import served

TRIAL_SECONDS = 1.0


@pytest.fixture(params=["embedded", "kafka"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    return broker_env(request.param, tmp_path, request)


async def test_trials_of_one_run_overlap_up_to_parallel_trial_count(env: dict[str, str]) -> None:
    settings = load_settings(env, config_file=None)
    spans: dict[str, tuple[float, float]] = {}

    async def train(request: web.Request) -> web.Response:
        trial = from_http(request.headers, await request.read())
        started = time.monotonic()
        await asyncio.sleep(TRIAL_SECONDS)
        spans[trial.get_data()["trial"]] = (started, time.monotonic())
        headers, body = to_http_binary(_result(trial))
        return web.Response(status=200, body=body, headers=headers)

    app = web.Application()
    app.router.add_post("/train", train)
    store = open_store(settings.artifacts)
    spec = {**SPEC, "maxTrialCount": 6, "parallelTrialCount": 3}
    save_options(store, "run-par", RunOptions(tuning=spec))
    async with served(app) as train_base, BrokerServer(settings, sources=(), port=0) as broker:
        tune = FunctionHost(load_function("tune"), settings, sink=broker.url + "/")
        tune_url = "http://" + (await tune.start(["127.0.0.1:0"]))[0]
        try:
            triggers = [
                Trigger("tune", tune_url, filter={"type": FEATURES_READY, "mode": "tune"}),
                Trigger("tune-results", tune_url, filter={"type": MODEL_TRAINED, "mode": "trial"}),
                Trigger("train-trials", f"{train_base}/train", filter={"type": TRIAL_REQUESTED}),
            ]
            assert all(await asyncio.gather(*(broker.set_trigger(t, ready_timeout=60) for t in triggers)))
            ready = new_event(FEATURES_READY, "/t", {"dataset": "digits"}, runid="run-par", extensions={"mode": "tune"})
            await broker.publish(ready)
            done = await eventually(
                lambda: (e := load_experiment(store, "run-par")) is not None and e.status == DONE and e, 120, "done"
            )
        finally:
            await tune.stop()
    assert len(done.trials) == 6 and set(spans) == set(done.trials)
    most = max(sum(1 for s, e in spans.values() if s <= t < e) for t, _ in spans.values())
    assert 2 <= most <= 3, f"at most {most} trial(s) ran at once: {sorted(spans.values())}"
