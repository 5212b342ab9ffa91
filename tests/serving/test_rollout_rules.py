"""Canary judging in process (``serving/rollout.py``): the verdict from a revision's answers (5xx only), what a
promotion and a rollback change in the serving state and the registry, and the notice the deploying run gets."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from eventing.bindings import from_http, from_json, to_json
from eventing.events import PARENTSPAN, TRACEPARENT, new_traceparent
from infra.localservices import free_port
from infra.settings import load_settings
from serving.metrics import Metrics
from serving.revisions import Revision, ServingState, TrafficTarget
from serving.rollout import (
    PROMOTE,
    ROLLBACK,
    SOURCE,
    WAIT,
    Announce,
    Canary,
    RolloutPolicy,
    Rollouts,
    canary_from_dict,
    judge_canary,
    outcome_notice,
)
from tests.eventually import eventually
from tests.spans import in_memory_spans

RUN = {"runid": "run-1", "pipeline": "lifecycle"}


@pytest.fixture
def spans(monkeypatch):
    yield from in_memory_spans(monkeypatch)


class Registry:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def set_alias(self, *args, **kwargs) -> None:
        self.calls.append(("set_alias", args, kwargs))

    def note(self, *args, **kwargs) -> None:
        self.calls.append(("note", args, kwargs))


class Gateway:
    """The gateway's parts the judge uses: its states, metrics, registry and commit (here in memory)."""

    def __init__(self, tmp_path: Path, broker_port: int, *states: ServingState) -> None:
        env = {"KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_BROKER_PORT": str(broker_port), "KNFLOW_SECURITY_TOKEN": "tok"}
        self.settings = load_settings(env=env, config_file=None)
        self.port = 8555
        self.states = {s.model: s for s in states}
        self.state_lock = asyncio.Lock()
        self.metrics = Metrics()
        self.registry = Registry()
        self.stored: dict[str, ServingState] = {}  # what another gateway sharing the store wrote meanwhile

    async def commit(self, model, change):  # type: ignore[no-untyped-def]
        self.states[model] = change(self.stored.pop(model, self.states[model]))
        return self.states[model]

    def answers(self, revision: str, *statuses: int) -> None:
        for status in statuses:
            self.metrics.observe(revision, status, 0.01)


def canary_state(model: str = "m", percent: int = 10, announce: Announce | None = None) -> ServingState:
    canary = Canary(f"{model}-2", 2, RolloutPolicy(promote_after_requests=20, max_error_rate=0.05), announce)
    return ServingState(
        model=model,
        revisions=(Revision(f"{model}-1", model, 1), Revision(f"{model}-2", model, 2)),
        traffic=(TrafficTarget(f"{model}-1", 100 - percent), TrafficTarget(f"{model}-2", percent, "canary")),
        history=((TrafficTarget(f"{model}-1", 100),),),
        canary=canary,
    )


def test_judge_boundaries_rate_above_the_limit_at_least_two_errors_and_enough_requests() -> None:
    policy = RolloutPolicy(promote_after_requests=20, max_error_rate=0.1)
    assert judge_canary(policy, 0, 0) == WAIT  # no requests: nothing to judge
    assert judge_canary(policy, 19, 0) == WAIT
    assert judge_canary(policy, 20, 0) == PROMOTE
    assert judge_canary(policy, 20, 2) == PROMOTE  # exactly 10 %: not above the limit
    assert judge_canary(policy, 19, 2) == ROLLBACK
    assert judge_canary(policy, 5, 1) == WAIT  # 20 %, but one error is not evidence
    assert judge_canary(policy, 20, 3) == ROLLBACK  # rollback wins over promotion
    assert judge_canary(RolloutPolicy(1, 0.0), 2, 2) == ROLLBACK


def test_a_canary_round_trips_through_its_saved_form() -> None:
    assert canary_from_dict(None) is None
    bare = Canary("m-2", 2, RolloutPolicy(20, 0.05))
    assert canary_from_dict(orjson.loads(orjson.dumps(bare))) == bare
    announced = Canary("m-2", 2, RolloutPolicy(20, 0.05), Announce("t", dict(RUN)))
    assert canary_from_dict(orjson.loads(orjson.dumps(announced))) == announced


async def test_a_canary_is_promoted_after_enough_good_requests_and_client_errors_do_not_count(tmp_path, caplog) -> None:
    gateway = Gateway(tmp_path, free_port(), canary_state(announce=Announce("deployed", dict(RUN))))
    gateway.answers("m-2", *[200] * 17, 400, 404, 429)  # 20 requests, no server error
    gateway.answers("m-1", 500, 500, 500)  # the production revision's errors are not the canary's
    with caplog.at_level("INFO", logger="serving.rollout"):
        await Rollouts(gateway).tick()  # type: ignore[arg-type]
    assert "rollout: model m: canary m-2 promoted after 20 requests, 0 errors" in logged(caplog)
    state = gateway.states["m"]
    assert state.traffic == (TrafficTarget("m-2", 100),) and state.canary is None
    reason = "canary m-2 promoted after 20 requests, 0 errors"
    assert gateway.registry.calls == [("set_alias", ("m", "production", 2), {"actor": "serving", "reason": reason})]
    assert gateway.metrics.rollouts.values == {("m", PROMOTE): 1}
    [notice] = [from_json(n.encode()) for n in state.notices]  # kept: the broker is down
    assert notice.get_data()["decision"] == "promoted after 20 requests, 0 errors"
    assert notice.get_data()["name"] == "m" and notice.get_data()["traffic_percent"] == 100
    assert notice.get_data()["endpoint"] == "http://127.0.0.1:8555/v2/models/m/infer"


