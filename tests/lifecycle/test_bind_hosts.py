"""A platform bound to every interface (IPv4 or IPv6) or to IPv6 loopback (``KNFLOW_HOST``) carries a run from
data to a served prediction: its functions emit to the broker, the deploy step reaches the gateway and the client
reaches the model, each through the URL the settings give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from knflow import Client
from tests.ipv6 import needs_ipv6_loopback
from tests.lifecycle.tables import numeric_iris_csv
from tests.live_platform import running_platform

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("host", ["0.0.0.0", *(pytest.param(h, marks=needs_ipv6_loopback) for h in ("::", "::1"))])
def test_a_platform_on_this_host_runs_a_table_to_a_served_prediction(tmp_path: Path, host: str) -> None:
    with running_platform(tmp_path, host=host) as (platform, _):
        client = Client.from_settings(platform.settings)
        assert client.url.startswith("http://127.0.0.1:" if host == "0.0.0.0" else "http://[::1]:")  # :: is IPv6 only
        run = client.submit(
            numeric_iris_csv(), dataset="iris", filename="iris.csv", options={"train": {"model": "mlp", "epochs": 2}}
        )
        outcome = run.wait(timeout=300)
        assert outcome.deployed is not None and outcome.failure is None, outcome.summary()
        answer = run.infer(np.zeros((2, 4), np.float32))
        assert next(iter(answer.values())).shape[0] == 2
