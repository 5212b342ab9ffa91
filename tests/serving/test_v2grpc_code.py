"""The committed gRPC code in serving/v2grpc is exactly what scripts/gen_v2grpc.py generates from the .proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_committed_grpc_code_is_what_the_proto_generates(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_v2grpc", ROOT / "scripts" / "gen_v2grpc.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for path in gen.generate(tmp_path):
        committed = ROOT / "serving" / "v2grpc" / path.name
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run python scripts/gen_v2grpc.py"
