"""The serving parts of the GPU check: a model replica's cold start (forked from knflow's replica zygote, as the
gateway does, to its first answer) and inference through its socket, with the provider ONNX Runtime chose; and the
trained network's inference in PyTorch on the GPU (what a GPU serves when onnxruntime has no CUDA provider)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

WARM_REQUESTS = {1: 300, 256: 60}  # rows per request → requests timed
COLD_ROUNDS = 6
NO_CUDA = "onnxruntime offers no CUDAExecutionProvider (onnxruntime-gpu is not installed): replicas ran on the CPU"


def _body(name: str, shape: list[int], rows: int) -> bytes:
    """A V2 JSON request of ``rows`` random digit images (or rows)."""
    one = [d for d in shape[1:]]
    data = np.random.default_rng(rows).integers(0, 17, (rows, *one)).astype(np.float32)
    tensor = {"name": name, "datatype": "FP32", "shape": [rows, *one], "data": data.reshape(-1).tolist()}
    return orjson.dumps({"inputs": [tensor]})


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(s * 1e3 for s in samples)
    return {"p50_ms": round(statistics.median(ordered), 3), "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
            "n": len(ordered)}  # fmt: skip


async def replica_cold_start(onnx: Path, signature: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Zygote start, then ``COLD_ROUNDS`` times: fork a replica → its first answer (cold; the first round includes
    the zygote's own start, as a gateway's first replica does), then warm requests."""
    from dataclasses import asdict

    import onnxruntime as ort

    from serving import dataplane
    from serving.replica import ReplicaSpec
    from serving.replicas import ReplicaClient, replica_server
    from serving.runtime import OnnxRuntime

    available = ort.get_available_providers()
    provider = OnnxRuntime(onnx).provider
    inputs, outputs = signature["inputs"], signature["outputs"]
    bodies = {rows: _body(inputs[0]["name"], inputs[0]["shape"], rows) for rows in WARM_REQUESTS}
    zygote, cold, warm = replica_server(), [], {rows: [] for rows in WARM_REQUESTS}
    started = time.perf_counter()
    await zygote.ensure_running()
    first_fork_s = None
    try:
        for round_ in range(COLD_ROUNDS):
            where = {"socket": str(tmp / f"replica-{round_}.sock"), "model_path": str(onnx), "model": "digits"}
            spec = ReplicaSpec.from_dict({**where, "version": "1", "inputs": inputs, "outputs": outputs})
            began = time.perf_counter()
            client = ReplicaClient(await zygote.spawn(asdict(spec)), spec)
            first_fork_s = first_fork_s or time.perf_counter() - started
            await client.connect(120)
            status, answer = await client.infer(bodies[1], dataplane.JSON)
            cold.append(time.perf_counter() - began)
            if status != 200:
                raise RuntimeError(f"the replica answered {status}: {answer[:300]!r}")
            for rows, times in warm.items():
                for _ in range(WARM_REQUESTS[rows] // COLD_ROUNDS):
                    t = time.perf_counter()
                    status, answer = await client.infer(bodies[rows], dataplane.JSON)
                    times.append(time.perf_counter() - t)
            await client.stop()
    finally:
        await zygote.stop()
    note = "" if "CUDAExecutionProvider" in available else NO_CUDA
    return {
        "provider": provider, "available_providers": available, "note": note,
        "zygote_start_and_first_fork_s": round(first_fork_s or 0, 3), "first_replica_s": round(cold[0], 4),
        "cold_start_warm_zygote": _ms(cold[1:]),
        "cold_start_s": [round(c, 4) for c in cold],
        "warm": {f"{rows}_rows": _ms(times) for rows, times in warm.items()},
    }  # fmt: skip


def torch_inference(check: Any, gpu: bool) -> dict[str, Any]:
    """The trained network from its last checkpoint onto the device (cold: load, move, first answer), then warm
    forward passes of 1 and 256 rows."""
    import torch

    from functions.ml.features import read_features
    from functions.ml.params import parse_params
    from functions.ml.training import restore, state_from_bytes

    check.model()
    result_keys = sorted(i.key for i in check.store.list("runs/") if i.key.endswith("/result.json"))
    prefix = result_keys[-1].rsplit("/", 1)[0] + "/"
    result = orjson.loads(check.store.get(result_keys[-1]))
    splits, transform, manifest = read_features(check.store, result["features"]["prefix"])
    dev = torch.device("cuda" if gpu else "cpu")
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    x = {rows: torch.as_tensor(splits.x["test"][:rows], dtype=torch.float32) for rows in WARM_REQUESTS}
    began = time.perf_counter()
    state = state_from_bytes(check.store.get(prefix + "checkpoint.pt"))
    params = parse_params({**result["params"], "workers": 1, "gpus_per_worker": 0})
    model = restore(transform, manifest["num_classes"], params, result["task"], state).model.to(dev).eval()
    with torch.no_grad():
        model(x[1].to(dev))
        sync()
        cold = time.perf_counter() - began
        warm = {}
        for rows, count in WARM_REQUESTS.items():
            times = []
            for _ in range(count):
                t = time.perf_counter()
                model(x[rows].to(dev)).cpu()  # the answer back on the host, as a server sends it
                times.append(time.perf_counter() - t)
            warm[f"{rows}_rows"] = _ms(times)
    return {"device": str(dev), "cold_s": round(cold, 4), "warm": warm}
