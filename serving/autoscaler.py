"""Knative KPA scaling decisions: target concurrency per replica, stable and panic windows, scale to zero.

Pure logic: the activator feeds it time-averaged in-flight concurrency once per tick and asks
for the desired replica count; nothing here touches processes.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from infra.settings import ServingSettings

_SERVING = ServingSettings()  # the defaults are the [serving] settings' defaults


@dataclass(frozen=True)
class ScalePolicy:
    """The KPA knobs of one revision."""

    target: float = _SERVING.target_concurrency  # in-flight requests per replica
    max_replicas: int = _SERVING.max_replicas
    stable_window_s: float = _SERVING.stable_window_s
    panic_window_pct: float = _SERVING.panic_window_pct
    panic_threshold_pct: float = _SERVING.panic_threshold_pct
    scale_to_zero_grace_s: float = _SERVING.scale_to_zero_grace_s

    @classmethod
    def of(cls, serving: ServingSettings) -> ScalePolicy:
        """The policy the ``[serving]`` settings describe."""
        return cls(
            target=serving.target_concurrency,
            max_replicas=serving.max_replicas,
            stable_window_s=serving.stable_window_s,
            panic_window_pct=serving.panic_window_pct,
            panic_threshold_pct=serving.panic_threshold_pct,
            scale_to_zero_grace_s=serving.scale_to_zero_grace_s,
        )

    @property
    def panic_window_s(self) -> float:
        return self.stable_window_s * self.panic_window_pct / 100


@dataclass(frozen=True)
class Decision:
    """What the autoscaler wants and why."""

    desired: int
    stable_concurrency: float
    panic_concurrency: float
    panic: bool
    reason: str


class Kpa:
    """Desired replicas from concurrency samples, Knative style."""

    def __init__(self, policy: ScalePolicy):
        self.policy = policy
        self.samples: deque[tuple[float, float]] = deque()  # (time, average concurrency over the tick)
        self.panic_until = 0.0
        self.last_active = -math.inf
        self.last_desired = 0

    def observe(self, now: float, concurrency: float, requests: int) -> None:
        """One tick's time-averaged in-flight concurrency and the requests that arrived in it."""
        self.samples.append((now, concurrency))
        while self.samples and self.samples[0][0] < now - self.policy.stable_window_s:
            self.samples.popleft()
        if requests or concurrency > 0:
            self.last_active = now

    def _average(self, now: float, window: float) -> float:
        values = [c for t, c in self.samples if t >= now - window]
        return sum(values) / len(values) if values else 0.0

    def decide(self, now: float, ready: int) -> Decision:
        """The replica count wanted now, given ``ready`` replicas."""
        p = self.policy
        stable = self._average(now, p.stable_window_s)
        panic_c = self._average(now, p.panic_window_s)
        want_stable = math.ceil(stable / p.target)
        want_panic = math.ceil(panic_c / p.target)
        capacity = max(ready, 1) * p.target
        if panic_c / capacity >= p.panic_threshold_pct / 100 and want_panic > ready:
            self.panic_until = now + p.stable_window_s
        panic = now < self.panic_until
        if panic:
            desired, reason = max(want_panic, self.last_desired, ready), "panic"
        else:
            desired, reason = want_stable, "stable"
        if desired == 0 and now - self.last_active < p.scale_to_zero_grace_s:
            desired, reason = max(min(ready, 1), 0), "grace"
        desired = max(0, min(desired, p.max_replicas))
        self.last_desired = desired
        return Decision(desired, stable, panic_c, panic, reason)
