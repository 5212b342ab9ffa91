"""Settings resolve defaults < TOML file < environment, and wrong values fail naming the setting."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.errors import ConfigError
from infra.settings import SECTIONS, Settings, load_settings, parse_broker_url, parse_store_url
from tests.fuzzing import fuzz, mutated_bytes


def test_defaults_put_everything_under_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings({"KNFLOW_DATA_DIR": str(tmp_path)}, config_file=_empty(tmp_path))
    assert settings.broker.scheme == "embedded"
    assert settings.broker.path == tmp_path / "events"
    assert settings.artifacts.scheme == "file"
    assert settings.artifacts.path == tmp_path / "artifacts"
    assert settings.broker_port == 8180
    assert settings.grpc_port == 8184


def test_environment_overrides_file(tmp_path: Path) -> None:
    config = tmp_path / "knflow.toml"
    config.write_text(
        'broker = "kafka://10.0.0.1:9092"\ngateway_port = 9000\n[serving]\nmax_replicas = 7\ntarget_concurrency = 3\n'
    )
    env = {"KNFLOW_GATEWAY_PORT": "9100", "KNFLOW_GRPC_PORT": "9101", "KNFLOW_SERVING_MAX_REPLICAS": "2"}
    settings = load_settings(env, config_file=config)
    assert settings.broker.servers == ("10.0.0.1:9092",)
    assert (settings.gateway_port, settings.grpc_port) == (9100, 9101)
    assert settings.serving.max_replicas == 2
    assert settings.serving.target_concurrency == 3.0


def test_s3_url_with_credentials_from_environment() -> None:
    env = {"MINIO_ROOT_USER": "minio", "MINIO_ROOT_PASSWORD": "secret123"}
    loc = parse_store_url("s3://knflow?endpoint=http://127.0.0.1:9000&region=eu-west-1&create=true", env)
    assert (loc.bucket, loc.endpoint, loc.region, loc.secure, loc.create) == (
        "knflow",
        "127.0.0.1:9000",
        "eu-west-1",
        False,
        True,
    )
    assert (loc.access_key, loc.secret_key) == ("minio", "secret123")
    assert "secret123" not in repr(loc)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KNFLOW_BROKER": "redis://x"}, "KNFLOW_BROKER='redis://x': unknown scheme 'redis'; expected embedded://"),
        ({"KNFLOW_BROKER": "kafka://nohost"}, "expected embedded://PATH or kafka://HOST:PORT"),
        ({"KNFLOW_BROKER": "kafka://[::1]:9092,::1:9093"}, "expected embedded://PATH or kafka://HOST:PORT"),
        ({"KNFLOW_BROKER": "kafka://a:0"}, "expected embedded://PATH or kafka://HOST:PORT"),
        ({"KNFLOW_BROKER": "embedded://"}, "KNFLOW_BROKER='embedded://': the embedded broker needs a path"),
        ({"KNFLOW_ARTIFACTS": "file://"}, "KNFLOW_ARTIFACTS='file://': the file store needs a path; expected file://"),
        ({"KNFLOW_ARTIFACTS": "s3://Bad_Bucket?endpoint=http://x:1"}, "not a valid S3 bucket name"),
        ({"KNFLOW_ARTIFACTS": "s3://knflow"}, "no endpoint; expected file://PATH or s3://BUCKET"),
        ({"KNFLOW_ARTIFACTS": "ftp://x"}, "unknown scheme 'ftp'"),
        ({"KNFLOW_GATEWAY_PORT": "eighty"}, "KNFLOW_GATEWAY_PORT='eighty': expected a whole number"),
        ({"KNFLOW_GATEWAY_PORT": "70000"}, "expected a port from 0 to 65535"),
        ({"KNFLOW_GRPC_PORT": "70000"}, "KNFLOW_GRPC_PORT=70000: expected a port from 0 to 65535"),
        ({"KNFLOW_SERVING_MAX_REPLICAS": "-1"}, "KNFLOW_SERVING_MAX_REPLICAS=-1: must not be negative"),
        ({"KNFLOW_FUNCTIONS_IDLE_GRACE_S": "soon"}, "KNFLOW_FUNCTIONS_IDLE_GRACE_S='soon': expected a number"),
        ({"KNFLOW_LOG_FORMAT": "xml"}, "expected json or text"),
        ({"KNFLOW_TRAINING_TARGET": "slurm"}, "KNFLOW_TRAINING_TARGET='slurm': expected local or kubernetes"),
        ({"KNFLOW_TRAINING_TIMEOUT_S": "-5"}, "KNFLOW_TRAINING_TIMEOUT_S=-5.0: must not be negative"),
    ],
)
def test_wrong_values_fail_naming_the_setting_and_the_accepted_forms(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env, config_file=_empty(tmp_path))
    assert message in str(err.value)


def test_unknown_file_settings_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "knflow.toml"
    config.write_text("brokr = 'embedded:///x'\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({}, config_file=config)
    config.write_text("[serving]\nmax_replica = 3\n")
    with pytest.raises(ConfigError, match=r"\[serving\] has unknown setting"):
        load_settings({}, config_file=config)


def test_missing_or_broken_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings({"KNFLOW_CONFIG": str(tmp_path / "nope.toml")})
    bad = tmp_path / "bad.toml"
    bad.write_text("broker = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({"KNFLOW_CONFIG": str(bad)})


def test_broker_urls() -> None:
    assert parse_broker_url("embedded:///var/lib/knflow").path == Path("/var/lib/knflow")
    kafka = parse_broker_url("kafka://a:9092,b:9093?topic=events")
    assert kafka.servers == ("a:9092", "b:9093")
    assert kafka.topic == "events"
    assert parse_broker_url("kafka://[::1]:9092,[fd00::7]:65535").servers == ("[::1]:9092", "[fd00::7]:65535")


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.toml"
    path.write_text("")
    return path


def test_an_s3_location_survives_the_trip_to_a_child_process_through_its_url() -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrSECRET"}
    url = "s3://knflow?endpoint=https://s3.example:9000&region=eu-west-1&create=true"
    location = parse_store_url(url, env)
    assert parse_store_url(location.url, env) == location
    assert "create=true" in location.url and "region=eu-west-1" in location.url
    assert "AKIAEXAMPLE" not in location.url and "wJalrSECRET" not in location.url  # credentials stay in the env


def test_a_section_variable_overrides_one_key_of_the_file_table_and_keeps_the_others(tmp_path: Path) -> None:
    config = tmp_path / "knflow.toml"
    config.write_text("[serving]\nmax_replicas = 7\nqueue_limit = 9\n[security]\nhosts = 5\n")
    settings = load_settings({"KNFLOW_SERVING_MAX_REPLICAS": "2", "KNFLOW_SECURITY_OPEN": "yes"}, config_file=config)
    assert (settings.serving.max_replicas, settings.serving.queue_limit) == (2, 9)
    assert settings.security.open is True
    assert settings.security.hosts == "5"  # a number in a text setting stays text


def test_top_level_settings_named_like_a_section_stay_top_level(tmp_path: Path) -> None:
    env = {"KNFLOW_FUNCTIONS_PORT": "9001", "KNFLOW_FUNCTIONS_CONCURRENCY": "3", "KNFLOW_SERVING": "{}"}
    settings = load_settings(env, config_file=_empty(tmp_path))
    assert settings.functions_port == 9001
    assert settings.functions.concurrency == 3


def test_wrong_values_in_the_file_name_the_key_they_came_from(tmp_path: Path) -> None:
    config = tmp_path / "knflow.toml"
    config.write_text("gateway_port = 'abc'\n")
    with pytest.raises(ConfigError, match=r"gateway_port \(config file\)='abc': expected a whole number"):
        load_settings({}, config_file=config)
    config.write_text("[functions]\nidle_grace_s = 'soon'\n")
    with pytest.raises(ConfigError, match=r"\[functions\] idle_grace_s='soon': expected a number"):
        load_settings({}, config_file=config)
    with pytest.raises(ConfigError, match="KNFLOW_FUNCTIONS_IDLE_GRACE_S='later'"):
        load_settings({"KNFLOW_FUNCTIONS_IDLE_GRACE_S": "later"}, config_file=config)


def _variable_names() -> list[str]:
    top = [f"KNFLOW_{f.name.upper()}" for f in dataclasses.fields(Settings) if f.name not in SECTIONS]
    nested = [f"KNFLOW_{s.upper()}_{f.name.upper()}" for s, kind in SECTIONS.items() for f in dataclasses.fields(kind)]
    return top + nested + [f"KNFLOW_{s.upper()}" for s in SECTIONS] + ["KNFLOW_SERVING_", "KNFLOW_FUNCTIONS_PORT_X"]


VALUES = ["", " ", "0", "-1", "1_0", "1.5", "1e3", "nan", "inf", "true", "Off", "{}", "[1]", "null", "kafka://a:1"]
VALUES += ["kafka://[::1", "s3://[bkt", "s3://bkt?endpoint=[::1", "::1", "[::1]", "[x"]  # brackets: IPv6 in URLs
ENV_SETTINGS, ENV_BUDGET = fuzz("settings: KNFLOW_* variables", examples=150, seconds=6)


@ENV_SETTINGS
@given(st.dictionaries(st.sampled_from(_variable_names()), st.sampled_from(VALUES) | st.text(max_size=8), max_size=4))
def test_any_variables_give_settings_or_an_error_naming_one_of_them(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]
) -> None:
    if not ENV_BUDGET.take():
        return
    env = {**env, "KNFLOW_DATA_DIR": env.get("KNFLOW_DATA_DIR") or str(tmp_path_factory.getbasetemp())}
    try:
        load_settings(env, config_file=_empty(tmp_path_factory.getbasetemp()))
    except ConfigError as err:
        assert any(name in str(err) for name in env), f"{err} names none of {sorted(env)}"


SAMPLE_FILE = b'broker = "kafka://a:9092"\ngateway_port = 9000\n[serving]\nmax_replicas = 7\n[security]\nopen = true\n'
FILE_SETTINGS, FILE_BUDGET = fuzz("settings: knflow.toml", examples=150, seconds=6)


@FILE_SETTINGS
@given(mutated_bytes(SAMPLE_FILE, most=3))
def test_any_config_file_gives_settings_or_a_config_error(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    if not FILE_BUDGET.take():
        return
    config = tmp_path_factory.getbasetemp() / "fuzzed.toml"
    config.write_bytes(raw)
    with contextlib.suppress(ConfigError):
        load_settings({"KNFLOW_DATA_DIR": str(tmp_path_factory.getbasetemp())}, config_file=config)
