"""The KPA autoscaler's rules on both sides of each boundary: the stable and panic windows, the panic threshold,
the scale-to-zero grace, and the reason each decision gives."""

from __future__ import annotations

import pytest

from serving.autoscaler import Kpa, ScalePolicy

T0 = 1000.0  # a monotonic clock is far from zero


def steady(policy: ScalePolicy, concurrency: float, ticks: int = 10, requests: int = 1) -> Kpa:
    kpa = Kpa(policy)
    for t in range(ticks):
        kpa.observe(T0 + t, concurrency, requests)
    return kpa


def test_a_revision_that_never_had_traffic_wants_no_replica_and_says_why() -> None:
    kpa = Kpa(ScalePolicy())
    for ready in (0, 1):
        decision = kpa.decide(T0, ready)
        assert (decision.desired, decision.reason, decision.panic) == (0, "stable", False)
        assert (decision.stable_concurrency, decision.panic_concurrency) == (0.0, 0.0)


def test_stable_replicas_are_concurrency_over_target_rounded_up() -> None:
    kpa = steady(ScalePolicy(target=2, max_replicas=10, panic_threshold_pct=1000), 5.0)
    decision = kpa.decide(T0 + 9, 3)
    assert (decision.desired, decision.reason, decision.stable_concurrency) == (3, "stable", 5.0)


def test_the_decision_reports_both_windows_averages() -> None:
    kpa = Kpa(ScalePolicy(target=100, stable_window_s=10, panic_window_pct=20))
    for t, c in enumerate([1.0] * 8 + [5.0, 5.0]):
        kpa.observe(T0 + t, c, 1)
    decision = kpa.decide(T0 + 9, 1)
    assert decision.stable_concurrency == pytest.approx(1.8) and decision.panic_concurrency == pytest.approx(
        11 / 3
    )  # t = 7, 8, 9


def test_samples_older_than_the_stable_window_are_dropped_and_the_edge_one_kept() -> None:
    kpa = Kpa(ScalePolicy(stable_window_s=10))
    for t in range(0, 11):
        kpa.observe(T0 + t, 100.0 - t, 1)
    assert [t - T0 for t, _ in kpa.samples] == [float(t) for t in range(0, 11)]  # T0 is exactly 10 s old: kept
    kpa.observe(T0 + 11, 0.0, 0)
    assert kpa.samples[0][0] == T0 + 1


def test_the_average_takes_the_sample_at_the_window_edge() -> None:
    kpa = Kpa(ScalePolicy(target=1, max_replicas=10, stable_window_s=10, panic_threshold_pct=1000))
    kpa.observe(T0, 9.0, 1)
    kpa.observe(T0 + 10, 1.0, 1)
    assert kpa.decide(T0 + 10, 1).stable_concurrency == 5.0  # (9 + 1) / 2: the sample 10 s old counts


@pytest.mark.parametrize(
    ("target", "ready", "concurrency", "threshold_pct", "panics"),
    [
        (1, 1, 2.0, 200, True),  # exactly at the threshold
        (1, 1, 1.99, 200, False),  # just below it
        (1, 1, 1.5, 200, False),  # more replicas wanted, but below the threshold
        (2, 1, 3.0, 200, False),  # capacity is ready replicas times target: 3 / 2 is below 200 %
        (2, 1, 4.0, 200, True),
        (1, 1, 1.0, 50, False),  # above the threshold, but the ready replicas are enough
        (1, 0, 2.0, 200, True),  # no replica ready counts as one's capacity
    ],
)
def test_panic_starts_at_the_threshold_only_when_more_replicas_are_wanted(
    target: float, ready: int, concurrency: float, threshold_pct: float, panics: bool
) -> None:
    policy = ScalePolicy(target=target, max_replicas=10, panic_threshold_pct=threshold_pct)
    decision = steady(policy, concurrency).decide(T0 + 9, ready)
    assert decision.panic is panics and decision.reason == ("panic" if panics else "stable")


def test_panic_lasts_one_stable_window_and_ends_exactly_then() -> None:
    policy = ScalePolicy(target=1, max_replicas=10, stable_window_s=60)
    kpa = Kpa(policy)
    kpa.observe(T0, 4.0, 4)
    assert kpa.decide(T0, 1).panic
    kpa.observe(T0 + 59, 0.0, 1)
    assert kpa.decide(T0 + 59, 4).panic
    kpa.observe(T0 + 60, 0.0, 1)
    assert not kpa.decide(T0 + 60, 4).panic


def test_while_panicking_replicas_never_drop_below_the_last_decision_or_the_ready_ones() -> None:
    kpa = Kpa(ScalePolicy(target=1, max_replicas=10, stable_window_s=60))
    kpa.observe(T0, 4.0, 4)
    assert kpa.decide(T0, 1).desired == 4
    kpa.observe(T0 + 1, 0.0, 1)
    kpa.observe(T0 + 7, 0.0, 1)  # the panic window (6 s) is quiet now
    assert kpa.decide(T0 + 7, 2).desired == 4  # the last decision holds
    assert kpa.decide(T0 + 8, 6).desired == 6  # more ready replicas than decided: keep them


@pytest.mark.parametrize(("ready", "kept"), [(0, 0), (1, 1), (3, 1)])
def test_an_idle_revision_keeps_at_most_one_replica_during_the_grace(ready: int, kept: int) -> None:
    kpa = Kpa(ScalePolicy(target=1, stable_window_s=10, scale_to_zero_grace_s=30))
    kpa.observe(T0, 1.0, 1)
    kpa.observe(T0 + 20, 0.0, 0)
    decision = kpa.decide(T0 + 20, ready)
    assert (decision.desired, decision.reason) == (kept, "grace")


def test_the_grace_ends_exactly_grace_seconds_after_the_last_activity() -> None:
    kpa = Kpa(ScalePolicy(target=1, stable_window_s=10, scale_to_zero_grace_s=30))
    kpa.observe(T0, 1.0, 1)
    kpa.observe(T0 + 29, 0.0, 0)
    assert kpa.decide(T0 + 29, 1).desired == 1
    kpa.observe(T0 + 30, 0.0, 0)
    assert (kpa.decide(T0 + 30, 1).desired, kpa.decide(T0 + 30, 1).reason) == (0, "stable")


@pytest.mark.parametrize(("concurrency", "requests"), [(0.0, 3), (0.5, 0)])
def test_requests_or_any_concurrency_count_as_activity(concurrency: float, requests: int) -> None:
    kpa = Kpa(ScalePolicy(target=1, stable_window_s=10, scale_to_zero_grace_s=30))
    kpa.observe(T0, concurrency, requests)
    kpa.observe(T0 + 11, 0.0, 0)
    assert kpa.decide(T0 + 11, 1).reason == "grace"


def test_traffic_to_a_revision_scaled_to_zero_asks_for_a_replica() -> None:
    kpa = Kpa(ScalePolicy(target=8, max_replicas=4, panic_threshold_pct=1000))
    kpa.observe(T0, 1.0, 1)
    assert kpa.decide(T0, 0).desired == 1


def test_panic_asks_for_the_panic_windows_concurrency_over_target() -> None:
    decision = steady(ScalePolicy(target=2, max_replicas=10), 7.0).decide(T0 + 9, 1)
    assert (decision.panic, decision.desired) == (True, 4)  # ceil(7 / 2)
