"""Broker throughput and end-to-end latency, embedded log vs Kafka (tansu), with a no-op subscriber.

Run: ``python -m bench.eventing [--rate 1000] [--seconds 5] [--saturation-events 20000] [--backends embedded,kafka]``
(``bench/eventing/RESULTS.md`` records figures); ``--before PATH`` also runs the broker of another
checkout (an older commit) on each backend in the same run, for a before/after comparison; ``--tracing`` also
runs each backend's broker exporting OpenTelemetry spans at 100 % sampling to an OTLP receiver in this process that
discards them, and prints the traced/untraced throughput ratio (the cost of tracing); ``--repeat N`` runs every
variant N times, interleaved, and prints the median ratios; ``--paired N`` instead saturates an untraced and a
traced broker at once, N rounds (``bench/eventing/paired.py``: the host's noise cancelled). Before the Kafka
broker runs, the Kafka clients alone (kafka-python and aiokafka) produce and consume against the same
tansu: the ceiling the log sits under.

The broker runs as its own process (``python -m eventing.broker``); this process is the load
generator (aiohttp) and the subscriber (aiohttp, answers 204). Latency is from the moment the
client sends the POST to the moment the subscriber receives the event (it therefore includes
the ingress accept and the durable append). Two phases per backend: a fixed offered rate
(open loop) and saturation (closed loop, N concurrent clients).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from bench.eventing.ceiling import measure
from eventing.bindings import to_http_binary
from eventing.events import new_event
from eventing.ingress import Answer, IngressServer
from infra.auth import local_admin_headers
from infra.http1 import Http1Pool
from infra.localservices import free_port, start_tansu, wait_for_port
from infra.settings import load_settings


@dataclass
class Phase:
    name: str
    sent: int
    accepted: int
    delivered: int
    seconds: float
    p50_ms: float
    p99_ms: float
    accept_p99_ms: float

    def line(self) -> str:
        rate = self.delivered / self.seconds if self.seconds else 0.0
        return (
            f"{self.name:<28} accepted {self.accepted:>6}/{self.sent:<6} delivered {self.delivered:>6} "
            f"in {self.seconds:6.2f}s = {rate:8.0f} ev/s   p50 {self.p50_ms:7.2f} ms   p99 {self.p99_ms:7.2f} ms"
            f"   (202 answer p99 {self.accept_p99_ms:.2f} ms)"
        )


class Sink:
    """The no-op subscriber: records when each event id arrived. It answers on knflow's lean HTTP path
    (``eventing.ingress``, as the function runner that hosts knflow's subscribers does), so that the broker's
    share of the two cores is not taken by the bench's own subscriber; ``--aiohttp-sink`` puts aiohttp there."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.arrived.setdefault(request.headers["ce-id"], time.perf_counter())
        await request.read()
        return web.Response(status=204)

    async def accept(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        self.arrived.setdefault(headers["ce-id"], time.perf_counter())
        return Answer(204)


class DiscardingReceiver:
    """An OTLP/HTTP endpoint that takes span exports and drops them (counting requests and bytes), on a thread and
    loop of its own so that it answers while the load generator keeps this process's main loop busy."""

    def __init__(self) -> None:
        self.requests = self.bytes = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.bytes += len(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    def start(self) -> None:
        listening = threading.Event()
        threading.Thread(target=self._serve, args=(listening,), daemon=True).start()
        listening.wait(10)

    def _serve(self, listening: threading.Event) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self.handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        listening.set()
        self._loop.run_forever()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def wait_delivered(sink: Sink, ids: dict[str, float], timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while not ids.keys() <= sink.arrived.keys() and time.perf_counter() < deadline:
        await asyncio.sleep(0.02)


def summarize(name: str, sink: Sink, sent_at: dict[str, float], accepted: dict[str, float], start: float) -> Phase:
    """``accepted`` maps the id of each event answered 202 to when the answer came."""
    got = [i for i in accepted if i in sink.arrived]
    latencies = [sink.arrived[i] - sent_at[i] for i in got]
    end = max((sink.arrived[i] for i in got), default=start)
    answers = [at - sent_at[i] for i, at in accepted.items()]
    p50, p99 = pct(latencies, 0.5), pct(latencies, 0.99)
    return Phase(name, len(sent_at), len(accepted), len(got), end - start, p50, p99, pct(answers, 0.99))


async def fixed_rate(session, url: str, sink: Sink, rate: float, seconds: float, tag: str) -> Phase:
    total = int(rate * seconds)
    events = [new_event("bench.event", "bench", {"i": i}, runid=f"run-{i % 64}") for i in range(total)]
    sent_at: dict[str, float] = {}
    accepted: dict[str, float] = {}

    async def send(event) -> None:
        headers, body = to_http_binary(event)
        sent_at[event.get_id()] = time.perf_counter()
        if (await session.post(url, headers, body, 30)).status == 202:
            accepted[event.get_id()] = time.perf_counter()

    start = time.perf_counter()
    tasks = []
    for i, event in enumerate(events):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(event)))
    await asyncio.gather(*tasks)
    await wait_delivered(sink, accepted, 60)
    return summarize(f"{tag} @ {rate:.0f}/s offered", sink, sent_at, accepted, start)


async def saturation(session, url: str, sink: Sink, total: int, clients: int, tag: str) -> Phase:
    events = [new_event("bench.event", "bench", {"i": i}, runid=f"run-{i % 64}") for i in range(total)]
    pending = list(reversed(events))
    sent_at: dict[str, float] = {}
    accepted: dict[str, float] = {}

    async def client() -> None:
        while pending:
            event = pending.pop()
            headers, body = to_http_binary(event)
            sent_at[event.get_id()] = time.perf_counter()
            if (await session.post(url, headers, body, 30)).status == 202:
                accepted[event.get_id()] = time.perf_counter()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    ingress_s = time.perf_counter() - start
    await wait_delivered(sink, accepted, 120)
    phase = summarize(f"{tag} saturation ({clients} clients)", sink, sent_at, accepted, start)
    print(f"  ({tag}: ingress accepted {len(accepted) / ingress_s:,.0f} ev/s while delivering)", flush=True)
    return phase


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by the running children of a process (a traced broker's span exporter)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):  # per thread: the exporter is started by one
        try:
            children += task.read_text().split()
        except OSError:
            continue
    total = 0.0
    for child in children:
        try:
            total += cpu_seconds(int(child))
        except OSError:
            continue  # gone meanwhile
    return total


def start_broker(env: dict[str, str], port: int, log: Path, code: Path | None = None) -> subprocess.Popen:
    """``python -m eventing.broker``, from this checkout or from ``code`` (another knflow checkout)."""
    extra = {"PYTHONPATH": str(code)} if code else {}
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventing.broker"],
        env={**os.environ, **env, **extra, "KNFLOW_BROKER_PORT": str(port), "KNFLOW_LOG_LEVEL": "WARNING"},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=code,
    )
    wait_for_port(port, 60, proc, "broker")
    return proc


@contextlib.asynccontextmanager
async def broker_with_sink(
    tag: str, env: dict[str, str], tmp: Path, code: Path | None = None, aiohttp_sink: bool = False
) -> AsyncIterator[tuple[subprocess.Popen, str, Sink]]:
    """A broker process with one trigger to a no-op subscriber in this process: (process, ingress URL, sink)."""
    sink = Sink()
    app = web.Application()
    app.router.add_post("/", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    lean = None
    if aiohttp_sink:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        sink_url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    else:
        assert runner.server is not None, "set up above"
        lean = IngressServer(sink.accept, lambda path: True, runner.server, 1024 * 1024)
        sink_url = f"http://127.0.0.1:{await lean.start('127.0.0.1', 0)}/"
    port = free_port()
    proc = start_broker(env, port, tmp / f"broker-{tag}.log", code)
    url = f"http://127.0.0.1:{port}/"
    try:
        spec = orjson.dumps({"subscriber": {"uri": sink_url}})
        headers = {**local_admin_headers(load_settings(env, config_file=None)), "Content-Type": "application/json"}
        async with aiohttp.ClientSession(headers=headers) as admin, admin.put(url + "triggers/bench", data=spec) as r:
            assert r.status == 200, await r.text()
        yield proc, url, sink
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 15)  # the loop goes on: the broker may still be exporting spans
        if lean is not None:
            await lean.stop()
        await runner.cleanup()


async def run_backend(
    tag: str, env: dict[str, str], tmp: Path, args, code: Path | None = None, kafka_pid: int | None = None
) -> list[Phase]:
    """Both phases on one broker; ``kafka_pid``: the Kafka server's process, whose CPU per event is printed too."""
    async with broker_with_sink(tag, env, tmp, code, args.aiohttp_sink) as (proc, url, sink):
        session = Http1Pool()  # the broker's own lean HTTP/1.1 client: leaves more of the shared CPU to the broker
        try:
            await fixed_rate(session, url, sink, 200, 1, f"{tag} warm-up")
            phases = []
            for phase in (
                lambda: fixed_rate(session, url, sink, args.rate, args.seconds, tag),
                lambda: saturation(session, url, sink, args.saturation_events, args.clients, tag),
            ):
                os.sync()  # other processes' dirty pages would otherwise be flushed by the log's fsyncs (ext4)
                broker_cpu, own_cpu = cpu_seconds(proc.pid), time.process_time()
                child_cpu = children_cpu_seconds(proc.pid)
                kafka_cpu = cpu_seconds(kafka_pid) if kafka_pid else 0.0
                phases.append(await phase())
                broker_cpu, own_cpu = cpu_seconds(proc.pid) - broker_cpu, time.process_time() - own_cpu
                child_cpu = children_cpu_seconds(proc.pid) - child_cpu
                kafka_cpu = cpu_seconds(kafka_pid) - kafka_cpu if kafka_pid else 0.0
                n = max(phases[-1].delivered, 1)
                exporter = f"; its span exporter process {child_cpu / n * 1e6:.0f} us" if child_cpu > 0 else ""
                kafka = f"; tansu {kafka_cpu / n * 1e6:.0f} us" if kafka_pid else ""
                every, cores = (broker_cpu + own_cpu + child_cpu + kafka_cpu) / n, os.cpu_count() or 1
                print(
                    f"  ({phases[-1].name}: broker process {broker_cpu / n * 1e6:.0f} us CPU/event "
                    f"(= {n / broker_cpu if broker_cpu else 0:,.0f} ev/s per core){exporter}{kafka}; load generator + "
                    f"subscriber {own_cpu / n * 1e6:.0f} us CPU/event; all of them {every * 1e6:.0f} us = at most "
                    f"{cores / every if every else 0:,.0f} ev/s on {cores} idle cores; "
                    f"load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        finally:
            await session.close()
        return phases


async def main_async(args) -> None:
    print("# knflow eventing benchmark")
    print(
        f"# machine: {platform.machine()} {os.cpu_count()} CPU(s), Python {platform.python_version()}; "
        "CPU shared with other work on this host (figures are lower bounds)"
    )
    print(
        "# broker: separate process; load generator (infra.http1 client) + no-op subscriber "
        f"({'aiohttp' if args.aiohttp_sink else 'eventing.ingress lean'} server): this process; "
        f"fixed rate {args.rate}/s for {args.seconds}s; saturation {args.saturation_events} events, "
        f"{args.clients} concurrent clients; 64 runids; latency = POST sent -> subscriber received; "
        "os.sync() before each phase"
    )
    rounds: list[dict[str, list[Phase]]] = []
    receiver = DiscardingReceiver()
    if args.tracing or args.paired:
        receiver.start()
    with tempfile.TemporaryDirectory(prefix="knflow-bench-") as tmpdir:
        tmp = Path(tmpdir)
        if args.paired:
            from bench.eventing.paired import paired  # it builds on this module

            return await paired(args, receiver, tmp)
        for n in range(args.repeat):
            if args.repeat > 1:
                print(f"# round {n + 1} of {args.repeat}: {os.getloadavg()[0]:.1f} load average", flush=True)
            rounds.append(await run_round(args, receiver, tmp / f"round-{n}", flip=n % 2 == 1))
    if args.tracing:
        print(f"# OTLP receiver: {receiver.requests} exports, {receiver.bytes / 1e6:.1f} MB of spans, discarded")
    pairs = [("embedded", "kafka"), ("kafka", "kafka-before"), ("embedded", "embedded-before")]
    pairs += [(f"{b}{old}-traced", f"{b}{old}") for b in args.backends.split(",") for old in ("", "-before")]
    for a, b in pairs:
        for i, label in enumerate(("fixed rate", "saturation")):
            found = [(r[a][i], r[b][i]) for r in rounds if a in r and b in r]
            ratios = [(x.delivered / x.seconds) / max(y.delivered / y.seconds, 1e-9) for x, y in found]
            for (x, y), ratio in zip(found, ratios, strict=True):
                print(f"# {label}: {a}/{b} throughput ratio {ratio:.2f}, p99 {x.p99_ms:.1f} ms vs {y.p99_ms:.1f} ms")
            if len(ratios) > 1:
                print(f"# {label}: {a}/{b} median ratio of {len(ratios)} rounds {statistics.median(ratios):.2f}")


def traced_env(receiver: DiscardingReceiver) -> dict[str, str]:
    """A traced broker's variables: 100 % sampling, the default batching, spans to ``receiver``."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_TRACES_SAMPLER": "always_on"}


async def run_round(args, receiver: DiscardingReceiver, tmp: Path, flip: bool) -> dict[str, list[Phase]]:
    """Every backend once (with ``--before`` and ``--tracing``, each variant in turn: untraced first, traced first
    when ``flip``, so that a load that grows or falls during the run favours neither)."""
    tmp.mkdir(parents=True)
    results: dict[str, list[Phase]] = {}
    base = {"KNFLOW_DATA_DIR": str(tmp / "data"), "KNFLOW_ARTIFACTS": f"file://{tmp / 'artifacts'}"}
    backends = args.backends.split(",")
    backends += [f"{b}-before" for b in backends] if args.before else []
    variants = (lambda b: (f"{b}-traced", b)) if flip else (lambda b: (b, f"{b}-traced"))
    backends = [t for b in backends for t in (variants(b) if args.tracing else (b,))]
    for backend in backends:
        code = Path(args.before).resolve() if backend.endswith(("-before", "-before-traced")) else None
        base = {k: v for k, v in base.items() if not k.startswith("OTEL_")}
        base |= traced_env(receiver) if backend.endswith("-traced") else {}
        if backend.startswith("embedded"):
            env = {**base, "KNFLOW_BROKER": f"embedded://{tmp / backend}"}
            results[backend] = await run_backend(backend, env, tmp, args, code)
        elif backend.startswith("kafka"):
            with start_tansu(tmp / backend) as kafka:
                if code is None and "-traced" not in backend:
                    print(f"# Kafka clients alone, {args.ceiling_events} records each (same tansu, this process):")
                    for ceiling in await measure(kafka.url, args.ceiling_events):
                        print(ceiling.line(), flush=True)
                env = {**base, "KNFLOW_BROKER": f"kafka://{kafka.url}?topic=bench"}
                results[backend] = await run_backend(backend, env, tmp, args, code, kafka.process.pid)
        for phase in results[backend]:
            print(phase.line(), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--saturation-events", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--backends", default="embedded,kafka")
    parser.add_argument("--ceiling-events", type=int, default=20000, help="records per Kafka client ceiling run")
    parser.add_argument("--before", default="", help="another knflow checkout: also run its broker, each backend")
    parser.add_argument("--tracing", action="store_true", help="also run each broker exporting spans (100 %% sampled)")
    parser.add_argument("--aiohttp-sink", action="store_true", help="an aiohttp subscriber instead of the lean one")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every variant, interleaved (noisy hosts)")
    parser.add_argument(
        "--paired", type=int, default=0, help="N rounds of an untraced and a traced broker saturated at once"
    )
    parser.add_argument(
        "--paired-rate",
        type=float,
        default=300.0,
        help="--paired: events/s offered to both for --seconds first (0: no)",
    )
    from infra.aio import run

    run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
