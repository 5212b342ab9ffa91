"""Training hyperparameters: every field can be set by run options or by a tuning trial."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from infra.errors import InvalidRequest


@dataclass(frozen=True)
class TrainParams:
    """Hyperparameters of one training; every field can be set by run options or a trial."""

    model: str = "auto"
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    optimizer: str = "adam"
    hidden: int = 512
    layers: int = 1
    dropout: float = 0.3
    channels: int = 20
    seed: int = 0
    workers: int = 1  # processes of one data-parallel training (DistributedDataParallel when more than one)
    gpus_per_worker: int = 0  # GPUs each worker gets; 0: CPU (gloo), else CUDA (NCCL)


def parse_params(raw: dict[str, Any]) -> TrainParams:
    """Params from a dict (run options merged with trial assignments); bad names or values raise InvalidRequest."""
    known = {f.name: f.type for f in dataclasses.fields(TrainParams)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise InvalidRequest(f"unknown training parameters {unknown} (known: {sorted(known)})")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        kind = {"int": int, "float": float, "str": str}[str(known[name])]
        try:
            values[name] = kind(value) if kind is not int else round(float(value))
        except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's 1e400 is inf, no int
            raise InvalidRequest(f"training parameter {name}={value!r} is not a {kind.__name__}") from None
    params = TrainParams(**values)
    if params.epochs < 1 or params.batch_size < 1 or not params.lr > 0 or params.optimizer not in ("adam", "sgd"):
        raise InvalidRequest(f"bad training parameters {params}")
    check_workers(params.workers, params.gpus_per_worker)
    return params


def check_workers(workers: int, gpus_per_worker: int) -> None:
    """InvalidRequest unless ``workers`` >= 1 and 0 <= ``gpus_per_worker`` <= 8 (a node's usual count)."""
    if not 1 <= workers <= 64:
        raise InvalidRequest(f"train.workers must be a whole number from 1 to 64, got {workers}")
    if not 0 <= gpus_per_worker <= 8:
        raise InvalidRequest(f"train.gpus_per_worker must be a whole number from 0 to 8, got {gpus_per_worker}")
