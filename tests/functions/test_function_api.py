"""The function API is typed: a user's function that uses ``ctx: Context`` type-checks, and a misuse is caught."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from knflow.scaffold import new_function

ROOT = Path(__file__).parents[2]

USES_EVERY_MEMBER = """

def uses_the_context(ctx: Context, event: CloudEvent) -> int:
    least: int = ctx.step_settings.get("min_rows", 1)
    ctx.store.put(f"runs/{ctx.function}/seen", b"1", content_type="text/plain")
    names = [info.key for info in ctx.store.list("runs/")]
    ctx.log.info("%s saw %d objects; platform data in %s", ctx.function, len(names), ctx.settings.data_dir)
    ctx.emit_sync(new_event("com.example.more", "/functions/x", {"n": least}, cause=event))
    return least if ctx.event is not None else 0


async def emits(ctx: Context, event: CloudEvent) -> None:
    await ctx.emit(event)
"""

MISUSES = """

def misuses(ctx: Context) -> str:
    ctx.stor.get("k")
    return ctx.step_settings
"""


def mypy(directory: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MYPYPATH": str(ROOT)}  # as an installed knflow is found (its packages ship py.typed)
    argv = [sys.executable, "-m", "mypy", "--follow-imports=silent", "--cache-dir", str(cache), "function"]
    return subprocess.run(argv, cwd=directory, env=env, capture_output=True, text=True, timeout=300)


def test_a_function_using_the_context_type_checks_and_a_misuse_does_not(tmp_path: Path) -> None:
    root = new_function("typed", tmp_path / "typed", "knflow")
    func = root / "function" / "func.py"
    func.write_text(func.read_text() + USES_EVERY_MEMBER)
    checked = mypy(root, tmp_path / "cache")
    assert checked.returncode == 0, checked.stdout
    func.write_text(func.read_text() + MISUSES)
    caught = mypy(root, tmp_path / "cache")
    assert caught.returncode == 1
    assert '"Context" has no attribute "stor"' in caught.stdout
    assert 'Incompatible return value type (got "dict[str, Any]", expected "str")' in caught.stdout
