#!/usr/bin/env bash
# Fetch, where pip reaches PyPI, the wheels a GPU machine that has PyTorch but cannot install packages lacks for the
# GPU check (knflow's own imports beyond torch, numpy, onnx, onnxruntime, scikit-learn, aiohttp and uvloop), into
# bench/gpu/wheels/ (about 3 MiB; git ignores it). check.sh installs them from there into a temporary directory.
#   bash bench/gpu/wheels.sh [PYTHON_VERSION]      (default 3.12, the GPU machine's python3)
set -euo pipefail
cd "$(dirname "$0")"
version="${1:-3.12}"
rm -rf wheels && mkdir wheels
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d wheels \
  "cloudevents==2.2.0" "deprecation==2.1.0" "orjson==3.13.0" "pydantic==2.14.4" "pydantic_core==2.50.5" \
  "typing-inspection==0.4.5" "annotated-types==0.8.0"
ls wheels
