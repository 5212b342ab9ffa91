"""Reading JSON bodies and documents into pydantic models, with one error that names the field at fault."""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic

from infra.errors import InvalidRequest

M = TypeVar("M", bound=pydantic.BaseModel)


def field_errors(exc: pydantic.ValidationError, limit: int = 3) -> str:
    """``a.b: message; c: message`` for the first ``limit`` errors of a validation."""
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse(model: type[M], raw: Any, where: str = "") -> M:
    """``raw`` checked against ``model``; ``InvalidRequest`` (400) naming each bad field otherwise."""
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as exc:
        prefix = f"{where}: " if where else ""
        raise InvalidRequest(prefix + field_errors(exc)) from None
