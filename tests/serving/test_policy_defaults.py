"""The autoscaler's and the canary judge's defaults are written once: the settings' and RolloutPolicy's."""

from __future__ import annotations

import dataclasses

from functions.deploy import DeployPolicy
from infra.settings import ServingSettings
from serving.autoscaler import ScalePolicy
from serving.control import RolloutBody
from serving.rollout import RolloutPolicy


def test_a_scale_policy_is_the_serving_settings_kpa_knobs() -> None:
    assert ScalePolicy() == ScalePolicy.of(ServingSettings())
    tuned = ServingSettings(
        target_concurrency=2.0,
        max_replicas=9,
        stable_window_s=6.0,
        panic_window_pct=50.0,
        panic_threshold_pct=150.0,
        scale_to_zero_grace_s=1.0,
    )
    assert dataclasses.astuple(ScalePolicy.of(tuned)) == (2.0, 9, 6.0, 50.0, 150.0, 1.0)


def test_deploy_policy_and_the_rollout_api_default_to_the_canary_judges_thresholds() -> None:
    assert DeployPolicy().thresholds == RolloutPolicy()
    body = RolloutBody()
    assert (body.promote_after_requests, body.max_error_rate) == dataclasses.astuple(RolloutPolicy())
    tuned = DeployPolicy(promote_after_requests=7, max_error_rate=0.5).thresholds
    assert (tuned.promote_after_requests, tuned.max_error_rate) == (7, 0.5)
