"""The docs read the spec: the routing table in docs/lifecycle.md is the shipped lifecycle pipeline's, as generated."""

from __future__ import annotations

import re
from pathlib import Path

from functions.contract import lifecycle_spec_path
from functions.runtime.pipeline import load_pipeline, routes_table

DOC = Path(__file__).parents[1] / "docs" / "lifecycle.md"


def test_the_documented_routes_are_the_shipped_lifecycle_spec() -> None:
    found = re.search(
        r"<!-- routes of functions/lifecycle.yaml -->\n(.*?)<!-- end of routes -->", DOC.read_text(), re.S
    )
    assert found, "docs/lifecycle.md has lost its generated routes table"
    assert found.group(1) == routes_table(load_pipeline(lifecycle_spec_path()))
