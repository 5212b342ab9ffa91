"""The embedded log's durability rule: what it fsyncs before answering, and what it lets the next fsync carry."""

from __future__ import annotations

import sqlite3

from eventing.events import new_event
from eventing.log_embedded import EmbeddedEventLog, _OffsetCommit

FULL, NORMAL = 2, 1


async def test_appends_are_fsynced_and_a_transaction_of_offset_commits_alone_is_not(tmp_path):
    log = EmbeddedEventLog(tmp_path / "ev")
    await log.start()
    seen: list[int] = []

    def probe(conn: sqlite3.Connection) -> None:
        seen.append(conn.execute("PRAGMA synchronous").fetchone()[0])

    try:
        await log.write(probe)
        await log.write(_OffsetCommit(probe))
        await log.append([new_event("t.appended", "/test", {"n": 1})])
        await log.write(probe)  # back to fsyncing after an offset-only transaction
        assert seen == [FULL, NORMAL, FULL]
    finally:
        await log.close()


async def test_a_group_s_offsets_outlive_a_restart_of_the_log(tmp_path):
    log = EmbeddedEventLog(tmp_path / "ev")
    await log.start()
    consumer = log.consumer("g")
    await consumer.pin()
    await log.append([new_event("t.a", "/test", {"n": n}) for n in range(3)])
    records = await consumer.fetch(10, timeout=1.0)
    for record in records[:2]:
        consumer.ack(record)
    await consumer.close()
    await log.close()

    again = EmbeddedEventLog(tmp_path / "ev")
    await again.start()
    try:
        left = await again.consumer("g").fetch(10, timeout=1.0)
        assert [r.event.get_data()["n"] for r in left] == [2]
    finally:
        await again.close()
