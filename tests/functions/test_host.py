"""The function host: both function shapes, CloudEvent replies, error statuses, limits, health, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import web

from eventing.bindings import from_http, to_http_binary, to_http_structured
from eventing.events import RUNID, new_event
from functions.runtime.host import FUNCTION_ERROR, FunctionHost, listen_addresses
from functions.runtime.loader import load_function
from infra.errors import ConfigError
from infra.localservices import free_port, wait_for_port
from tests.eventually import eventually
from tests.functions.conftest import FIXTURES, make_settings, post_event
from tests.ipv6 import needs_ipv6_loopback
from tests.scrape import scrape, value
from tests.webapps import served

BEHAVIOURS = str(FIXTURES / "behaviours.py")


async def test_knative_shaped_function_runs_unchanged_and_replies(start_host, http):
    url = await start_host("functions.examples.knative_echo")
    status, headers, body = await post_event(http, url, "test.hello", {"greeting": "hi"})
    assert status == 200
    reply = from_http(headers, body)
    assert reply.get_type() == "dev.knative.function.response"
    assert reply.get_data() == {"greeting": "hi"}
    async with http.get(url + "health/readiness") as response:
        assert (response.status, await response.text()) == (200, "ready")  # its start(cfg) ran
    async with http.get(url + "health/liveness") as response:
        assert (response.status, await response.text()) == (200, "alive")


async def test_reply_is_a_binary_event_in_the_same_run(start_host, http):
    url = await start_host("echo")
    status, headers, body = await post_event(http, url, "test.echo", {"x": [1, 2]}, runid="run-abc")
    assert status == 200
    assert headers["ce-type"] == "dev.knflow.echo.reply"
    assert headers["ce-runid"] == "run-abc"
    assert orjson.loads(body) == {"x": [1, 2]}


async def test_structured_request_is_accepted(start_host, http):
    url = await start_host("echo")
    headers, body = to_http_structured(new_event("test.echo", "/tests", {"s": 1}))
    async with http.post(url, data=body, headers=headers) as response:
        assert response.status == 200
        assert orjson.loads(await response.read()) == {"s": 1}


async def test_no_reply_answers_204_without_body(start_host, http):
    url = await start_host("echo")
    status, _, body = await post_event(http, url, "test.noreply")
    assert (status, body) == (204, b"")


async def test_request_that_is_not_a_cloudevent_gets_400_with_the_reason(start_host, http):
    url = await start_host("echo")
    async with http.post(url, data=b'{"hello": 1}', headers={"content-type": "application/json"}) as response:
        assert response.status == 400
        assert "not a CloudEvent" in (await response.json())["error"]


async def test_request_above_the_size_limit_gets_413(start_host, http):
    url = await start_host("echo", functions_max_request_bytes="1000")
    status, _, body = await post_event(http, url, data={"blob": "x" * 2000})
    assert status == 413
    assert "limit of 1000" in orjson.loads(body)["error"]
    assert (await post_event(http, url, data={"blob": "x" * 100}))[0] == 200


async def test_events_beyond_the_concurrency_limit_get_429(start_host, http):
    url = await start_host(BEHAVIOURS, functions_concurrency="2")
    gate = start_host.host.function.module.GATE
    held = [asyncio.create_task(post_event(http, url, "test.gate")) for _ in range(2)]
    await eventually(lambda: start_host.host.inflight >= 2, 5, "two events in flight")
    status, headers, _ = await post_event(http, url, "test.echo")
    assert status == 429
    assert headers["Retry-After"] == "1"
    gate.set()
    assert [r[0] for r in await asyncio.gather(*held)] == [200, 200]


async def test_handler_exception_gets_500_with_an_error_event(start_host, http):
    url = await start_host(BEHAVIOURS)
    status, headers, body = await post_event(http, url, "test.boom", runid="run-x")
    assert status == 500
    error = from_http(headers, body)
    assert error.get_type() == FUNCTION_ERROR
    assert error.get_extension(RUNID) == "run-x"
    assert error.get_data()["error"] == "the model exploded"
    assert error.get_data()["retryable"] is True


async def test_handler_returning_something_else_than_an_event_gets_500_saying_so(start_host, http):
    url = await start_host(BEHAVIOURS)
    status, headers, body = await post_event(http, url, "test.dict")
    assert status == 500
    assert "must return a CloudEvent or None" in from_http(headers, body).get_data()["error"]


async def test_knative_http_flavour_gets_the_raw_request(start_host, tmp_path, http):
    module = tmp_path / "raw_fn.py"
    module.write_text(
        "async def handle(scope, receive, send):\n"
        "    body = (await receive())['body']\n"
        "    headers = [(b'x-path', scope['path'].encode())]\n"
        "    await send({'type': 'http.response.start', 'status': 201, 'headers': headers})\n"
        "    await send({'type': 'http.response.body', 'body': body[::-1]})\n"
    )
    url = await start_host(str(module), invoke="http")
    async with http.post(f"{url}some/path", data=b"abc") as response:
        assert (response.status, response.headers["x-path"], await response.read()) == (201, "/some/path", b"cba")


async def test_an_asgi_function_sees_the_same_scope_on_the_lean_path_and_on_aiohttp(start_host, tmp_path):
    """A POST with a Content-Length is served on the lean HTTP/1.1 path, a PUT on aiohttp: the function's scope
    (path, query, headers byte for byte, client) and its answer are the same on both."""
    module = tmp_path / "scope_fn.py"
    module.write_text(
        "import asyncio, json\n"
        "async def handle(scope, receive, send):\n"
        "    async with asyncio.timeout(5):  # a function may use what needs a task\n"
        "        body = (await receive())['body']\n"
        "    seen = {k: scope[k] for k in ('path', 'raw_path', 'query_string', 'http_version', 'scheme')}\n"
        "    seen['headers'] = sorted([k.hex(), v.hex()] for k, v in scope['headers'] if k != b'content-length')\n"
        "    seen['client'] = scope['client'][0]\n"
        "    seen = {k: v.hex() if isinstance(v, bytes) else v for k, v in seen.items()}\n"
        "    headers = [(b'content-type', b'application/json'), (b'x-method', scope['method'].encode())]\n"
        "    await send({'type': 'http.response.start', 'status': 201, 'headers': headers})\n"
        "    await send({'type': 'http.response.body', 'body': json.dumps([seen, body.hex()]).encode()})\n"
    )
    address = urlsplit(await start_host(str(module), invoke="http"))
    head = "/a/b?x=1&y=z HTTP/1.1\r\nHost: fn\r\nX-Name: caf\xc3\xa9\r\nConnection: close\r\n"
    answers = {}
    for method in ("POST", "PUT"):
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        writer.write(f"{method} {head}Content-Length: 3\r\n\r\nabc".encode("latin-1"))
        raw = await asyncio.wait_for(reader.read(), 10)  # the server closes after its answer
        writer.close()
        status_line, _, rest = raw.partition(b"\r\n")
        headers, _, body = rest.partition(b"\r\n\r\n")
        assert status_line.split()[1] == b"201", raw
        assert f"x-method: {method}".encode() in headers, headers
        assert (b"server: " in headers.lower()) == (method == "PUT"), headers  # aiohttp names itself
        answers[method] = orjson.loads(body)
    assert answers["POST"] == answers["PUT"]
    seen, body = answers["POST"]
    assert bytes.fromhex(body) == b"abc"
    assert bytes.fromhex(seen["query_string"]) == b"x=1&y=z" and seen["path"] == "/a/b"
    assert [b"x-name".hex(), "café".encode().hex()] in seen["headers"] and seen["client"] == "127.0.0.1"


async def test_non_retryable_error_answers_its_4xx_so_delivery_does_not_retry(start_host, http):
    url = await start_host(BEHAVIOURS)
    status, headers, body = await post_event(http, url, "test.invalid")
    assert status == 400
    data = from_http(headers, body).get_data()
    assert data["retryable"] is False
    assert "label" in data["error"]


async def test_retryable_error_answers_503(start_host, http):
    url = await start_host(BEHAVIOURS)
    status, _, _ = await post_event(http, url, "test.unavailable")
    assert status == 503


async def test_sync_handler_runs_in_an_executor_thread(start_host, http):
    url = await start_host(str(FIXTURES / "sync_step.py"))
    status, _, body = await post_event(http, url, "test.compute")
    assert status == 200
    assert orjson.loads(body)["thread"] != "MainThread"


async def test_readiness_follows_the_function_ready_callback(start_host, http):
    url = await start_host(BEHAVIOURS)
    ready = start_host.host.function.module.READY
    ready["value"] = False
    try:
        async with http.get(url + "health/readiness") as response:
            assert (response.status, await response.text()) == (500, "warming up")
        async with http.get(url + "health/liveness") as response:
            assert response.status == 200
    finally:
        ready["value"] = True


@pytest.mark.parametrize("refusals", [0, 2])  # 2: a broker restarting refuses twice, then takes everything
async def test_emit_posts_fan_out_events_to_the_sink_retrying_its_refusals(start_host, http, refusals: int):
    answers = [503] * refusals
    received = []

    async def sink(request: web.Request) -> web.Response:
        if answers:
            return web.Response(status=answers.pop(0))
        received.append(from_http(request.headers, await request.read()))
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/", sink)
    async with served(app) as sink_url:
        url = await start_host(BEHAVIOURS, sink=f"{sink_url}/")
        status, _, _ = await post_event(http, url, "test.emit", {"count": 3}, runid="run-fan")
        assert status == 200
        assert sorted(e.get_data()["i"] for e in received) == [0, 1, 2]
        assert {e.get_extension(RUNID) for e in received} == {"run-fan"}
        assert not answers  # every refusal was answered, and retried


def test_listen_address_follows_knative_then_port(tmp_path):
    settings = make_settings(tmp_path)
    assert listen_addresses({"LISTEN_ADDRESS": "127.0.0.1:9000,[::1]:9000"}, settings) == [
        "127.0.0.1:9000",
        "[::1]:9000",
    ]
    assert listen_addresses({"PORT": "9001"}, settings) == ["127.0.0.1:9001"]
    assert listen_addresses({}, settings) == ["127.0.0.1:8080"]
    assert listen_addresses({"PORT": "9001"}, make_settings(tmp_path, host="::1")) == ["[::1]:9001"]


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"LISTEN_ADDRESS": "::1:9000"}, "needs brackets"),
        ({"LISTEN_ADDRESS": "localhost"}, "expected host:port"),
        ({"PORT": "http"}, "PORT='http'"),
    ],
)
def test_a_listen_address_that_cannot_be_bound_is_refused_at_start(tmp_path, environ, problem):
    with pytest.raises(ConfigError, match=problem):
        listen_addresses(environ, make_settings(tmp_path))


@needs_ipv6_loopback
async def test_a_host_on_ipv6_loopback_listens_and_says_where_in_brackets(tmp_path: Path, http: aiohttp.ClientSession):
    settings = make_settings(tmp_path, host="::1")
    host = FunctionHost(load_function("echo"), settings)
    try:
        bound = await host.start(listen_addresses({"PORT": "0"}, settings))
        assert len(bound) == 1 and bound[0].startswith("[::1]:")
        status, headers, _ = await post_event(http, f"http://{bound[0]}/", "test.echo")
        assert (status, headers["ce-type"]) == (200, "dev.knflow.echo.reply")
    finally:
        await host.stop()


async def test_sigterm_lets_the_in_flight_event_finish(tmp_path: Path, http: aiohttp.ClientSession):
    port = free_port()
    env = {**os.environ, "LISTEN_ADDRESS": f"127.0.0.1:{port}", "KNFLOW_DATA_DIR": str(tmp_path), "PYTHONPATH": "."}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "functions.runtime.host", BEHAVIOURS, env=env)
    try:
        await asyncio.to_thread(wait_for_port, port, 20)
        marker = tmp_path / "started"
        url = f"http://127.0.0.1:{port}/"
        request = asyncio.create_task(post_event(http, url, "test.sleep", {"seconds": 1.0, "marker": str(marker)}))
        await eventually(marker.exists, 10, "the function to start on the event")
        process.send_signal(signal.SIGTERM)
        status, _, body = await request
        assert status == 200
        assert orjson.loads(body)["kind"] == "sleep"
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    with pytest.raises(aiohttp.ClientConnectionError):
        await post_event(http, url)


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [("ce-time", "yesterday", "not a valid CloudEvent"), ("ce-Bad_Name", "x", "bad_name"), ("ce-id", "", "id")],
)
async def test_malformed_binary_event_gets_400_naming_the_problem(start_host, http, header, value, reason):
    url = await start_host("echo")
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "/t",
        "ce-type": "t",
        "content-type": "application/json",
    }
    headers[header] = value
    async with http.post(url, data=b"{}", headers=headers) as response:
        assert response.status == 400
        assert reason in (await response.json())["error"]


# -- user functions: a directory in Knative func's layout, knflow's context in the scope ---------------------------

KNATIVE_USER = """\
from cloudevents.core.v1.event import CloudEvent

