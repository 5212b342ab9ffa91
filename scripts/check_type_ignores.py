"""Refuse a ``# type: ignore`` in the packages mypy checks (``[tool.mypy] files``) that does not name its error code
and give its reason on the line (``# type: ignore[code]  # why``), each silenced error says why; `make test` runs it."""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")
REASON = re.compile(r"^\s*#\s*\S")


def problem(line: str) -> str | None:
    """What is wrong with a source line's ``type: ignore``, or None when it has none or names its code and reason."""
    found = IGNORE.search(line)
    if found is None:
        return None
    if not found["codes"] or found["codes"] == "[]":
        return "type: ignore without an error code"
    if not REASON.match(found["rest"]):
        return "type: ignore without a reason (`# type: ignore[code]  # why`)"
    return None


def python_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The ``.py`` and ``.pyi`` files under each path (a file is taken as it is)."""
    for path in paths:
        if path.is_file():
            yield path
            continue
        for pattern in ("*.py", "*.pyi"):
            yield from sorted(path.rglob(pattern))


def problems(paths: Iterable[Path]) -> list[str]:
    """``file:line: what`` for each ``type: ignore`` under the paths that lacks its code or reason."""
    out = []
    for file in python_files(paths):
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if (what := problem(line)) is not None:
                out.append(f"{file}:{number}: {what}")
    return out


def checked_packages() -> list[Path]:
    """The folders ``[tool.mypy] files`` in pyproject.toml names."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return [ROOT / name for name in tomllib.load(fh)["tool"]["mypy"]["files"]]


def main(argv: list[str]) -> int:
    roots = [Path(arg) for arg in argv] or checked_packages()
    found = problems(roots)
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
