"""The platform hands its children the whole settings object: top-level settings and every section value that
differs from its default, so a child loads exactly what the parent was started with."""

from __future__ import annotations

from pathlib import Path

from infra.settings import load_settings
from knflow.platform import settings_env


def test_a_child_loads_exactly_the_settings_the_platform_was_started_with(tmp_path: Path) -> None:
    env = {
        "KNFLOW_DATA_DIR": str(tmp_path),
        "KNFLOW_ARTIFACTS": "s3://lake?endpoint=http://s3.local:9000&region=eu-west-1&create=true",
        "KNFLOW_EVENTING_S3_ARRIVALS": "poll",
        "KNFLOW_EVENTING_S3_POLL_INTERVAL_S": "0.5",
        "KNFLOW_EVENTING_WATCH_RAW": "false",
        "KNFLOW_SERVING_MAX_REPLICAS": "7",
        "KNFLOW_PLATFORM_RESTART_LIMIT": "2",
    }
    settings = load_settings(env, config_file=None)

    handed = settings_env(settings)

    assert load_settings(handed, config_file=None) == settings
    assert handed["KNFLOW_EVENTING_WATCH_RAW"] == "false" and handed["KNFLOW_PLATFORM_RESTART_LIMIT"] == "2"
    assert "KNFLOW_EVENTING_DELIVERY_TIMEOUT_S" not in handed  # defaults stay the child's own
