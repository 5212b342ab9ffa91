"""``knflow models``: register, list, alias, show and audit through the command line."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from knflow.cli import main
from tests.serving.helpers import mlp_onnx


def test_models_command_registers_lists_and_moves_aliases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KNFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("KNFLOW_ARTIFACTS", raising=False)
    model = tmp_path / "m.onnx"
    model.write_bytes(mlp_onnx())
    assert main(["models", "register", "digits", str(model)]) == 0
    assert main(["models", "register", "digits", str(model)]) == 0
    assert main(["models", "alias", "digits", "production", "1", "--actor", "tester"]) == 0
    capsys.readouterr()
    assert main(["models", "ls"]) == 0
    assert capsys.readouterr().out.split() == ["digits"]
    assert main(["models", "ls", "digits"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].rstrip().endswith("production")
    assert main(["models", "show", "digits", "production"]) == 0
    assert orjson.loads(capsys.readouterr().out)["version"] == 1
    assert main(["models", "audit", "digits"]) == 0
    actions = [orjson.loads(line)["action"] for line in capsys.readouterr().out.splitlines()]
    assert actions == ["register", "register", "set_alias"]
    assert main(["models", "show", "digits", "9"]) == 2  # NotFound -> a message, exit status 2
