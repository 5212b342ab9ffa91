"""docs/architecture.md stays true: the files, processes, triggers and event types it names are the code's."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from functions import contract
from functions.runtime.pipeline import load_pipeline, pipeline_triggers
from knflow.platform import COMPONENTS
from serving.logevents import INFERENCE_REQUEST

ROOT = Path(__file__).parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()
PACKAGES = ("infra", "eventing", "serving", "functions", "knflow")


def _paragraph(package: str) -> str:
    found = re.search(rf"^\*\*`{package}/` — .*?(?=^\*\*`|^## )", DOC, re.S | re.M)
    assert found, f"docs/architecture.md has no paragraph for {package}/"
    return found.group(0)


def test_every_package_has_its_paragraph_and_every_module_it_names_exists() -> None:
    missing = []
    for package in PACKAGES:
        for name in re.findall(r"`([\w/]+\.(?:py|yaml))`", _paragraph(package)):
            if not (ROOT / name).is_file() and not any((ROOT / package).rglob(name)):  # runtime/'s by bare name
                missing.append(f"{package}/{name}")
    assert not missing, f"docs/architecture.md names files that are not there: {missing}"


def test_every_path_the_doc_names_exists() -> None:
    packages = "|".join(PACKAGES)
    paths = set(re.findall(rf"`((?:{packages})/[\w/.]*)`", DOC))
    assert paths, "the doc names no paths any more"
    assert [p for p in sorted(paths) if not (ROOT / p).exists()] == []


def test_the_processes_are_the_platform_components() -> None:
    table = re.findall(r"^\| [\w ]+ \| `([\w.]+)`", DOC, re.M)
    assert table == [component.module for component in COMPONENTS]


def test_the_named_triggers_and_event_types_are_the_lifecycle_spec() -> None:
    spec = load_pipeline(contract.lifecycle_spec_path())
    triggers = {trigger.name for trigger in pipeline_triggers(spec, lambda step: "http://x")}
    named = set(re.findall(r"`(lifecycle-[\w-]+)`", DOC))
    assert named and named <= triggers
    types = set(re.findall(r"`(dev\.knflow\.[\w.]+)`", DOC))
    assert types <= {*contract.EVENT_TYPES, contract.RETRAIN_STARTED}
    steps = {step.name for step in spec.steps}
    table = re.findall(r"^   \| (\w+) \| `", DOC, re.M)
    assert table and set(table) <= steps
    assert INFERENCE_REQUEST in DOC


def test_every_module_starts_with_a_docstring_saying_what_it_is_for() -> None:
    """A newcomer reads a package from its modules' docstrings (STYLE.md); generated gRPC code aside."""
    bare = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "v2grpc" not in path.parts and not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert bare == []
