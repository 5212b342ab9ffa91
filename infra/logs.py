"""Structured logging configured once by an entry point; every record carries the current event's ``runid``."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import time
from collections.abc import Iterator

import orjson

current_runid: contextvars.ContextVar[str | None] = contextvars.ContextVar("runid", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class _RunIdFilter(logging.Filter):
    def __init__(self, function: str | None = None):
        super().__init__()
        self.function = function

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "runid"):
            record.runid = current_runid.get()
        if self.function is not None and not hasattr(record, "function"):
            record.function = self.function  # which function's work it was (``knflow runs logs --step``)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, runid and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_logging(level: str = "INFO", fmt: str = "json", stream=None, *, function: str | None = None) -> None:
    """Set up the root logger once (JSON lines or plain text) with the runid filter; ``function``: a function
    worker's name, which its JSON records carry."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_RunIdFilter(function))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(runid)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@contextlib.contextmanager
def bound_runid(runid: str | None) -> Iterator[None]:
    """Within this block every log record carries ``runid``."""
    token = current_runid.set(runid)
    try:
        yield
    finally:
        current_runid.reset(token)
