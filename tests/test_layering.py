"""The packages' layering (docs/architecture.md): infra <- eventing <- serving <- functions <- knflow, and the
platform layers below functions know nothing of the ML lifecycle — no import of it, no name of its events or keys."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
#: what each package may import of knflow's own packages (itself aside)
ALLOWED = {
    "infra": set(),
    "eventing": {"infra"},
    "serving": {"infra", "eventing"},
    "functions": {"infra", "eventing", "serving"},
    "knflow": {"infra", "eventing", "serving", "functions"},
}
PLATFORM = ("eventing", "serving", "infra")
#: ``dev.knflow.*`` types the platform layers may name, each with why it is not the lifecycle's
GENERIC_TYPES = {
    "dev.knflow.step.failed": "delivery's own report of an event it could not deliver, for any trigger",
}
_KNFLOW_TYPE = re.compile(r"dev\.knflow\.[A-Za-z0-9_.]*[A-Za-z0-9_]")
#: the lifecycle's artifact prefixes (functions/contract.py, docs/architecture.md); serving's ``models/`` is its own
_LIFECYCLE_KEYS = re.compile(r"^(raw|datasets|features|runs|pipelines)(/|$)")


def _sources(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def _imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every module an absolute import names, wherever it stands (TYPE_CHECKING blocks and functions included), and
    every literal ``importlib.import_module(...)`` / ``__import__(...)`` argument."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (prose may mention the lifecycle's layout as an example)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = []
    for path in _sources(package):
        for line, module in _imports(ast.parse(path.read_text(), str(path))):
            top = module.split(".")[0]
            if top in ALLOWED and top != package and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package]) or 'nothing of knflow'}:\n" + "\n".join(
        wrong
    )


@pytest.mark.parametrize("package", PLATFORM)
def test_platform_layers_name_no_lifecycle_event_type(package: str) -> None:
    wrong = []
    for path in _sources(package):
        for number, line in enumerate(path.read_text().splitlines(), 1):  # comments and docstrings too
            wrong += [
                f"{path.relative_to(ROOT)}:{number} names {name}"
                for name in _KNFLOW_TYPE.findall(line)
                if name not in GENERIC_TYPES
            ]
    assert not wrong, "event types of the lifecycle belong in functions/contract.py:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", PLATFORM)
def test_platform_layers_build_no_lifecycle_artifact_key(package: str) -> None:
    wrong = []
    for path in _sources(package):
        tree = ast.parse(path.read_text(), str(path))
        prose = _docstrings(tree)
        strings = (n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str))
        wrong += [
            f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}"
            for node in strings
            if id(node) not in prose and _LIFECYCLE_KEYS.match(node.value)
        ]
    assert not wrong, "the lifecycle's artifact keys belong in functions/ (settings carry them down):\n" + "\n".join(
        wrong
    )


def test_benchmarks_import_no_test_code() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _sources("bench")
        for line, module in _imports(ast.parse(path.read_text(), str(path)))
        if module.split(".")[0] == "tests"
    ]
    assert not wrong, "what a benchmark shares with the tests lives in bench/ or a package:\n" + "\n".join(wrong)


def test_benchmarks_name_no_directory_of_one_machine() -> None:
    """Peer environments live under the repository (``.venv-peers/``, infra/peers.py); paths come from the checkout."""
    machine = re.compile(r"(?<![\w.~}])/(?:work|home|Users|root|mnt|srv)/")
    wrong = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "bench").rglob("*"))
        if path.suffix in (".py", ".sh", ".lua")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if machine.search(line)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checks_see_what_they_look_for() -> None:
    tree = ast.parse(
        '"""Docs may say raw/."""\nimport functions.contract\nfrom knflow import cli\n'
        'import importlib\nimportlib.import_module("functions.ingest")\nKEY = "raw/x"\n'
    )
    assert {module for _, module in _imports(tree)} == {"functions.contract", "knflow", "importlib", "functions.ingest"}
    keys = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in _docstrings(tree)}
    assert keys == {"functions.ingest", "raw/x"}
    assert _KNFLOW_TYPE.findall("a ``dev.knflow.data.arrived``.") == ["dev.knflow.data.arrived"]
