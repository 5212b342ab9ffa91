"""The ``train`` run options of a run that trains with the user's own code: ``entrypoint`` names it, knflow's other
keys say where it lives and how long it may run, and every other key is a parameter handed to it."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from functions.ml.params import check_workers
from infra.errors import InvalidRequest

ENTRYPOINT, CODE, TIMEOUT, SEED = "entrypoint", "code", "timeout_s", "seed"
WORKERS, GPUS = "workers", "gpus_per_worker"
#: keys of ``train`` that are knflow's, not the entrypoint's parameters
RESERVED = (ENTRYPOINT, CODE, TIMEOUT, SEED, WORKERS, GPUS)
_ENTRYPOINT = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class EntrypointOptions:
    """One training with user code: what to call, where it lives, its limits, seed and parameters."""

    entrypoint: str  # "module:function" (a dotted module; the function may be a dotted attribute path)
    code: str | None  # a deployed function's name or an absolute directory; None: an installed package
    timeout_s: float | None
    seed: int
    params: dict[str, Any]
    workers: int = 1
    gpus_per_worker: int = 0

    @property
    def module(self) -> str:
        return self.entrypoint.partition(":")[0]

    @property
    def function(self) -> str:
        return self.entrypoint.partition(":")[2]

    def fingerprint(self, features_prefix: str) -> str:
        """The same for a redelivery of the same training, different when anything it depends on changes."""
        raw = json.dumps(
            {"features": features_prefix, "entrypoint": self.entrypoint, "code": self.code, "seed": self.seed,
             "params": self.params, **self.scale()}, sort_keys=True, default=str,
        )  # fmt: skip
        return hashlib.sha256(raw.encode()).hexdigest()

    def recorded(self) -> dict[str, Any]:
        """The ``params`` of model.trained: the parameters with knflow's keys (so the card says what ran)."""
        return {**self.params, ENTRYPOINT: self.entrypoint, CODE: self.code, SEED: self.seed, **self.scale()}

    def scale(self) -> dict[str, int]:
        """``workers`` and ``gpus_per_worker`` when they are not one process on the CPU (else nothing)."""
        return (
            {WORKERS: self.workers, GPUS: self.gpus_per_worker}
            if (self.workers, self.gpus_per_worker) != (1, 0)
            else {}
        )


def uses_entrypoint(train: Mapping[str, Any]) -> bool:
    """Whether a run's (or trial's) ``train`` options ask for the user's own training code."""
    return train.get(ENTRYPOINT) is not None


def parse_entrypoint(train: Mapping[str, Any], default_seed: int = 0) -> EntrypointOptions:
    """The options from ``train``; InvalidRequest naming the bad key."""
    entrypoint = train.get(ENTRYPOINT)
    if not isinstance(entrypoint, str) or not _ENTRYPOINT.match(entrypoint):
        raise InvalidRequest(f"train.entrypoint must be 'module:function' (e.g. 'train:fit'), got {entrypoint!r}")
    code = train.get(CODE)
    if code is not None and (not isinstance(code, str) or not code.strip()):
        raise InvalidRequest(f"train.code must be a deployed function's name or a directory, got {code!r}")
    timeout = train.get(TIMEOUT)
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0
    ):
        raise InvalidRequest(f"train.timeout_s must be a positive number of seconds, got {timeout!r}")
    seed = train.get(SEED, default_seed)
    if isinstance(seed, bool) or not isinstance(seed, int | float) or not float(seed).is_integer():
        raise InvalidRequest(f"train.seed must be a whole number, got {seed!r}")
    workers, gpus = (_whole(train, name, default) for name, default in ((WORKERS, 1), (GPUS, 0)))
    check_workers(workers, gpus)
    params = {k: v for k, v in train.items() if k not in RESERVED}
    timeout_s = None if timeout is None else float(timeout)
    return EntrypointOptions(entrypoint, code, timeout_s, int(seed), params, workers, gpus)


def _whole(train: Mapping[str, Any], name: str, default: int) -> int:
    value = train.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise InvalidRequest(f"train.{name} must be a whole number, got {value!r}")
    return int(value)
