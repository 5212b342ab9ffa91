"""KPA decisions (unit) and the autoscaler acting on real replica processes: scale to zero, scale up under load."""

from __future__ import annotations

import asyncio
import os

import numpy as np
from aiohttp import ClientSession

from serving.autoscaler import Kpa, ScalePolicy
from serving.registry import ModelRegistry
from tests.eventually import eventually
from tests.processes import alive
from tests.scrape import parse, value
from tests.serving.helpers import deploy_and_answer, infer_body, mlp_onnx


def test_kpa_scales_on_stable_average_and_caps_at_max() -> None:
    kpa = Kpa(ScalePolicy(target=2, max_replicas=3, stable_window_s=10, panic_threshold_pct=1000))
    for t in range(10):
        kpa.observe(float(t), 5.0, 10)
    assert kpa.decide(9.0, 3).desired == 3  # ceil(5 / 2) = 3
    for t in range(10, 20):
        kpa.observe(float(t), 20.0, 10)
    assert kpa.decide(19.0, 3).desired == 3  # capped


def test_kpa_panics_on_a_burst_and_does_not_scale_down_while_panicking() -> None:
    kpa = Kpa(ScalePolicy(target=1, max_replicas=10, stable_window_s=60, panic_window_pct=10))
    for t in range(60):
        kpa.observe(float(t), 1.0, 1)
    assert kpa.decide(59.0, 1).desired == 1
    for t in range(60, 67):
        kpa.observe(float(t), 6.0, 50)
    decision = kpa.decide(66.0, 1)
    assert decision.panic and decision.desired == 6  # panic window average, not the diluted stable one
    for t in range(67, 70):
        kpa.observe(float(t), 0.5, 1)
    assert kpa.decide(69.0, 6).desired == 6


def test_kpa_scales_to_zero_only_after_the_grace_period() -> None:
    kpa = Kpa(ScalePolicy(target=1, stable_window_s=2, scale_to_zero_grace_s=5))
    kpa.observe(0.0, 1.0, 1)
    for t in (1.0, 2.0, 3.0, 4.0):
        kpa.observe(t, 0.0, 0)
    assert kpa.decide(4.0, 1).desired == 1
    kpa.observe(5.5, 0.0, 0)
    assert kpa.decide(5.5, 1).desired == 0


async def test_idle_revision_scales_to_zero_and_its_process_exits(start_gateway, registry: ModelRegistry) -> None:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx())
    policy = ScalePolicy(target=4, stable_window_s=0.6, scale_to_zero_grace_s=0.4)
    gateway = await start_gateway(policy=policy)
    base = f"http://127.0.0.1:{gateway.port}"
    async with ClientSession() as http:
        await deploy_and_answer(http, base, infer_body(np.ones((1, 64), np.float32)))
        pool = gateway.pools["digits-00001"]
        pid = pool.replicas[0].pid
        assert alive(pid)
        await eventually(lambda: not pool.replicas, 10, "scale to zero")
        await eventually(lambda: not alive(pid), 5, f"replica process {pid} to exit")
        metrics = await (await http.get(f"{base}/metrics")).text()
        samples = parse(metrics)
        assert value(samples, "knflow_replicas", revision="digits-00001") == 0
        assert value(samples, "knflow_scale_decisions_total", revision="digits-00001", direction="down") >= 1
        # and it comes back on the next request
        async with http.post(f"{base}/v2/models/digits/infer", data=infer_body(np.ones((1, 64), np.float32))) as r:
            assert r.status == 200
        assert len(pool.replicas) == 1 and pool.replicas[0].pid != pid


async def test_load_above_target_scales_up(start_gateway, registry: ModelRegistry) -> None:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx())
    policy = ScalePolicy(target=1, max_replicas=3, stable_window_s=1.0, scale_to_zero_grace_s=5)
    gateway = await start_gateway(policy=policy)
    base = f"http://127.0.0.1:{gateway.port}"
    body = infer_body(np.ones((4, 64), np.float32))
    pool = None
    async with ClientSession() as http:
        await http.post(f"{base}/v1/models/digits/revisions", json={})
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                async with http.post(f"{base}/v2/models/digits/infer", data=body) as r:
                    assert r.status == 200
                    await r.read()

        clients = [asyncio.create_task(client()) for _ in range(8)]
        try:
            await eventually(lambda: "digits-00001" in gateway.pools, 5, "pool")
            pool = gateway.pools["digits-00001"]
            await eventually(lambda: len(pool.replicas) > 1, 15, "more than one replica")
        finally:
            stop.set()
            await asyncio.gather(*clients)
        metrics = await (await http.get(f"{base}/metrics")).text()
        assert 'direction="up"' in metrics
    assert len({r.pid for r in pool.replicas}) == len(pool.replicas) > 1


async def test_a_crashed_replica_is_replaced_on_the_next_request(start_gateway, registry: ModelRegistry) -> None:  # type: ignore[no-untyped-def]
    import signal

    registry.register("digits", mlp_onnx())
    gateway = await start_gateway()
    base = f"http://127.0.0.1:{gateway.port}"
    body = infer_body(np.ones((1, 64), np.float32))
    async with ClientSession() as http:
        await deploy_and_answer(http, base, body)
        pool = gateway.pools["digits-00001"]
        pid = pool.replicas[0].pid
        os.kill(pid, signal.SIGKILL)
        # the autoscaler may already have started a successor: wait for the dead one to leave the pool
        await eventually(lambda: all(r.pid != pid for r in pool.replicas), 5, "the dead replica to be dropped")
        async with http.post(f"{base}/v2/models/digits/infer", data=body) as r:
            assert r.status == 200
        assert pool.replicas[0].pid != pid


async def test_a_dead_fork_server_is_restarted_for_the_next_replica(start_gateway, registry: ModelRegistry) -> None:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx())
    gateway = await start_gateway()
    base = f"http://127.0.0.1:{gateway.port}"
    body = infer_body(np.ones((1, 64), np.float32))
    assert gateway.forks.process is not None
    gateway.forks.process.kill()
    await gateway.forks.process.wait()
    async with ClientSession() as http:
        await deploy_and_answer(http, base, body)
