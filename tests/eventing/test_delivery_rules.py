"""The delivery rules one at a time, in process: which answers are retried, how long each retry waits, what a
``Retry-After`` changes, what a failure reports and where dead letters go (``eventing/delivery.py``)."""

from __future__ import annotations

import base64
import contextlib
import email.utils
import time
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web

from eventing.bindings import to_http_binary, to_http_structured
from eventing.delivery import BROKER_SOURCE, Attempt, Deliverer, _attempt, _reply, _retry_after, step_failed_event
from eventing.events import STEP_FAILED, describe, new_event
from eventing.triggers import DeliverySpec, Trigger
from infra.localservices import free_port
from tests.eventing.conftest import reply_with
from tests.spans import in_memory_spans
from tests.tls import tls_contexts


@pytest.fixture
def spans(monkeypatch):
    yield from in_memory_spans(monkeypatch)


class Metrics:
    """Records the deliverer's one call per delivery."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, int, float]] = []

    def delivery(self, trigger: str, ok: bool, attempts: int, seconds: float) -> None:
        self.calls.append((trigger, ok, attempts, seconds))


@pytest.fixture
async def deliverer():
    published = []

    async def publish(event):
        published.append(event)

    async with aiohttp.ClientSession() as session:
        d = Deliverer(session, publish, default_timeout=5.0, metrics=Metrics())  # type: ignore[arg-type]
        d.published = published  # type: ignore[attr-defined]
        yield d


@pytest.mark.parametrize(
    ("status", "ok"), [(0, False), (199, False), (200, True), (202, True), (299, True), (300, False), (500, False)]
)
def test_only_2xx_answers_are_delivered(status, ok):
    assert Attempt(status).ok is ok


@pytest.mark.parametrize("status", [0, 404, 408, 409, 429, 500, 502, 503, 599])
def test_network_errors_5xx_and_knatives_4xx_set_are_retried(status):
    assert Attempt(status).retryable


@pytest.mark.parametrize("status", [301, 400, 401, 403, 405, 410, 413, 422, 428, 430, 499])
def test_other_4xx_and_3xx_are_not_retried(status):
    assert not Attempt(status).retryable


def test_retry_after_seconds_and_http_dates():
    assert _retry_after(None) is None
    assert _retry_after("") is None
    assert _retry_after("3") == 3.0
    assert _retry_after(" 7 ") == 7.0
    assert _retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 <= _retry_after(later) <= 30  # type: ignore[operator]
    assert _retry_after(email.utils.formatdate(time.time() - 30, usegmt=True)) == 0.0  # a date past: no wait


def test_retry_after_is_honoured_on_429_and_503_only_when_opted_in_and_up_to_the_cap(deliverer):
    capped = DeliverySpec(retry=3, backoff_delay=0.1, retry_after_max=2)
    assert deliverer._delay(capped, 0, Attempt(429, retry_after=1.5)) == 1.5
    assert deliverer._delay(capped, 0, Attempt(503, retry_after=1.5)) == 1.5
    assert deliverer._delay(capped, 0, Attempt(429, retry_after=5)) == 2.0  # capped at retryAfterMax
    assert deliverer._delay(capped, 0, Attempt(429, retry_after=0.01)) == 0.1  # never shorter than the backoff
    assert deliverer._delay(capped, 2, Attempt(429)) == pytest.approx(0.4)  # no header: the backoff
    assert deliverer._delay(capped, 0, Attempt(500, retry_after=1.5)) == 0.1  # other statuses: the backoff
    assert deliverer._delay(capped, 0, Attempt(502, retry_after=1.5)) == 0.1
    not_opted = DeliverySpec(retry=3, backoff_delay=0.1)
    assert deliverer._delay(not_opted, 0, Attempt(429, retry_after=1.5)) == 0.1


def test_a_failed_answer_keeps_its_status_body_reason_and_retry_after():
    failed = _attempt(429, "Too Many Requests", {"Retry-After": "2"}, b"slow down")
    assert failed == Attempt(429, b"slow down", "Too Many Requests", 2.0)
    assert _attempt(503, "", {"retry-after": "4"}, b"").retry_after == 4.0
    assert _attempt(500, "", {}, b"").retry_after is None
    assert _attempt(300, "Multiple Choices", {}, b"") == Attempt(300, b"", "Multiple Choices")  # not a 2xx
    assert _attempt(299, "", {}, b"kept").body == b"kept"


def test_a_2xx_answer_carrying_an_event_is_the_reply_binary_or_structured():
    event = new_event("next", "s", {"k": 1})
    for encode in (to_http_binary, to_http_structured):
        headers, body = encode(event)
        reply = _attempt(200, "OK", headers, body).reply
        assert reply is not None and reply.get_id() == event.get_id() and reply.get_data() == {"k": 1}
    assert _attempt(200, "OK", {"Content-Type": "application/json"}, b"{}").reply is None  # no event: no reply
    assert _attempt(204, "OK", {}, b"") == Attempt(204)


def test_an_invalid_reply_event_is_dropped_not_raised(caplog):
    with caplog.at_level("WARNING", logger="eventing.delivery"):
        assert _reply({"ce-specversion": "1.0"}, b"{}") is None  # binary headers without id, type or source
    [record] = caplog.records
    assert record.getMessage() == (
        "subscriber replied with an invalid event, dropped: not a valid CloudEvent: missing required header ce-(s) "
        "id, source, type"
    )
    assert _reply({"Content-Type": "application/cloudevents+json"}, b'{"specversion": "1.0"}') is None


def test_step_failed_names_the_event_trigger_status_error_and_attempts():
    event = new_event("work", "s", {"k": "v"})
    trigger = Trigger("t1", "http://127.0.0.1:1/x")
    report = step_failed_event(trigger, event, Attempt(500, b"boom", "Internal"), 3, "http://127.0.0.1:1/dls")
    assert report.get_type() == STEP_FAILED and report.get_source() == BROKER_SOURCE
    assert report.get_subject() == "t1" and report.get_extension("runid") == event.get_extension("runid")
    assert report.get_data() == {
        "event_id": event.get_id(),
        "event_type": "work",
        "trigger": "t1",
        "subscriber": "http://127.0.0.1:1/x",
        "status": 500,
        "error": "boom",
        "attempts": 3,
        "dead_letter_sink": "http://127.0.0.1:1/dls",
    }
    undecodable = step_failed_event(trigger, event, Attempt(500, b"bad \xff"), 1, None)
    assert undecodable.get_data()["error"] == "bad \ufffd"
    bodiless = step_failed_event(trigger, event, Attempt(0, error="timed out after 1s"), 1, None)
    assert bodiless.get_data()["error"] == "timed out after 1s" and bodiless.get_data()["dead_letter_sink"] is None


async def test_retries_stop_at_the_spec_count_with_the_backoff_of_each_retry(deliverer, subscriber, monkeypatch):
    waits = []
    monkeypatch.setattr(deliverer, "_delay", lambda spec, retry, result: waits.append(retry) or 0.0)
    url = subscriber.on("/down", lambda e, n: web.Response(status=500))
    result = await deliverer.deliver(Trigger("down", url, delivery=DeliverySpec(retry=2)), new_event("t", "s"))
    assert result.status == 500 and len(subscriber.at("/down")) == 3 and waits == [0, 1]
    assert deliverer.metrics.calls[0][:3] == ("down", False, 3)
    assert 0 <= deliverer.metrics.calls[0][3] < 5


async def test_a_success_after_retries_counts_its_attempts(deliverer, subscriber, monkeypatch):
    monkeypatch.setattr(deliverer, "_delay", lambda spec, retry, result: 0.0)
    url = subscriber.on("/flaky", lambda e, n: web.Response(status=429 if n < 3 else 200))
    result = await deliverer.deliver(Trigger("flaky", url, delivery=DeliverySpec(retry=5)), new_event("t", "s"))
    assert result.ok and len(subscriber.at("/flaky")) == 3
    assert deliverer.metrics.calls[0][:3] == ("flaky", True, 3) and deliverer.published == []


async def test_without_a_delivery_spec_one_attempt_is_made(deliverer, subscriber):
    url = subscriber.on("/down", lambda e, n: web.Response(status=503))
    await deliverer.deliver(Trigger("down", url), new_event("t", "s"))
    assert len(subscriber.at("/down")) == 1


async def test_a_non_retryable_answer_is_not_retried(deliverer, subscriber):
    url = subscriber.on("/bad", lambda e, n: web.Response(status=400, text="no"))
    result = await deliverer.deliver(Trigger("bad", url, delivery=DeliverySpec(retry=3)), new_event("t", "s"))
    assert (result.status, result.body) == (400, b"no") and len(subscriber.at("/bad")) == 1
    assert deliverer.published[0].get_data()["attempts"] == 1


async def test_the_reply_is_published_and_nothing_else(deliverer, subscriber):
    event = new_event("t", "s")
    url = subscriber.on("/step", lambda e, n: reply_with(new_event("next", "step", cause=e)))
    result = await deliverer.deliver(Trigger("step", url), event)
    assert result.ok and [e.get_type() for e in deliverer.published] == ["next"]


async def test_the_subscriber_gets_the_event_with_the_platform_credentials_for_its_url(deliverer, subscriber):
    url = subscriber.on("/who", lambda e, n: web.Response())
    deliverer.credentials = lambda to: {"ce-credentialsfor": to}  # a header the subscriber reads back as an extension
    event = new_event("t", "s", {"k": "v"})
    await deliverer.deliver(Trigger("who", url), event)
    got = subscriber.at("/who")[0].event
    assert got.get_id() == event.get_id() and got.get_data() == {"k": "v"}
    assert got.get_extension("credentialsfor") == url


async def test_dead_letters_carry_knatives_error_extensions_and_the_failure_is_reported(deliverer, subscriber):
    url = subscriber.on("/down", lambda e, n: web.Response(status=502, text=f"boom {n}"))
    dls = subscriber.on("/dls", lambda e, n: web.Response(status=202))
    event = new_event("work", "s", {"k": "v"})
    await deliverer.deliver(
        Trigger("down", url, delivery=DeliverySpec(retry=1, backoff_delay=0, dead_letter_sink=dls)), event
    )
    dead = subscriber.at("/dls")[0].event
    assert dead.get_id() == event.get_id() and dead.get_data() == {"k": "v"}
    assert dead.get_extension("knativeerrordest") == url and dead.get_extension("knativeerrorcode") == "502"
    assert base64.b64decode(dead.get_extension("knativeerrordata")) == b"boom 2"
    assert [e.get_data()["dead_letter_sink"] for e in deliverer.published] == [dls]


async def test_a_dead_letter_without_an_answer_body_has_no_error_data(deliverer, subscriber, caplog):
    url = f"http://127.0.0.1:{free_port()}/nobody"
    dls = subscriber.on("/dls", lambda e, n: web.Response(status=500))  # a sink refusing it is only logged
    event = new_event("w", "s")
    with caplog.at_level("ERROR", logger="eventing.delivery"):
        await deliverer.deliver(Trigger("gone", url, delivery=DeliverySpec(dead_letter_sink=dls)), event)
    [refused] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert refused == f"dead-letter sink {dls} refused {describe(event)}: status 500"
    dead = subscriber.at("/dls")[0].event
    assert dead.get_extension("knativeerrorcode") == "0" and dead.get_extension("knativeerrordata") is None
    assert len(subscriber.at("/dls")) == 1 and len(deliverer.published) == 1


async def test_the_failure_of_a_failure_report_is_not_reported_again(deliverer, subscriber):
    url = subscriber.on("/down", lambda e, n: web.Response(status=500))
    dls = subscriber.on("/dls", lambda e, n: web.Response())
    report = new_event(STEP_FAILED, "s")
    await deliverer.deliver(Trigger("down", url, delivery=DeliverySpec(dead_letter_sink=dls)), report)
    assert deliverer.published == [] and len(subscriber.at("/dls")) == 1  # the sink still gets it


async def test_a_timeout_and_a_refused_connection_are_attempts_of_status_0(deliverer, subscriber):
    async def slow(event, n):
        import asyncio

        await asyncio.sleep(1.0)
        return web.Response()

    spec = DeliverySpec(timeout="PT0.2S")
    slow_url = subscriber.on("/slow", slow)
    timed_out = await deliverer.attempt(slow_url, *to_http_binary(new_event("t", "s")), spec)
    assert timed_out == Attempt(0, error="timed out after 0.2s")
    deliverer.default_timeout = 0.3
    assert (await deliverer.attempt(slow_url, *to_http_binary(new_event("t", "s")), DeliverySpec())).error == (
        "timed out after 0.3s"
    )
    refused = await deliverer.attempt(f"http://127.0.0.1:{free_port()}/", {}, b"", spec)
    assert refused.status == 0 and refused.error.startswith(("ConnectionRefusedError", "OSError", "Client"))


async def test_a_failed_delivery_is_logged_with_its_trigger_attempts_and_status(deliverer, subscriber, caplog):
    url = subscriber.on("/down", lambda e, n: web.Response(status=500, reason="Broken"))
    event = new_event("work", "s")
    with caplog.at_level("WARNING", logger="eventing.delivery"):
        await deliverer.deliver(Trigger("down", url, delivery=DeliverySpec(retry=1, backoff_delay=0)), event)
    [record] = [r for r in caplog.records if r.name == "eventing.delivery"]
    assert record.getMessage() == (
        f"delivery of {describe(event)} to trigger down failed after 2 attempt(s): status 500 Broken"
    )


async def test_a_traced_delivery_is_a_consumer_span_under_the_event_with_each_failed_attempt(
    deliverer, subscriber, spans, monkeypatch
):
    sent = []
    real_attempt = deliverer.attempt

    async def attempt(url, headers, body, spec):
        sent.append(dict(headers))
        return await real_attempt(url, headers, body, spec)

    monkeypatch.setattr(deliverer, "attempt", attempt)
    url = subscriber.on("/down", lambda e, n: web.Response(status=503 if n == 1 else 500, reason="Broken", text="x"))
    event = new_event("work", "s")
    await deliverer.deliver(Trigger("down", url, delivery=DeliverySpec(retry=1, backoff_delay=0)), event)
    [span] = [s for s in spans.get_finished_spans() if s.name == "deliver down"]
    trace_id, parent_id = event.get_extension("traceparent").split("-")[1:3]
    assert f"{span.context.trace_id:032x}" == trace_id and f"{span.parent.span_id:016x}" == parent_id
    assert span.kind.name == "CONSUMER"
    assert dict(span.attributes) == {
        "knflow.trigger": "down",
        "cloudevents.event_type": "work",
        "cloudevents.event_id": event.get_id(),
        "knflow.runid": event.get_extension("runid"),
        "http.response.status_code": 500,
    }
    assert [(e.name, dict(e.attributes)) for e in span.events] == [
        ("attempt", {"attempt": 1, "status": 503, "error": "Broken"}),
        ("attempt", {"attempt": 2, "status": 500, "error": "Broken"}),
    ]
    assert span.status.status_code.name == "ERROR" and span.status.description == "status 500 Broken"
    own = f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"
    assert [h["traceparent"] for h in sent] == [own, own]  # the subscriber's work is the delivery's child


async def test_a_traced_first_time_delivery_has_no_attempt_events_and_no_error(deliverer, subscriber, spans):
    url = subscriber.on("/ok", lambda e, n: web.Response(status=202))
    event = new_event("work", "s", runid="")
    await deliverer.deliver(Trigger("ok", url), event)
    [span] = [s for s in spans.get_finished_spans() if s.name == "deliver ok"]
    assert span.events == () or list(span.events) == []
    assert span.status.status_code.name == "UNSET" and span.attributes["http.response.status_code"] == 202


async def test_a_traced_delivery_retried_to_success_records_each_attempt(deliverer, subscriber, spans):
    url = subscriber.on("/flaky", lambda e, n: web.Response(status=503 if n == 1 else 200, reason="R"))
    await deliverer.deliver(Trigger("flaky", url, delivery=DeliverySpec(retry=2, backoff_delay=0)), new_event("w", "s"))
    [span] = [s for s in spans.get_finished_spans() if s.name == "deliver flaky"]
    assert [dict(e.attributes) for e in span.events] == [
        {"attempt": 1, "status": 503, "error": "R"},
        {"attempt": 2, "status": 200, "error": ""},
    ]
    assert span.status.status_code.name == "UNSET"


async def test_a_plain_deliverer_waits_30_s_sends_no_credentials_and_counts_in_its_own_metrics(subscriber):
    async def publish(event):
        raise AssertionError("nothing to publish")

    url = subscriber.on("/plain", lambda e, n: web.Response(status=503 if n == 1 else 200))
    async with aiohttp.ClientSession() as session:
        plain = Deliverer(session, publish)
        assert plain.default_timeout == 30.0
        await plain.deliver(Trigger("plain", url, delivery=DeliverySpec(retry=1, backoff_delay=0)), new_event("t", "s"))
    assert plain.metrics.delivered.values == {("plain",): 1} and plain.metrics.retried.values == {("plain",): 1}
    assert subscriber.at("/plain")[0].event.get_extension("credentialsfor") is None


class Session:
    """Stands in for aiohttp's session at its one seam (https:// subscribers): records each POST."""

    def __init__(self, status: int = 200, reason: str | None = "OK", headers=None, body=b"", error=None) -> None:
        self.answer = SimpleNamespace(status=status, reason=reason, headers=headers or {}, read=self.read, body=body)
        self.error, self.posts = error, []

    async def read(self) -> bytes:
        return self.answer.body

    @contextlib.asynccontextmanager
    async def request(self, method, url, data, headers, timeout):
        self.posts.append((method, url, data, headers, timeout.total))
        if self.error:
            raise self.error
        yield self.answer


