"""Deploy-time check of a function directory, run in a child process of the function's own environment.

``python -m functions.runtime.check DIR`` imports the function as the host would and finds its handler, then
prints one JSON line: ``{"ok": true, "name", "shape": "knative"|"knflow", "invoke"}``, or ``{"ok": false,
"error", "file", "line"}`` with ``file`` relative to DIR when the fault is in the function's own code. Exit
status 0 when the function loads, 1 when it does not. A child process, so that a broken function (or one that
needs its own dependencies) never touches the process that deploys it.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any

import orjson


def check(path: Path) -> dict[str, Any]:
    """What loading the function directory at ``path`` gives: its shape, or the fault and where it is."""
    from functions.runtime.asgi import AsgiFunction
    from functions.runtime.loader import ShapeError, load_function

    try:
        function = load_function(str(path))
    except SyntaxError as exc:
        return _failure(path, f"{type(exc).__name__}: {exc.msg}", exc.filename, exc.lineno)
    except ShapeError as exc:
        return _failure(path, exc.reason, exc.file, exc.line)
    except Exception as exc:
        file, line = _innermost(path, exc)
        return _failure(path, f"{type(exc).__name__}: {exc}", file, line)
    shape = "knative" if isinstance(function, AsgiFunction) else "knflow"
    invoke = "cloudevent" if function.parses_event else "http"
    return {"ok": True, "name": function.name, "shape": shape, "invoke": invoke}


def _innermost(path: Path, exc: BaseException) -> tuple[str | None, int | None]:
    """The deepest frame of the traceback inside the function directory (where the user's code failed)."""
    inside = [f for f in traceback.extract_tb(exc.__traceback__) if _relative(path, f.filename) is not None]
    return (inside[-1].filename, inside[-1].lineno) if inside else (None, None)


def _relative(path: Path, file: str | None) -> str | None:
    if not file:
        return None
    try:
        return str(Path(file).resolve().relative_to(path.resolve()))
    except ValueError:
        return None


def _failure(path: Path, error: str, file: str | None, line: int | None) -> dict[str, Any]:
    return {"ok": False, "error": error, "file": _relative(path, file) or file, "line": line}


def main(argv: list[str] | None = None) -> int:
    """``python -m functions.runtime.check DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m functions.runtime.check FUNCTION_DIR", file=sys.stderr)
        return 2
    out = os.dup(1)
    os.dup2(2, 1)  # what the function prints while it is imported goes to stderr, not into the verdict
    verdict = check(Path(args[0]))
    sys.stdout.flush()
    os.write(out, orjson.dumps(verdict) + b"\n")
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