async def test_a_canary_with_two_server_errors_above_the_rate_is_rolled_back(tmp_path, caplog) -> None:
    gateway = Gateway(tmp_path, free_port(), canary_state(announce=Announce("deployed", dict(RUN))))
    gateway.answers("m-2", 200, 200, 200, 500, 503)
    with caplog.at_level("INFO", logger="serving.rollout"):
        await Rollouts(gateway).tick()  # type: ignore[arg-type]
    state = gateway.states["m"]
    assert state.traffic == (TrafficTarget("m-1", 100),) and state.canary is None
    reason = "canary m-2 rolled back: error rate 0.4 > 0.05 (5 requests, 2 errors)"
    assert f"rollout: model m: {reason}" in logged(caplog)
    [notice] = [from_json(n.encode()).get_data() for n in state.notices]
    assert notice["traffic_percent"] == 0 and notice["decision"] == reason.removeprefix("canary m-2 ")
    assert gateway.registry.calls == [("note", ("m", "rollback"), {"version": 2, "actor": "serving", "reason": reason})]
    assert gateway.metrics.rollouts.values == {("m", ROLLBACK): 1}


async def test_one_server_error_keeps_the_canary_waiting(tmp_path) -> None:
    before = canary_state()
    gateway = Gateway(tmp_path, free_port(), before)
    gateway.answers("m-2", 200, 500)
    await Rollouts(gateway).tick()  # type: ignore[arg-type]
    assert gateway.states["m"] == before and gateway.registry.calls == []


async def test_a_canary_moved_out_of_traffic_by_hand_is_no_longer_judged(tmp_path, caplog) -> None:
    gateway = Gateway(tmp_path, free_port(), canary_state(percent=0))
    with caplog.at_level("INFO", logger="serving.rollout"):
        await Rollouts(gateway).tick()  # type: ignore[arg-type]
    assert logged(caplog) == ["rollout: canary m-2 no longer takes traffic; judging stops"]
    state = gateway.states["m"]
    assert state.canary is None and state.traffic == canary_state(percent=0).traffic and state.notices == ()
    assert gateway.registry.calls == [] and gateway.metrics.rollouts.values == {}


async def test_a_newer_canary_another_gateway_opened_meanwhile_is_kept(tmp_path) -> None:
    gateway = Gateway(tmp_path, free_port(), canary_state(percent=0))
    newer = replace(canary_state(), canary=Canary("m-3", 3, RolloutPolicy()))
    gateway.stored["m"] = newer
    await Rollouts(gateway).tick()  # type: ignore[arg-type]
    assert gateway.states["m"] == newer


async def test_one_models_trouble_does_not_stop_judging_the_others(tmp_path, caplog) -> None:
    broken = canary_state("a")
    gateway = Gateway(tmp_path, free_port(), broken, canary_state("b"))
    gateway.states["a"] = ServingState("a", canary=broken.canary)  # no revisions: its rollback fails
    gateway.answers("a-2", 500, 500)
    gateway.answers("b-2", *[200] * 20)
    with caplog.at_level("INFO", logger="serving.rollout"):
        await Rollouts(gateway).tick()  # type: ignore[arg-type]
    [failure] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert failure.getMessage() == "rollout: model a" and failure.exc_info is not None
    assert gateway.states["b"].canary is None and gateway.states["b"].traffic == (TrafficTarget("b-2", 100),)


@contextlib.asynccontextmanager
async def broker_stub(port: int, *statuses: int):  # type: ignore[no-untyped-def]
    """An in-process HTTP endpoint standing for the broker's ingress: it answers ``statuses`` in turn (then 202) and
    records the events it was sent."""
    taken: list = []

    async def ingress(request: web.Request) -> web.Response:
        taken.append((dict(request.headers), from_http(request.headers, await request.read())))
        return web.Response(status=statuses[len(taken) - 1] if len(taken) <= len(statuses) else 202)

    app = web.Application()
    app.router.add_post("/", ingress)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield taken
    finally:
        await runner.cleanup()