from functions.runtime import context_of


def new():
    return Function()


class Function:
    async def handle(self, scope, receive, send):
        ctx = context_of(scope)
        ctx.store.put("seen/" + scope["event"].get_id(), b"1")
        data = {"settings": ctx.step_settings, "function": ctx.function}
        await send.binary(CloudEvent({"type": "test.user", "source": "/user", "id": "r1"}, data))
"""


async def test_a_knative_shaped_function_directory_gets_knflows_context_and_answers_json(tmp_path, http):
    from functions.runtime.host import FunctionHost
    from functions.runtime.loader import load_function
    from infra.store import open_store

    root = tmp_path / "user"
    (root / "function").mkdir(parents=True)
    (root / "func.yaml").write_text("specVersion: 0.36.0\nname: checker\nruntime: python\ninvoke: cloudevent\n")
    (root / "function" / "__init__.py").write_text("from .func import new\n")
    (root / "function" / "func.py").write_text(KNATIVE_USER)
    settings = make_settings(tmp_path)
    host = FunctionHost(load_function(str(root)), settings, environ={"KNFLOW_STEP_SETTINGS": '{"min_rows": 5}'})
    bound = await host.start(["127.0.0.1:0"])
    try:
        status, headers, body = await post_event(http, f"http://{bound[0]}/", "test.in", {"n": 1}, runid="run-u")
    finally:
        await host.stop()
    assert status == 200
    assert headers["Content-Type"] == "application/json"  # the reply named no type: its dict data is JSON
    assert headers["ce-runid"] == "run-u"
    assert orjson.loads(body) == {"settings": {"min_rows": 5}, "function": "checker"}
    assert [info.key for info in open_store(settings.artifacts).list("seen/")] != []


async def test_a_knative_shaped_function_refuses_an_event_with_a_knflow_error(tmp_path, http):
    from functions.runtime.host import FunctionHost
    from functions.runtime.loader import load_function

    module = tmp_path / "refuses.py"
    module.write_text(
        "from infra.errors import InvalidRequest\n\n\n"
        "class Function:\n"
        "    async def handle(self, scope, receive, send):\n"
        "        raise InvalidRequest('data set tiny has 3 rows')\n\n\n"
        "def new():\n"
        "    return Function()\n"
    )
    host = FunctionHost(load_function(str(module)), make_settings(tmp_path))
    bound = await host.start(["127.0.0.1:0"])
    try:
        status, headers, body = await post_event(http, f"http://{bound[0]}/", "test.in")
    finally:
        await host.stop()
    assert status == 400  # a 4xx: delivery does not retry it
    assert from_http(headers, body).get_data()["error"] == "data set tiny has 3 rows"


async def test_host_metrics_count_its_function_invocations_by_outcome(start_host, http):
    url = await start_host(BEHAVIOURS)
    for kind in ("test.hello", "test.invalid", "test.boom"):
        await post_event(http, url, kind)
    s = await scrape(http, url.rstrip("/"))
    name = start_host.host.function.name
    assert value(s, "knflow_function_invocations_total", function=name, outcome="ok") == 1
    assert value(s, "knflow_function_invocations_total", function=name, outcome="refused") == 1
    assert value(s, "knflow_function_invocations_total", function=name, outcome="failed") == 1
    assert value(s, "knflow_function_duration_seconds_count", function=name) == 3
    assert value(s, "knflow_function_cold_starts_total", function=name) == 1  # this process started once
    assert value(s, "knflow_function_workers", function=name) == 1


@pytest.mark.parametrize("kind", ["test.echo", "test.noreply", "test.boom"])
async def test_an_event_is_answered_alike_on_the_lean_path_and_on_aiohttp(start_host, http, kind):
    """A POST with a Content-Length takes the host's lean HTTP/1.1 path; a chunked one goes to aiohttp."""
    url = await start_host(BEHAVIOURS)
    headers, body = to_http_binary(new_event(kind, "/tests", {"n": 1}, runid="run-l"))

    async def chunked():
        yield body

    answers = []
    for data in (body, chunked()):
        async with http.post(url, data=data, headers=headers) as response:
            varying = ("ce-id", "ce-time", "ce-traceparent", "ce-knflowparentspan")  # new per reply
            ce = {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("ce-")}
            ce = {k: v for k, v in ce.items() if k not in varying}
            answers.append((response.status, response.headers.get("Content-Type"), ce, await response.read()))
        lean = start_host.host._lean.connections
        assert bool(lean) == (data is body)  # the chunked POST's connection went over to aiohttp
    assert answers[0][0] in (200, 204, 500)
    assert answers[0][:3] == answers[1][:3]
    if kind != "test.boom":  # an error event's body names its own id
        assert answers[0][3] == answers[1][3]


