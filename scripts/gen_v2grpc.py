"""Regenerate serving/v2grpc/ (messages and service stubs) from grpc_predict_v2.proto with grpcio-tools.

    python scripts/gen_v2grpc.py [--out DIR]

Run from anywhere; without ``--out`` it rewrites the committed files. tests/serving/test_v2grpc_code.py
checks that the committed code is what this script generates.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path("serving/v2grpc")
PROTO = PACKAGE / "grpc_predict_v2.proto"
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    """Write the generated modules into ``out`` (imports as ``serving.v2grpc``); their paths."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{ROOT}", f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"]
        if protoc.main([*args, str(ROOT / PROTO)]) != 0:
            raise SystemExit(f"protoc failed on {PROTO}")
        out.mkdir(parents=True, exist_ok=True)
        for name in GENERATED:
            shutil.copy(Path(tmp) / PACKAGE / name, out / name)
    return [out / name for name in GENERATED]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / PACKAGE)
    for path in generate(parser.parse_args().out):
        print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
