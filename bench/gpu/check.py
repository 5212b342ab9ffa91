"""The GPU check, in one go: the digits CNN trained through knflow's train step on CUDA beside a plain PyTorch loop
on the same data (samples/s ratio, goal ≥ 0.95; 1 worker, and 2 with NCCL when the machine has 2 GPUs), then a model
replica's cold start and inference (ONNX Runtime's CUDA provider when onnxruntime offers it, else its CPU provider,
said so) and the trained network's inference in PyTorch on the GPU.

    python -m bench.gpu.check            (bench/gpu/check.sh runs it; figures to stdout and $OUT/gpu.json)

Each part reports its own error and the others still run. Without CUDA it refuses to train unless
KNFLOW_GPU_CHECK_ALLOW_CPU=1 (then everything runs on the CPU: how the script is tested off a GPU machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

GOAL = 0.95
ALLOW_CPU = os.environ.get("KNFLOW_GPU_CHECK_ALLOW_CPU") == "1"
ROUNDS = int(os.environ.get("KNFLOW_GPU_CHECK_ROUNDS", "2"))
REPEAT = int(os.environ.get("KNFLOW_GPU_CHECK_REPEAT", "20"))


def part(report: dict[str, Any], name: str, run: Callable[[], Any]) -> Any:
    """Run one part; its figures (or its error and traceback's last lines) go into ``report[name]``."""
    started = time.perf_counter()
    try:
        value = run()
        report[name] = {"ok": True, **(value or {})}
    except BaseException as exc:  # a part's failure is a figure of the check, never the end of it
        if isinstance(exc, KeyboardInterrupt):
            raise
        tail = traceback.format_exc().strip().splitlines()[-6:]
        report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:600], "traceback": tail}
        value = None
    report[name]["seconds"] = round(time.perf_counter() - started, 2)
    print(f"[{name}] {json.dumps(report[name], default=str)}", flush=True)
    return value


def environment() -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": gpus,
        "nccl": torch.distributed.is_nccl_available(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "allow_cpu": ALLOW_CPU,
    }


def on_gpu() -> bool:
    import torch

    if torch.cuda.is_available():
        return True
    if ALLOW_CPU:
        return False
    raise RuntimeError("no CUDA device (set KNFLOW_GPU_CHECK_ALLOW_CPU=1 to run the check on the CPU)")


class Check:
    """The state the parts share: one store with the features, the trained model once there is one."""

    def __init__(self, tmp: Path) -> None:
        from infra.settings import load_settings
        from infra.store import open_store

        self.tmp = tmp
        self.store = open_store(f"file://{tmp}/artifacts")
        self.settings = load_settings(env={"KNFLOW_DATA_DIR": str(tmp)})
        self.features: dict[str, Any] | None = None
        self.onnx: Path | None = None

    def config(self, **changes: Any) -> Any:
        from bench.training.compare import Config

        return Config(repeat=REPEAT, epochs=5, batch_size=256, gpus_per_worker=1 if on_gpu() else 0, **changes)

    def prepare(self) -> dict[str, Any]:
        from bench.training.compare import prepare

        self.features = prepare(self.store, self.config())
        return {"features": self.features["prefix"], "rows": self.features.get("rows")}

    def training(self, workers: int) -> dict[str, Any]:
        """Plain then knflow, ``ROUNDS`` times; medians and the ratio."""
        from bench.training.compare import as_dict, run_knflow, run_plain

        if self.features is None:
            raise RuntimeError("no features: the prepare part failed")
        config = self.config()
        figures: dict[str, list[dict[str, Any]]] = {"plain": [], "knflow": []}
        for _ in range(ROUNDS):
            figures["plain"].append(as_dict(run_plain(self.store, self.features, config, workers)))
            measured = run_knflow(self.store, self.features, config, workers, self.settings)
            figures["knflow"].append(as_dict(measured))
        plain = statistics.median(m["samples_per_s"] for m in figures["plain"])
        knflow = statistics.median(m["samples_per_s"] for m in figures["knflow"])
        self._keep_model()
        return {"device": "cuda" if on_gpu() else "cpu", "workers": workers, "plain_samples_per_s": round(plain, 1),
                "knflow_samples_per_s": round(knflow, 1), "ratio": round(knflow / plain, 4), "goal": GOAL,
                "goal_met": knflow / plain >= GOAL, "config": _config_dict(config), "rounds": figures}  # fmt: skip

    def _keep_model(self) -> None:
        found = sorted(info.key for info in self.store.list("runs/") if info.key.endswith("/model.onnx"))
        if found:
            self.onnx = self.tmp / "model.onnx"
            self.onnx.write_bytes(self.store.get(found[-1]))

    def model(self) -> tuple[Path, dict[str, Any]]:
        """The ONNX model a training left, else one trained here for an epoch (the serving parts stand alone)."""
        from bench.training.compare import run_knflow

        if self.onnx is None:
            if self.features is None:
                self.prepare()
            run_knflow(self.store, self.features, self.config(epochs=2), 1, self.settings)
            self._keep_model()
        assert self.onnx is not None
        return self.onnx, self._signature()

    def _signature(self) -> dict[str, Any]:
        results = [info.key for info in self.store.list("runs/") if info.key.endswith("/result.json")]
        return json.loads(self.store.get(sorted(results)[-1]))["signature"]


def _config_dict(config: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(config)


def main() -> int:
    out = Path(os.environ.get("OUT") or ROOT / "bench" / "gpu" / "out")
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    part(report, "environment", environment)
    with tempfile.TemporaryDirectory(prefix="knflow-gpu-check-") as tmp:
        check = Check(Path(tmp))
        part(report, "prepare", check.prepare)
        part(report, "training_1_worker", lambda: check.training(1))
        if _gpus() >= 2:
            part(report, "training_2_workers", lambda: check.training(2))
        else:
            report["training_2_workers"] = {"ok": False, "skipped": f"{_gpus()} GPU(s): 2 workers need 2"}
        from bench.gpu.serve import replica_cold_start, torch_inference

        part(report, "replica", lambda: asyncio.run(replica_cold_start(*check.model(), Path(tmp))))
        part(report, "torch_inference", lambda: torch_inference(check, on_gpu()))
    (out / "gpu.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: v for k, v in report.items() if k != "environment"}, default=str)[:4000])
    print(f"written: {out / 'gpu.json'}")
    return 0 if all(v.get("ok", True) or v.get("skipped") for v in report.values() if isinstance(v, dict)) else 1


def _gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no torch at all: the environment part says so
        return 0


if __name__ == "__main__":
    sys.exit(main())
