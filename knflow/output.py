"""How the CLI prints records: aligned tables on a terminal, tab-separated lines when piped, JSON or YAML on request."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

import orjson
import yaml

FORMATS = ("table", "json", "yaml")


def cell(value: Any) -> str:
    """A value as a table shows it: floats to 4 significant digits, nothing for None, JSON for structures."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    """Rows under a header: padded columns on a terminal, tab-separated when ``out`` is not one."""
    out = out or sys.stdout
    lines = [list(header), *([cell(v) for v in row] for row in rows)]
    lines = [[c.replace("\t", " ").replace("\n", " ") for c in line] for line in lines]
    if not out.isatty():
        out.writelines("\t".join(line) + "\n" for line in lines)
        return
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        out.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")


def document(value: Any, fmt: str, out: TextIO | None = None) -> None:
    """``value`` as JSON (indented) or YAML."""
    out = out or sys.stdout
    if fmt == "yaml":
        out.write(yaml.safe_dump(value, sort_keys=False, allow_unicode=True))
    else:
        out.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