async def test_the_host_serves_events_on_a_unix_socket(tmp_path, http):
    host = FunctionHost(load_function("echo"), make_settings(tmp_path))
    socket = str(tmp_path / "fn.sock")
    assert await host.start([f"unix:{socket}"]) == [f"unix:{socket}"]
    try:
        connector = aiohttp.UnixConnector(socket)
        async with aiohttp.ClientSession(connector=connector) as session:
            status, headers, body = await post_event(session, "http://fn/", "test.echo", {"u": 1})
        assert (status, headers["ce-type"], orjson.loads(body)) == (200, "dev.knflow.echo.reply", {"u": 1})
    finally:
        await host.stop()


async def test_probes_and_metrics_are_answered_on_the_lean_path_and_head_has_no_body(start_host, http):
    url = await start_host("echo")
    async with http.get(url + "health/readiness") as ready, http.head(url + "health/liveness") as alive:
        answers = [(r.status, r.headers["Content-Type"], r.headers["Content-Length"]) for r in (ready, alive)]
        bodies = (await ready.read(), await alive.read())
    async with http.get(url + "metrics") as metrics:
        assert metrics.status == 200 and b"knflow_function_cold_starts_total" in await metrics.read()
    assert answers[0] == answers[1] == (200, "text/plain; charset=utf-8", str(len(bodies[0])))
    assert bodies[1] == b""
    assert start_host.host._lean.connections  # still on the lean path: nothing was handed to aiohttp
    assert start_host.host._web is None
