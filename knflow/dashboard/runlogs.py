"""A run's log lines: ``GET /api/runs/{runid}/logs?step=&after=&limit=&wait=`` over the function runner's log.

The platform appends each component's output to ``<data_dir>/logs/<component>.log`` (``knflow.platform``); the
functions' records there carry the event's ``runid`` and, in JSON, the ``function`` that wrote them. The cursor
``next`` is a byte offset in that file: ``after=next`` reads what came since, and ``wait`` long-polls like
``/events`` does, so ``knflow runs logs --follow`` sees lines as they are written.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from infra.errors import InvalidRequest, Unavailable
from infra.guard import access
from infra.http import json_response
from infra.settings import Settings

if TYPE_CHECKING:
    from knflow.dashboard.server import Dashboard

MAX_WAIT_S = 30.0
MAX_LIMIT = 5000
CHUNK = 1024 * 1024
POLL_S = 0.25
#: ``infra.logs``'s text format: ``%(asctime)s %(levelname)s %(name)s [%(runid)s] %(message)s``
TEXT_LINE = re.compile(r"^(?P<time>\S+ \S+) (?P<level>[A-Z]+) (?P<logger>\S+) \[(?P<runid>[^\]]*)\] (?P<message>.*)$")


def log_path(settings: Settings) -> Path:
    """Where the platform on these settings' data directory writes the function runner's output."""
    return settings.data_dir / "logs" / "functions.log"


def add_routes(app: web.Application, dashboard: Dashboard) -> None:
    """Register ``GET /api/runs/{runid}/logs`` on the knflow server's app."""
    app.router.add_get("/api/runs/{runid}/logs", RunLogsApi(dashboard).logs)


class RunLogsApi:
    """The log handler over the knflow server's settings (where the logs are) and history (which runs exist)."""

    def __init__(self, dashboard: Dashboard):
        self.dashboard = dashboard
        self.path = log_path(dashboard.settings)

    @access("viewer")
    async def logs(self, request: web.Request) -> web.Response:
        runid, query = request.match_info["runid"], request.query
        after, limit, wait = _numbers(query)
        await self.dashboard.read_run(request, runid)  # NotFound for a run of another namespace, or none
        if not self.path.exists():
            raise Unavailable(f"no function log at {self.path}: the functions do not run on this platform's data")
        deadline = time.monotonic() + wait
        while True:
            lines, cursor = await asyncio.to_thread(read_lines, self.path, runid, query.get("step"), after, limit)
            if lines or time.monotonic() >= deadline:
                return json_response({"lines": lines, "next": str(cursor)})
            after = cursor
            await asyncio.sleep(POLL_S)


def _numbers(query: Any) -> tuple[int, int, float]:
    try:
        after, limit = int(query.get("after") or 0), int(query.get("limit") or 1000)
        wait = float(query.get("wait") or 0)
    except ValueError:
        raise InvalidRequest("after and limit must be integers, wait a number of seconds") from None
    if after < 0 or not 0 < limit <= MAX_LIMIT or wait < 0:
        raise InvalidRequest(f"after must be >= 0, limit in 1..{MAX_LIMIT}, wait >= 0")
    return after, limit, min(wait, MAX_WAIT_S)


def read_lines(path: Path, runid: str, step: str | None, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Up to ``limit`` of the run's records (of ``step`` when given) in whole lines from byte ``after``; and the
    offset after the last line read. A file shorter than ``after`` was recreated: it is read from its start."""
    needle = runid.encode()
    found: list[dict[str, Any]] = []
    with path.open("rb") as file:
        size = file.seek(0, 2)
        offset = after if after <= size else 0
        file.seek(offset)
        while len(found) < limit:
            chunk = file.read(CHUNK)
            end = chunk.rfind(b"\n") + 1
            if not end and len(chunk) < CHUNK:
                break  # nothing, or a line still being written
            if not end:  # one line longer than a chunk: skipped
                offset += len(chunk)
                continue
            for raw in chunk[:end].splitlines(keepends=True):
                offset += len(raw)
                record = parse_line(raw) if needle in raw else None
                if record is not None and record.pop("runid") == runid and _of_step(record, step):
                    found.append(record)
                    if len(found) == limit:
                        break
            file.seek(offset)
    return found, offset


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """A log line as ``{time, level, logger, step, message, runid}``: knflow's JSON records or its text format."""
    text = raw.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            item = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(item, dict):
            return None
        logger = str(item.get("logger", ""))
        record = {"time": item.get("ts"), "level": item.get("level"), "logger": logger,
                  "step": item.get("function") or step_of(logger), "message": item.get("msg"),
                  "runid": item.get("runid")}  # fmt: skip
        if item.get("exc"):
            record["exc"] = item["exc"]
        return record
    match = TEXT_LINE.match(text)
    if match is None:
        return None
    line = match.groupdict()
    return {**line, "step": step_of(line["logger"])}


def step_of(logger: str) -> str | None:
    """The function a logger name says wrote a record (``functions.train`` -> train), when it says one."""
    parts = logger.split(".")
    if len(parts) >= 2 and parts[0] == "functions" and parts[1] not in ("runtime", "ml", "tuning", "usertrain"):
        return parts[1]
    return None


def _of_step(record: dict[str, Any], step: str | None) -> bool:
    """Whether a record is the step's: written by the function of that name, or by a pipeline's instance of it."""
    if not step:
        return True
    writer = record.get("step") or ""
    return writer == step or writer.endswith(f"-{step}")
