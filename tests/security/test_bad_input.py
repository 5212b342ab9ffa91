"""Bad input is a 400 with the reason, never a 500 or a silence: each case here answered 500, was retried as if
the server were at fault, or was never answered before."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession

import eventing.ingress
from eventing.broker import BrokerServer
from eventing.events import new_event
from eventing.sources.webhook import SIGNATURE_HEADER, sign
from functions import ingest
from functions.contract import DATA_ARRIVED, with_lifecycle
from infra.errors import InvalidRequest
from infra.settings import load_settings
from infra.store import ArtifactStore, open_store
from tests.eventing.test_sources import minio_notification
from tests.lifecycle.helpers import StepContext
from tests.unguarded import UNGUARDED

SECRET = "s3cret"


def broker_settings(data: Path, **more: str):  # type: ignore[no-untyped-def]
    env = {"KNFLOW_DATA_DIR": str(data), "KNFLOW_EVENTING_WEBHOOK_SECRET": SECRET, **UNGUARDED, **more}
    return with_lifecycle(load_settings(env, config_file=None))


@pytest.fixture
def fstore(tmp_path: Path) -> ArtifactStore:
    return open_store(f"file://{tmp_path / 'artifacts'}")


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[BrokerServer]:
    async with BrokerServer(broker_settings(tmp_path), [], port=0) as server:
        yield server


async def raw(broker: BrokerServer, request: bytes, timeout: float = 10) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(300), timeout)
    finally:
        writer.close()


@pytest.mark.parametrize("path", [b"/", b"/default/knflow"])
async def test_a_non_utf8_byte_in_a_cloudevent_header_is_400_on_both_ingress_paths(broker, path: bytes) -> None:  # type: ignore[no-untyped-def]
    head = b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nce-specversion: 1.0\r\nce-id: 1\r\nce-source: /s\r\n"
    answer = await raw(
        broker, head + b"ce-type: caf\xe9\r\ncontent-type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
    assert answer.startswith(b"HTTP/1.1 400") and b"not valid UTF-8" in answer


@pytest.mark.parametrize("path", [b"/sources/minio", b"/triggers"])
async def test_an_unknown_expect_value_is_417_naming_it_even_when_not_utf8(broker, path: bytes) -> None:  # type: ignore[no-untyped-def]
    answer = await raw(
        broker, b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: caf\xe9\r\nContent-Length: 2\r\n\r\n{}"
    )
    assert answer.startswith(b"HTTP/1.1 417") and b"unknown Expect" in answer, answer


async def test_expect_100_continue_still_lets_the_body_come(broker) -> None:  # type: ignore[no-untyped-def]
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    try:
        writer.write(b"GET /triggers HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        final = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
    finally:
        writer.close()
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n" and final.startswith(b"HTTP/1.1 200"), (interim, final)


async def test_a_head_with_bare_lf_line_ends_is_answered_400(broker) -> None:  # type: ignore[no-untyped-def]
    answer = await raw(broker, b"POST / HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 2\n\n{}")
    assert b" 400 " in answer.split(b"\r\n")[0]


async def test_a_head_sent_a_byte_at_a_time_has_a_deadline(broker, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(eventing.ingress, "HEAD_TIMEOUT_S", 1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    started = time.monotonic()
    answer = b""
    try:
        for byte in b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 400:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.02)  # a slow client: the head must still be cut off at its deadline
            if reader.at_eof() or time.monotonic() - started > 8:
                break
        answer = await asyncio.wait_for(reader.read(200), 5)
    except ConnectionError:
        pass  # closed under the writer: also cut off
    finally:
        writer.close()
    assert time.monotonic() - started < 8, "a trickled head was never cut off"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize("query", ["after=abc", "after=-5", "limit=-1", "limit=0", "limit=5000", "wait=-1", "limit=x"])
async def test_bad_history_queries_are_400(broker, query: str) -> None:  # type: ignore[no-untyped-def]
    async with ClientSession() as http, http.get(f"http://127.0.0.1:{broker.port}/events?{query}") as r:
        assert r.status == 400, await r.text()


def _notification(mutate) -> bytes:  # type: ignore[no-untyped-def]
    note = minio_notification("knflow", "raw/digits/d.csv")
    mutate(note)
    return orjson.dumps(note)


def _records(note: dict, n: int) -> None:
    note["Records"] = [copy.deepcopy(note["Records"][0]) for _ in range(n)]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda n: n["Records"][0].update(eventName=5),
        lambda n: n["Records"][0]["s3"]["object"].update(size="abc"),
        lambda n: n["Records"][0]["s3"]["object"].update(size=-1),
        lambda n: n["Records"][0]["s3"].update(bucket=[]),
        lambda n: n["Records"].append("x"),
        lambda n: _records(n, 101),
    ],
)
async def test_malformed_or_oversized_minio_notifications_are_400(broker, mutate) -> None:  # type: ignore[no-untyped-def]
    async with ClientSession() as http:
        url = f"http://127.0.0.1:{broker.port}/sources/minio"
        async with http.post(url, data=_notification(mutate)) as r:
            assert r.status == 400, await r.text()


async def test_notifications_start_at_most_the_runs_a_minute_each_data_set_is_allowed(tmp_path: Path) -> None:
    settings = broker_settings(tmp_path, KNFLOW_SECURITY_RUNS_PER_MINUTE="3")
    async with BrokerServer(settings, [], port=0) as server, ClientSession() as http:
        url = f"http://127.0.0.1:{server.port}/sources/minio"

        async def notify(key: str) -> tuple[int, str, str | None]:
            body = orjson.dumps(minio_notification("knflow", key, etag=key))
            async with http.post(url, data=body) as r:
                return r.status, await r.text(), r.headers.get("Retry-After")

        for i in range(3):
            assert (await notify(f"raw/digits/d{i}.csv"))[0] == 202
        status, text, retry = await notify("raw/digits/d3.csv")
        assert (status, retry) == (429, "60") and "runs_per_minute" in text
        assert (await notify("raw/iris/i0.csv"))[0] == 202  # another data set has its own minute


@pytest.mark.parametrize(
    "variant",
    [
        lambda t, m: f"t={t},v1={m},x=1",
        lambda t, m: f"v1={m},t={t}",
        lambda t, m: f"t=0{t},v1={m}",
        lambda t, m: f" t={t},v1={m}",
        lambda t, m: f"t={t},v1={m.upper()}",
    ],
)
async def test_a_used_webhook_signature_is_refused_in_every_spelling_and_after_a_restart(
    tmp_path: Path, variant
) -> None:  # type: ignore[no-untyped-def]
    body = orjson.dumps({"dataset": "iris"})
    signature = sign(SECRET, body)
    t, mac = signature[2:].split(",v1=")
    async with BrokerServer(broker_settings(tmp_path), [], port=0) as server, ClientSession() as http:
        url = f"http://127.0.0.1:{server.port}/sources/webhook"
        async with http.post(url, data=body, headers={SIGNATURE_HEADER: signature}) as r:
            assert r.status == 202
        async with http.post(url, data=body, headers={SIGNATURE_HEADER: variant(t, mac)}) as r:
            assert r.status == 401, await r.text()
    async with BrokerServer(broker_settings(tmp_path), [], port=0) as again, ClientSession() as http:
        url = f"http://127.0.0.1:{again.port}/sources/webhook"
        async with http.post(url, data=body, headers={SIGNATURE_HEADER: signature}) as r:
            assert r.status == 401 and "replay" in await r.text()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "data must be a JSON object"),
        ({"key": "raw/d/d.csv", "options": "x"}, "run options must be a JSON object"),
    ],
)
def test_ingest_refuses_malformed_event_data_as_not_retryable(fstore, data, message: str) -> None:  # type: ignore[no-untyped-def]
    ctx = StepContext(store=fstore, settings=load_settings(env={}))
    with pytest.raises(InvalidRequest, match=message) as raised:
        ingest.handle(new_event(DATA_ARRIVED, "/t", data), ctx)
    assert raised.value.status == 400 and not raised.value.retryable


def test_a_csv_field_over_the_csv_limit_is_refused_naming_the_file(fstore) -> None:  # type: ignore[no-untyped-def]
    fstore.put("raw/big/big.csv", b"label,a\n1," + b"9" * 200_000 + b"\n")
    ctx = StepContext(store=fstore, settings=load_settings(env={}))
    with pytest.raises(InvalidRequest, match=r"raw/big/big\.csv") as raised:
        ingest.handle(new_event(DATA_ARRIVED, "/t", {"key": "raw/big/big.csv"}), ctx)
    assert not raised.value.retryable