async def test_https_subscribers_go_through_the_session_with_the_same_rules():
    spec = DeliverySpec(timeout=2)
    headers, body = to_http_binary(new_event("t", "s"))
    session = Session(status=429, reason=None, headers={"Retry-After": "3"}, body=b"later")
    d = Deliverer(session, None)  # type: ignore[arg-type]
    assert await d.attempt("https://h/x", headers, body, spec) == Attempt(429, b"later", "", 3.0)
    assert session.posts == [("POST", "https://h/x", body, headers, 2.0)]
    event = new_event("next", "s")
    reply_headers, reply_body = to_http_binary(event)
    answered = await Deliverer(Session(headers=reply_headers, body=reply_body), None).attempt(
        "https://h", {}, b"", spec
    )  # type: ignore[arg-type]
    assert answered.ok and answered.reply is not None and answered.reply.get_id() == event.get_id()
    late = await Deliverer(Session(error=TimeoutError()), None).attempt("https://h", {}, b"", spec)  # type: ignore[arg-type]
    assert late == Attempt(0, error="timed out after 2s")
    down = await Deliverer(Session(error=aiohttp.ClientConnectionError("gone")), None).attempt(
        "https://h", {}, b"", spec
    )  # type: ignore[arg-type]
    assert down == Attempt(0, error="ClientConnectionError: gone")


