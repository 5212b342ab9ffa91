#!/usr/bin/env bash
# knflow's GPU check in one go (under 10 minutes, no network): training through knflow's train step on CUDA beside
# a plain PyTorch loop, a model replica's cold start and inference. Figures: stdout and $OUT/gpu.json.
# Run from the repository root:  bash bench/gpu/check.sh      (off a GPU: KNFLOW_GPU_CHECK_ALLOW_CPU=1)
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/bench/gpu/out}"
mkdir -p "$OUT"
export OUT
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [ -d bench/gpu/wheels ] && ! "$PYTHON" -c "import orjson, pydantic, cloudevents" 2>/dev/null; then
  # the packages the machine lacks, fetched beforehand by bench/gpu/wheels.sh (it cannot reach PyPI itself)
  site="$(mktemp -d)"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" bench/gpu/wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # knflow from this checkout, without installing it
echo "python: $PYTHON ($("$PYTHON" --version 2>&1))"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,utilization.gpu --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
else
  echo "nvidia-smi: not found" | tee "$OUT/nvidia-smi.txt"
fi
# each part of check.py reports its own failure; the whole is bounded so the machine's 10 minutes hold
timeout --signal=TERM --kill-after=20 "${KNFLOW_GPU_CHECK_TIMEOUT_S:-540}" \
  env PYTHONUNBUFFERED=1 KNFLOW_LOG_LEVEL="${KNFLOW_LOG_LEVEL:-WARNING}" "$PYTHON" -m bench.gpu.check 2>&1 \
  | tee "$OUT/check.log"
status=${PIPESTATUS[0]}
echo "check exit status: $status (0: every part ran; 1: a part failed, see gpu.json; 124: timed out)"
exit "$status"
