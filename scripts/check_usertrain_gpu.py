"""A check of ``train.entrypoint`` on a machine with a GPU: the README's tutorial function runs in knflow's child
process on ``ctx.device`` (cuda), and the ONNX graph made of the module it returns (moved to the CPU, standardization
in front) answers like PyTorch did. Run from the repository root: ``python scripts/check_usertrain_gpu.py``.

It needs numpy, torch, onnx, onnxruntime, scikit-learn and orjson, and none of knflow's servers."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from functions.ml.features import Splits, fit_transform
from functions.usertrain.child import DATA, JOB
from functions.usertrain.code import UserCode
from functions.usertrain.export import MODEL, REFERENCE
from functions.usertrain.measure import measure
from functions.usertrain.process import run_child

README = Path(__file__).resolve().parents[1] / "README.md"


def tutorial(name: str) -> str:
    after = README.read_text().split(f"<!-- tutorial: {name} -->", 1)[1]
    return after.split("```", 2)[1].split("\n", 1)[1]


def main() -> int:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__}, device {device}", torch.cuda.get_device_name() if device == "cuda" else "")
    digits = load_digits()
    x, y = digits.images.astype(np.float32), digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.15, random_state=0, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.18, random_state=1, stratify=y_rest)
    splits = Splits({"train": x_train, "val": x_val, "test": x_test}, {"train": y_train, "val": y_val, "test": y_test})
    transform = fit_transform(x_train, "image")
    with tempfile.TemporaryDirectory() as tmp:
        code, jobdir = Path(tmp) / "mytrain", Path(tmp) / "job"
        code.mkdir()
        jobdir.mkdir()
        (code / "train.py").write_text(tutorial("train.py"))
        np.savez(jobdir / DATA, **{f"x_{s}": v.astype(np.float64) for s, v in splits.x.items()},
                 **{f"y_{s}": v for s, v in splits.y.items()})  # fmt: skip
        job = {"entrypoint": "train:train", "code_dir": str(code), "params": {"epochs": 8, "lr": 3e-3, "hidden": 64},
               "seed": 0, "device": device, "rank": 0, "world_size": 1, "feature_names": [], "num_classes": 10,
               "task": "classification", "kind": "image", "mean": transform.mean.tolist(),
               "std": transform.std.tolist()}  # fmt: skip
        (jobdir / JOB).write_text(json.dumps(job))
        reports: list[dict] = []

        def answer(message: dict) -> dict:
            if message["op"] == "report":
                reports.append(message)
                return {"stop": False}
            return {"ok": True}

        started = time.monotonic()
        outcome = run_child(UserCode(code, sys.executable, "check"), jobdir, answer, log_path=jobdir / "log",
                            timeout_s=300)  # fmt: skip
        print(f"child: {time.monotonic() - started:.1f} s, exit {outcome.returncode}, {len(reports)} reports")
        log = (jobdir / "log").read_text()
        print(log)
        if outcome.result is None:
            print("FAILED:", outcome.error)
            return 1
        reference = (outcome.result["reference"], np.load(jobdir / REFERENCE))
        measured = measure((jobdir / MODEL).read_bytes(), splits, 10, reference, 1e-4)
    print("last report:", reports[-1]["metrics"], "| measured on ONNX:", measured.metrics)
    print(f"ONNX Runtime vs PyTorch on the test split: max |diff| {measured.max_abs_diff:.3g}")
    ok = f"device {device}" in log and measured.metrics["test_accuracy"] > 0.9 and device == "cuda"
    print("OK" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
