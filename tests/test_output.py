"""The CLI's record printing: aligned columns on a terminal, tab-separated when piped, JSON and YAML documents."""

from __future__ import annotations

import io
import json

import yaml

from knflow.output import document, table


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


ROWS = [["run-1", 0.912345, None, {"lr": 0.01}], ["run-22", 3, True, "a\tb"]]


def test_a_terminal_gets_aligned_columns_and_a_pipe_gets_tabs() -> None:
    shown, piped = Terminal(), io.StringIO()
    table(("RUN", "VALUE", "OK", "PARAMS"), ROWS, shown)
    table(("RUN", "VALUE", "OK", "PARAMS"), ROWS, piped)
    assert shown.getvalue().splitlines() == [
        "RUN     VALUE   OK    PARAMS",
        'run-1   0.9123        {"lr":0.01}',
        "run-22  3       true  a b",
    ]
    assert piped.getvalue().splitlines() == [
        "RUN\tVALUE\tOK\tPARAMS",
        'run-1\t0.9123\t\t{"lr":0.01}',
        "run-22\t3\ttrue\ta b",
    ]


def test_documents_parse_back() -> None:
    value = {"runs": [{"runid": "run-1", "duration_s": 1.5, "model": None}]}
    as_json, as_yaml = io.StringIO(), io.StringIO()
    document(value, "json", as_json)
    document(value, "yaml", as_yaml)
    assert json.loads(as_json.getvalue()) == value == yaml.safe_load(as_yaml.getvalue())
