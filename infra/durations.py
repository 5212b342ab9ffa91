"""ISO-8601 durations as Knative's delivery fields write them (``PT0.2S``, ``PT1M30S``, ``P1DT1H``), in seconds.

The one grammar every knflow reader of a duration uses: ``P``, then optional days, then optionally ``T`` followed by
at least one of hours, minutes, seconds (decimals allowed on each); at least one part. No years, months or weeks
(their length in seconds is not fixed), no sign, no surrounding blanks: what Knative accepts, a manifest may carry.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import overload

from infra.errors import InvalidRequest

_NUMBER = r"\d+(?:\.\d+)?"
_GRAMMAR = re.compile(
    rf"^P(?!$)(?:(?P<d>{_NUMBER})D)?(?:T(?=\d)(?:(?P<h>{_NUMBER})H)?(?:(?P<m>{_NUMBER})M)?(?:(?P<s>{_NUMBER})S)?)?$"
)
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


@overload
def parse_duration(value: str | float | int) -> float: ...
@overload
def parse_duration(value: None) -> None: ...
def parse_duration(value: str | float | int | None) -> float | None:
    """Seconds of an ISO-8601 duration or of a plain non-negative number; ``None`` (or ``""``) for no duration.

    Anything else raises ``InvalidRequest`` naming the value.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest(f"duration {value!r} is not an ISO-8601 duration like PT0.2S or PT1M, nor seconds")
    if not isinstance(value, str):
        return _seconds(value)
    match = _GRAMMAR.match(value)
    if not match:
        raise InvalidRequest(f"duration {value!r} is not an ISO-8601 duration like PT0.2S or PT1M")
    return sum(float(part) * _SECONDS[unit] for unit, part in match.groupdict().items() if part)


def format_duration(seconds: float) -> str:
    """The ISO-8601 form of a number of seconds (``PT0.2S``), in plain decimals that ``parse_duration`` reads back."""
    return f"PT{Decimal(repr(_seconds(seconds))).normalize():f}S"


def _seconds(value: float) -> float:
    if value < 0 or not math.isfinite(value):
        raise InvalidRequest(f"duration {value!r} must be a finite number of seconds, not negative")
    return float(value)