async def test_a_retry_after_longer_than_the_backoff_is_waited_on_the_wire(deliverer, subscriber):
    url = subscriber.on(
        "/busy", lambda e, n: web.Response(status=429, headers={"Retry-After": "5"}) if n == 1 else web.Response()
    )
    spec = DeliverySpec(retry=1, backoff_delay=0, retry_after_max="PT0.3S")
    assert (await deliverer.deliver(Trigger("busy", url, delivery=spec), new_event("t", "s"))).ok
    first, second = (r.at for r in subscriber.at("/busy"))
    assert second - first >= 0.28  # Retry-After 5 s capped at retryAfterMax 0.3 s, over a backoff of 0


async def test_a_traced_delivery_of_an_event_without_a_run_and_its_failure_report(deliverer, subscriber, spans):
    from cloudevents.core.v1.event import CloudEvent

    url = subscriber.on("/down", lambda e, n: web.Response(status=500, reason="Broken"))
    event = CloudEvent({"type": "work", "source": "s", "id": "e-1", "specversion": "1.0"})
    await deliverer.deliver(Trigger("down", url), event)
    finished = spans.get_finished_spans()
    [span] = [s for s in finished if s.name == "deliver down"]
    assert span.attributes["knflow.runid"] == ""
    [reported] = [s for s in finished if s.name == f"emit {STEP_FAILED}"]
    assert reported.parent.span_id == span.context.span_id  # the failure report is a child of the delivery