async def test_notices_wait_for_the_broker_then_go_in_order_and_are_dropped(tmp_path, caplog) -> None:
    port = free_port()
    first, second = (
        outcome_notice("m", Canary("m-2", n, RolloutPolicy(), Announce("t", dict(RUN))), PROMOTE, "d", "e")
        for n in (2, 3)
    )
    notices = (to_json(first).decode(), to_json(second).decode())
    gateway = Gateway(tmp_path, port, ServingState("m", notices=notices))
    rollouts = Rollouts(gateway)  # type: ignore[arg-type]
    assert rollouts.broker_url == f"http://127.0.0.1:{port}/"
    await rollouts.tick()  # the broker is down: both stay
    assert gateway.states["m"].notices == notices
    caplog.clear()
    with caplog.at_level("INFO", logger="serving.rollout"):
        async with broker_stub(port, 202, 500) as taken:
            await rollouts.tick()  # the broker takes the first, refuses the second: the second stays
    sent = [e.get_id() for _, e in taken]
    assert gateway.states["m"].notices == notices[1:] and sent == [first.get_id(), second.get_id()]
    assert logged(caplog)[0] == "rollout: published t for run run-1"
    assert logged(caplog)[1] == (
        f"rollout: broker http://127.0.0.1:{port}/ did not take m (broker http://127.0.0.1:{port}/ answered 500: ); "
        "retrying next tick"
    )
    async with broker_stub(port) as taken:
        await rollouts.tick()
    assert [e.get_id() for _, e in taken] == [second.get_id()] and gateway.states["m"].notices == ()
    assert all(headers["Authorization"] == "Bearer tok" for headers, _ in taken)


async def test_a_notice_waits_at_most_5_s_for_the_broker(tmp_path, monkeypatch) -> None:
    import eventing.client

    calls = []

    async def publish_async(url, event, **options):  # type: ignore[no-untyped-def]
        calls.append(options)

    monkeypatch.setattr(eventing.client, "publish_async", publish_async)
    notice = outcome_notice("m", Canary("m-2", 2, RolloutPolicy(), Announce("t", dict(RUN))), PROMOTE, "d", "e")
    gateway = Gateway(tmp_path, free_port(), ServingState("m", notices=(to_json(notice).decode(),)))
    await Rollouts(gateway).tick()  # type: ignore[arg-type]
    assert calls == [{"timeout": 5.0, "credentials": {"Authorization": "Bearer tok"}}]


def logged(caplog) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.getMessage() for r in caplog.records if r.name == "serving.rollout"]


async def test_the_judge_runs_on_its_tick(tmp_path) -> None:
    gateway = Gateway(tmp_path, free_port(), canary_state())
    gateway.answers("m-2", *[200] * 20)
    task = asyncio.create_task(Rollouts(gateway).run(0.01))  # type: ignore[arg-type]
    try:
        await eventually(lambda: gateway.states["m"].canary is None, 5, "the judge to promote the canary")
    finally:
        task.cancel()
    assert gateway.states["m"].canary is None


@pytest.mark.parametrize(("verdict", "percent"), [(PROMOTE, 100), (ROLLBACK, 0)])
def test_the_outcome_notice_continues_the_deploying_run_and_its_trace(verdict, percent) -> None:
    trace = new_traceparent()
    canary = Canary("m-2", 2, RolloutPolicy(), Announce("dev.knflow.model.deployed", {**RUN, TRACEPARENT: trace}))
    notice = outcome_notice("m", canary, verdict, "why", "http://gw/v2/models/m/infer", event_id="fixed")
    assert notice.get_type() == "dev.knflow.model.deployed" and notice.get_source() == SOURCE
    assert notice.get_id() == "fixed" and notice.get_subject() == "m/2"
    assert notice.get_extension("runid") == "run-1" and notice.get_extension("pipeline") == "lifecycle"
    assert notice.get_extension(TRACEPARENT).split("-")[1] == trace.split("-")[1]
    assert notice.get_extension(TRACEPARENT) != trace and notice.get_extension(PARENTSPAN) == trace.split("-")[2]
    assert notice.get_data() == {
        "name": "m",
        "version": 2,
        "revision": "m-2",
        "traffic_percent": percent,
        "canary": False,
        "decision": "why",
        "endpoint": "http://gw/v2/models/m/infer",
    }
    untraced = outcome_notice("m", Canary("m-2", 2, RolloutPolicy(), Announce("t", dict(RUN))), verdict, "w", "e")
    assert untraced.get_extension(PARENTSPAN) is None and untraced.get_id() != "fixed"


def test_a_traced_notice_records_its_emit_span_with_the_runs_id(spans) -> None:
    trace = new_traceparent()
    canary = Canary("m-2", 2, RolloutPolicy(), Announce("dev.knflow.model.deployed", {**RUN, TRACEPARENT: trace}))
    notice = outcome_notice("m", canary, PROMOTE, "why", "e")
    own = notice.get_extension(TRACEPARENT).split("-")[2]
    [emitted] = [s for s in spans.get_finished_spans() if f"{s.context.span_id:016x}" == own]
    assert emitted.name == "emit dev.knflow.model.deployed"
    assert dict(emitted.attributes) == {"cloudevents.event_type": "dev.knflow.model.deployed", "runid": "run-1"}
    assert f"{emitted.parent.span_id:016x}" == trace.split("-")[2]


def test_a_notice_for_an_announce_without_a_run_starts_one() -> None:
    notice = outcome_notice("m", Canary("m-2", 2, RolloutPolicy(), Announce("t", {"pipeline": "p"})), PROMOTE, "d", "e")
    assert notice.get_extension("runid").startswith("run-") and notice.get_extension("pipeline") == "p"
