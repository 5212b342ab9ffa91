"""Model runtimes behind one small protocol; ONNX Runtime is the implementation (CUDA when present, else CPU)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


class ModelRuntime(Protocol):
    """Runs one loaded model on named numpy inputs."""

    platform: str
    provider: str

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Named outputs (all of them when ``outputs`` is empty) for named inputs."""
        ...


def choose_providers(available: Sequence[str]) -> list[str]:
    """CUDA first when onnxruntime offers it, CPU always as the fallback."""
    return (
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if "CUDAExecutionProvider" in available
        else ["CPUExecutionProvider"]
    )


def host_threads(requested: int, replicas: int) -> int:
    """Intra-op threads per replica: ``requested`` if positive, else the host's cores shared by the replicas."""
    if requested > 0:
        return requested
    return max(1, (os.cpu_count() or 1) // max(1, replicas))


class OnnxRuntime:
    """An ONNX Runtime inference session with thread settings chosen for the host."""

    platform = "onnxruntime_onnx"

    def __init__(self, path: Path, *, intra_op_threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = choose_providers(ort.get_available_providers())
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.provider = self.session.get_providers()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]
        log.info("loaded %s on %s (%d intra-op threads)", path.name, self.provider, intra_op_threads)

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = ()) -> dict[str, np.ndarray]:
        names = list(outputs) or self.output_names
        values = self.session.run(names, dict(inputs))
        return dict(zip(names, values, strict=True))
