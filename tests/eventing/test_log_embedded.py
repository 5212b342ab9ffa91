"""The embedded log's durability rule: what it fsyncs before answering, and what it lets the next fsync carry (what
every log promises is in test_eventlog_contract.py)."""

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
