"""The platform's token goes with a delivery to its own servers only, however often the same URL is asked for."""

from __future__ import annotations

from infra.auth import own_credentials
from infra.settings import load_settings


def test_the_token_goes_to_the_platforms_own_servers_only_on_every_ask(tmp_path) -> None:
    settings = load_settings(
        {"KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_SECURITY_TOKEN": "secret", "KNFLOW_FUNCTIONS_PORT": "18181"},
        config_file=None,
    )
    credentials = own_credentials(settings)
    own, elsewhere, other_port = (
        "http://127.0.0.1:18181/functions/ingest",
        "http://example.com:18181/functions/ingest",
        "http://127.0.0.1:18999/hook",
    )
    for _ in range(3):  # the answer for a URL is remembered: the same each time
        assert credentials(own) == {"Authorization": "Bearer secret"}
        assert credentials(elsewhere) == {}
        assert credentials(other_port) == {}


def test_a_platform_bound_to_a_name_in_capitals_still_knows_its_own_servers(tmp_path) -> None:
    env = {"KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_SECURITY_TOKEN": "secret", "KNFLOW_HOST": "Knflow.LAN"}
    credentials = own_credentials(load_settings(env, config_file=None))
    assert credentials("http://Knflow.LAN:8180/") == {"Authorization": "Bearer secret"}  # as the servers build it
    assert credentials("http://knflow.lan:8182/v2/models/m/infer") == {"Authorization": "Bearer secret"}
