"""Fuzzing conventions: Hypothesis, seeded (derandomized), bounded in count and time, with the tries counted.

``fuzz("name", examples=N, seconds=S)`` gives Hypothesis settings plus a ``Budget`` whose ``take()`` says
whether an example may still run; the count of inputs each fuzz target tried is printed after the run.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings

TRIED: Counter[str] = Counter()


@dataclass
class Budget:
    """A fuzz target's time budget; examples after it are skipped (and not counted)."""

    name: str
    seconds: float
    started: float = field(default=0.0)

    def take(self) -> bool:
        now = time.monotonic()
        if not self.started:
            self.started = now
        if now - self.started > self.seconds:
            return False
        TRIED[self.name] += 1
        return True


def fuzz(name: str, *, examples: int = 200, seconds: float = 20.0) -> tuple[settings, Budget]:
    """Seeded settings for ``examples`` inputs, and the target's time budget."""
    return (
        settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.function_scoped_fixture,
                HealthCheck.data_too_large,
            ],
        ),
        Budget(name, seconds),
    )