async def test_a_delivery_whose_bookkeeping_fails_ends_its_span_as_failed(deliverer, subscriber, spans):
    async def publish(event):
        raise RuntimeError("broker gone")

    deliverer.publish = publish
    url = subscriber.on("/step", lambda e, n: reply_with(new_event("next", "step", cause=e)))
    with pytest.raises(RuntimeError, match="broker gone"):
        await deliverer.deliver(Trigger("step", url), new_event("t", "s"))
    [span] = [s for s in spans.get_finished_spans() if s.name == "deliver step"]
    assert span.attributes["http.response.status_code"] == 0
    assert span.status.description == "status 0 delivery bookkeeping failed"


async def test_a_reply_stays_in_the_namespace_of_the_event_it_answers(deliverer, subscriber):
    def reply(namespace):  # type: ignore[no-untyped-def]
        extensions = {"namespace": namespace} if namespace else None
        return lambda e, n: reply_with(new_event("next", "step", {"k": 1}, extensions=extensions))

    team = new_event("t", "s", extensions={"namespace": "team-a"})
    given = await deliverer.deliver(Trigger("given", subscriber.on("/given", reply(None))), team)
    assert given.body and given.reply.get_data() == {"k": 1}  # the answer as it came, but in the event's namespace
    await deliverer.deliver(Trigger("same", subscriber.on("/same", reply("team-a"))), team)
    await deliverer.deliver(Trigger("plain", subscriber.on("/plain", reply(None))), new_event("t", "s"))
    await deliverer.deliver(Trigger("named", subscriber.on("/named", reply("default"))), new_event("t", "s"))
    assert [e.get_extension("namespace") for e in deliverer.published] == ["team-a", "team-a", None, "default"]
    assert [(e.get_type(), e.get_data()) for e in deliverer.published] == [("next", {"k": 1})] * 4
    deliverer.published.clear()
    result = await deliverer.deliver(Trigger("other", subscriber.on("/other", reply("team-b"))), team)
    why = "the reply claims namespace 'team-b'; the event it answers is of 'team-a'"
    assert result == Attempt(502, why.encode(), why)
    [report] = deliverer.published  # no reply published: the delivery failed
    assert report.get_type() == STEP_FAILED and report.get_data()["error"] == why and report.get_data()["status"] == 502


async def test_an_https_subscriber_is_delivered_to_over_tls_and_its_reply_published():
    served, trusted = tls_contexts()
    reply, attempts = new_event("next", "s"), []

    async def handle(request: web.Request) -> web.Response:
        attempts.append(request.headers["ce-type"])
        return web.Response(status=503) if len(attempts) == 1 else reply_with(reply)

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=served).start()
    published = []

    async def publish(event):
        published.append(event)

    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusted)) as session:
            deliverer = Deliverer(session, publish)
            trigger = Trigger("tls", f"https://127.0.0.1:{port}/", delivery=DeliverySpec(retry=1, backoff_delay=0))
            result = await deliverer.deliver(trigger, new_event("t", "s"))
            await deliverer.client.close()
    finally:
        await runner.cleanup()
    assert result.ok and attempts == ["t", "t"]  # the 503 retried under the same rules as http://
    assert [e.get_id() for e in published] == [reply.get_id()]
