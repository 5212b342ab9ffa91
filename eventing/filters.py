"""Trigger filters with Knative's semantics: ``filter.attributes`` (exact AND) and the ``filters`` dialect.

The ``filters`` dialect (Knative's new-trigger-filters): a list of expressions, all of which must
match; each is ``{"exact": {...}}``, ``{"prefix": {...}}``, ``{"suffix": {...}}``,
``{"all": [...]}``, ``{"any": [...]}`` or ``{"not": {...}}``. When a trigger has both, ``filters`` wins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from infra.errors import InvalidRequest

_STRING_OPS: dict[str, Callable[[str, str], bool]] = {
    "exact": lambda value, want: value == want,
    "prefix": lambda value, want: value.startswith(want),
    "suffix": lambda value, want: value.endswith(want),
}
_NESTED = ("all", "any", "not")


def attribute(event: CloudEvent, name: str) -> str | None:
    """An attribute or extension of ``event`` as the string filters compare (None if absent; ``data`` is never an
    attribute: the codecs refuse an extension of that reserved name)."""
    value = event.get_attributes().get(name)
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def matches_attributes(event: CloudEvent, attributes: Mapping[str, str] | None) -> bool:
    """Knative ``filter.attributes``: every listed attribute equals its value (case-sensitive)."""
    if not attributes:
        return True
    return all(attribute(event, name) == want for name, want in attributes.items())


def matches_expression(event: CloudEvent, expr: Mapping[str, Any]) -> bool:
    """One expression of the ``filters`` dialect."""
    ((op, arg),) = expr.items()
    if op in _STRING_OPS:
        test = _STRING_OPS[op]
        for name, want in arg.items():
            value = attribute(event, name)
            if value is None or not test(value, want):
                return False
        return True
    if op == "all":
        return all(matches_expression(event, e) for e in arg)
    if op == "any":
        return any(matches_expression(event, e) for e in arg)
    return not matches_expression(event, arg)


def matches(event: CloudEvent, filter: Mapping[str, str] | None, filters: Sequence[Mapping[str, Any]] | None) -> bool:
    """Whether a trigger with ``filter`` and ``filters`` selects ``event`` (``filters`` wins if both)."""
    if filters:
        return all(matches_expression(event, e) for e in filters)
    return matches_attributes(event, filter)


def validate_filters(filters: list[Any]) -> None:
    """Raise ``InvalidRequest`` naming the first malformed expression."""
    for expr in filters:
        _validate(expr)


def _validate(expr: Any) -> None:
    if not isinstance(expr, dict) or len(expr) != 1:
        raise InvalidRequest(f"filter expression {expr!r} must be an object with exactly one dialect key")
    ((op, arg),) = expr.items()
    if op in _STRING_OPS:
        if not isinstance(arg, dict) or not arg or not all(isinstance(v, str) for v in arg.values()):
            raise InvalidRequest(f"filter {op!r} must map attribute names to strings, got {arg!r}")
        if op != "exact" and any(v == "" for v in arg.values()):
            raise InvalidRequest(f"filter {op!r} values must not be empty")
    elif op in ("all", "any"):
        if not isinstance(arg, list) or not arg:
            raise InvalidRequest(f"filter {op!r} must be a non-empty list of expressions")
        for inner in arg:
            _validate(inner)
    elif op == "not":
        _validate(arg)
    else:
        raise InvalidRequest(f"unknown filter dialect {op!r}; expected exact, prefix, suffix, all, any or not")
