"""An event sent without ``time`` is kept as it was sent, and every reader of the history takes it so."""

from __future__ import annotations

import asyncio

import urllib3

from knflow.follow import History


async def test_an_event_sent_without_a_time_is_kept_without_one_and_followed(make_broker) -> None:  # type: ignore[no-untyped-def]
    async with make_broker([]) as broker:
        url = broker.url
        headers = {
            "ce-specversion": "1.0", "ce-id": "no-time-1", "ce-type": "acme.reading", "ce-source": "/sensor",
            "ce-runid": "run-timeless", "content-type": "application/json",
        }  # fmt: skip
        sent = await asyncio.to_thread(urllib3.request, "POST", url + "/", body=b'{"v": 1}', headers=headers)
        assert sent.status < 300, sent.data
        events, _ = await asyncio.to_thread(History(url).page, runid="run-timeless")
    [event] = events
    assert (event.id, event.type, event.time, event.data) == ("no-time-1", "acme.reading", None, {"v": 1})
