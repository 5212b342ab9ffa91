"""The type of each column of a tabular file: numbers, or categories (text); and the refusals that name the column
for what knflow cannot use yet (dates, free text, a column mixing numbers and text)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from infra.errors import InvalidRequest

NUMERIC, CATEGORICAL = "numeric", "categorical"
MISSING = frozenset({"", "na", "nan", "null", "none", "n/a"})
#: A text column with more distinct values than this is free text or an identifier, not a category.
MAX_CATEGORIES = 200
#: ... and so is one where more than half the rows hold a value of their own (once it has this many values).
MIN_CATEGORIES_CHECKED = 20
_DATE = re.compile(
    r"^(\d{4}-\d{1,2}-\d{1,2}([T ]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{1,2}/\d{1,2}/\d{2,4}( \d{1,2}:\d{2}(:\d{2})?)?|\d{1,2}:\d{2}(:\d{2})?)$"
)


@dataclass(frozen=True)
class Column:
    """One feature column of a tabular file and its type (``numeric`` or ``categorical``)."""

    name: str
    type: str


def is_missing(text: str) -> bool:
    """Whether a cell holds no value (empty, NA, NaN, null, none)."""
    return text.lower() in MISSING


def parse_numbers(values: Sequence[str]) -> tuple[np.ndarray, list[int]]:
    """Numbers from text cells (missing and text → NaN) and the rows whose text is not a number."""
    out = np.full(len(values), np.nan, dtype=np.float64)
    bad = []
    for i, text in enumerate(values):
        if is_missing(text):
            continue
        try:
            out[i] = float(text)
        except ValueError:
            bad.append(i)
    return out, bad


def type_column(name: str, values: Sequence[str], *, categorical: bool, where: str) -> tuple[str, np.ndarray]:
    """(type, values) of a feature column of text cells (already stripped): float64 numbers or str categories.

    ``categorical`` forces categories (the run option ``categorical`` lists such columns).
    """
    if categorical:
        return CATEGORICAL, check_categories(name, values, where)
    numbers, bad = parse_numbers(values)
    if not bad:
        return NUMERIC, numbers
    number_rows = len(values) - len(bad) - sum(map(is_missing, values))
    if number_rows:
        examples = ", ".join(repr(values[i][:24]) for i in bad[:3])
        raise InvalidRequest(
            f"{where}: column {name!r} mixes numbers and text: {len(bad)} of {len(values)} rows hold text (e.g. "
            f"{examples}; first at data row {bad[0] + 1}); a column must hold only numbers or only categories "
            f"(list it in the run option 'categorical' to take every value as a category)"
        )
    present = [v for v in values if not is_missing(v)]
    if present and all(_DATE.match(v) for v in present):
        raise date_column(name, present[0], where)
    return CATEGORICAL, check_categories(name, values, where)


def check_categories(name: str, values: Sequence[str], where: str) -> np.ndarray:
    """A categorical column's values as str, refused when some are missing or when it looks like free text."""
    missing = [i for i, v in enumerate(values) if is_missing(v)]
    if missing:
        raise InvalidRequest(
            f"{where}: categorical column {name!r} has {len(missing)} missing values (data rows "
            f"{[i + 1 for i in missing[:5]]}...); fill them with a category of their own (e.g. 'unknown')"
        )
    distinct = len(set(values))
    limit = category_limit(len(values))
    if distinct > limit:
        raise InvalidRequest(
            f"{where}: column {name!r} holds text with {distinct} distinct values in {len(values)} rows (at most "
            f"{limit} are taken as categories): free text and identifiers are not supported as features; drop the "
            f"column or group its values"
        )
    return np.asarray(values, dtype=str)


def category_limit(rows: int) -> int:
    """How many distinct values a categorical column of ``rows`` rows may hold."""
    return min(MAX_CATEGORIES, max(MIN_CATEGORIES_CHECKED, rows // 2))


def date_column(name: str, example: str, where: str) -> InvalidRequest:
    """The refusal of a date or time column."""
    return InvalidRequest(
        f"{where}: column {name!r} holds dates or times (e.g. {example[:32]!r}); dates are not supported as features "
        f"yet: drop the column or turn it into numbers (e.g. day of year, hour)"
    )
