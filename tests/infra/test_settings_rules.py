"""The settings' rules one by one, in-process: each refusal's whole message, each boundary on both sides, each source
of a value in its order (``make mutate MODULES=infra/settings.py`` runs these against the mutants)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infra.errors import ConfigError
from infra.settings import StoreLocation, load_settings, parse_broker_url, parse_store_url, split_authority

BROKER_FORMS = "embedded://PATH or kafka://HOST:PORT[,HOST:PORT...][?topic=NAME]"
FORMS = "file://PATH or s3://BUCKET?endpoint=http://HOST:PORT[&region=R][&create=true]"
S3 = "s3://bkt?endpoint=http://s3.local:9000"


def refused(env: dict[str, str], tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings({"KNFLOW_DATA_DIR": str(tmp_path), **env}, config_file=None)
    return str(caught.value)


# -- ports and the top-level scalars -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["BROKER", "FUNCTIONS", "GATEWAY", "DASHBOARD", "GRPC"])
def test_every_port_takes_0_to_65535_and_refuses_one_past_each_end(tmp_path: Path, name: str) -> None:
    variable = f"KNFLOW_{name}_PORT"
    for port in ("0", "65535"):
        settings = load_settings({"KNFLOW_DATA_DIR": str(tmp_path), variable: port}, config_file=None)
        assert getattr(settings, f"{name.lower()}_port") == int(port)
    for port in ("-1", "65536"):
        assert refused({variable: port}, tmp_path) == f"{variable}={port}: expected a port from 0 to 65535"


def test_a_namespace_is_a_dns_label(tmp_path: Path) -> None:
    assert load_settings({"KNFLOW_NAMESPACE": "team-a"}, config_file=None).namespace == "team-a"
    assert refused({"KNFLOW_NAMESPACE": "Team_A"}, tmp_path) == (
        "KNFLOW_NAMESPACE='Team_A': expected a DNS label (lowercase, digits, '-')"
    )


@pytest.mark.parametrize("level", ["debug", "INFO", "warning", "ERROR"])
def test_the_four_log_levels_in_either_case_are_taken(tmp_path: Path, level: str) -> None:
    assert load_settings({"KNFLOW_LOG_LEVEL": level}, config_file=None).log_level == level


@pytest.mark.parametrize("form", ["json", "text"])
def test_json_and_text_are_the_log_formats(form: str) -> None:
    assert load_settings({"KNFLOW_LOG_FORMAT": form}, config_file=None).log_format == form


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KNFLOW_LOG_LEVEL": "TRACE"}, "KNFLOW_LOG_LEVEL='TRACE': expected DEBUG, INFO, WARNING or ERROR"),
        ({"KNFLOW_LOG_FORMAT": "Text"}, "KNFLOW_LOG_FORMAT='Text': expected json or text"),
        ({"KNFLOW_EVENTING_S3_ARRIVALS": "all"},
         "KNFLOW_EVENTING_S3_ARRIVALS='all': expected poll, notifications, both"),
        ({"KNFLOW_TRAINING_TARGET": "slurm"}, "KNFLOW_TRAINING_TARGET='slurm': expected local or kubernetes"),
        ({"KNFLOW_SECURITY_OPEN_INGRESS": "yes"}, "KNFLOW_SECURITY_OPEN_INGRESS='yes': expected auto, true or false"),
        ({"KNFLOW_SECURITY_OPEN_INFERENCE": "1"}, "KNFLOW_SECURITY_OPEN_INFERENCE='1': expected auto, true or false"),
        ({"KNFLOW_SERVING_TARGET": "kserve"}, "KNFLOW_SERVING_TARGET='kserve': expected local or knative"),
        (
            {"KNFLOW_SERVING_TARGET": "knative"},
            "KNFLOW_SERVING_TARGET=knative needs KNFLOW_SERVING_MODEL_TEMPLATE (the model Service `knflow manifests` "
            "renders into the deploy function's environment)",
        ),
        (
            {"KNFLOW_SERVING_MODEL": "digits"},
            "KNFLOW_SERVING_MODEL='digits' needs KNFLOW_SERVING_MODEL_VERSION (1 or more)",
        ),
        ({"KNFLOW_HOST": "localhost:8080"},
         "KNFLOW_HOST='localhost:8080': expected an address or a name, without a port (an IPv6 address bare or in "
         "brackets)"),
    ],
)  # fmt: skip
def test_each_refusal_names_the_setting_its_value_and_what_it_takes(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    assert refused(env, tmp_path) == message


def test_one_model_server_takes_version_1_and_up(tmp_path: Path) -> None:
    env = {"KNFLOW_SERVING_MODEL": "digits", "KNFLOW_SERVING_MODEL_VERSION": "1"}
    assert load_settings(env, config_file=None).serving.model_version == 1
    assert "KNFLOW_SERVING_MODEL_VERSION (1 or more)" in refused({**env, "KNFLOW_SERVING_MODEL_VERSION": "0"}, tmp_path)


def test_the_environment_is_read_when_none_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KNFLOW_GATEWAY_PORT", "9182")
    settings = load_settings(config_file=None)
    assert (settings.data_dir, settings.gateway_port) == (tmp_path, 9182)


def test_the_data_dir_defaults_to_dot_knflow_in_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = load_settings({}, config_file=None)
    assert settings.data_dir == tmp_path / ".knflow"
    assert settings.broker.path == tmp_path / ".knflow" / "events"


def test_knflow_toml_in_the_working_directory_is_read_when_no_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings({}, config_file=None).gateway_port == 8182  # no file there: the defaults
    (tmp_path / "knflow.toml").write_text("gateway_port = 9000\n")
    assert load_settings({}, config_file=None).gateway_port == 9000


# -- where a wrong value came from -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("host", '"[localhost]"', "host (config file)='[localhost]': expected an address or a name"),
        ("broker", '"kafka://nohost"', "broker (config file)='kafka://nohost': expected embedded://PATH or kafka://"),
        ("artifacts", '"ftp://x"', "artifacts (config file)='ftp://x': unknown scheme 'ftp'"),
    ],
)
def test_a_wrong_location_or_host_in_the_file_is_named_by_its_key(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    config = tmp_path / "knflow.toml"
    config.write_text(f"{key} = {value}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings({}, config_file=config)
    with pytest.raises(ConfigError, match=re.escape(message.replace(f"{key} (config file)", f"KNFLOW_{key.upper()}"))):
        load_settings({f"KNFLOW_{key.upper()}": value.strip('"')}, config_file=config)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("gateway_port = 70000", "gateway_port (config file)=70000: expected a port from 0 to 65535"),
        ('namespace = "A"', "namespace (config file)='A': expected a DNS label (lowercase, digits, '-')"),
        ('log_format = "xml"', "log_format (config file)='xml': expected json or text"),
        ('log_level = "loud"', "log_level (config file)='loud': expected DEBUG, INFO, WARNING or ERROR"),
        ('[eventing]\ns3_arrivals = "x"', "[eventing] s3_arrivals='x': expected poll, notifications, both"),
        ('[training]\ntarget = "x"', "[training] target='x': expected local or kubernetes"),
        ('[security]\nopen_ingress = "x"', "[security] open_ingress='x': expected auto, true or false"),
        ('[security]\nopen_inference = "x"', "[security] open_inference='x': expected auto, true or false"),
        ('[serving]\ntarget = "x"', "[serving] target='x': expected local or knative"),
        ('[serving]\ntarget = "knative"', "[serving] target=knative needs [serving] model_template (the model Service "
         "`knflow manifests` renders into the deploy function's environment)"),
        ('[serving]\nmodel = "m"', "[serving] model='m' needs [serving] model_version (1 or more)"),
        ("[serving]\nmax_replicas = -1", "[serving] max_replicas=-1: must not be negative"),
        # pydantic's lax int took a TOML true for 1
        ("gateway_port = true", "gateway_port (config file)=true: expected a whole number"),
        ("[serving]\nmax_replicas = false", "[serving] max_replicas=false: expected a whole number"),
        ("[eventing]\nretention_hours = true", "[eventing] retention_hours=true: expected a number"),
    ],
)  # fmt: skip
def test_a_wrong_value_in_the_file_is_named_by_its_key(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "knflow.toml"
    config.write_text(toml + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({"KNFLOW_DATA_DIR": str(tmp_path)}, config_file=config)
    assert str(caught.value) == message


def test_an_unknown_setting_in_the_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "knflow.toml"
    config.write_text("gateway = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({}, config_file=config)
    assert str(caught.value).startswith(f"{config}: unknown setting(s) ['gateway']; known: ['artifacts', 'broker',")


def test_s3_credentials_come_from_the_environment_given_to_load_settings(tmp_path: Path) -> None:
    env = {"KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_ARTIFACTS": S3, "AWS_ACCESS_KEY_ID": "given-key",
           "AWS_SECRET_ACCESS_KEY": "given-secret"}  # fmt: skip
    artifacts = load_settings(env, config_file=None).artifacts
    assert (artifacts.access_key, artifacts.secret_key) == ("given-key", "given-secret")


def test_a_section_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "knflow.toml"
    config.write_text('serving = "fast"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings({}, config_file=config)
    assert str(caught.value) == "[serving] in the config file must be a table"


def test_a_value_of_the_wrong_type_says_what_the_setting_takes(tmp_path: Path) -> None:
    assert (
        refused({"KNFLOW_SECURITY_OPEN": "maybe"}, tmp_path) == "KNFLOW_SECURITY_OPEN='maybe': expected true or false"
    )
    assert refused({"KNFLOW_SERVING_MAX_REPLICAS": "2.5"}, tmp_path) == (
        "KNFLOW_SERVING_MAX_REPLICAS='2.5': expected a whole number"
    )


def test_toml_numbers_and_bools_where_they_belong_are_read(tmp_path: Path) -> None:
    config = tmp_path / "knflow.toml"
    config.write_text("gateway_port = 9100\n[eventing]\nretention_hours = 2\n[security]\nopen = true\n")
    settings = load_settings({"KNFLOW_DATA_DIR": str(tmp_path)}, config_file=config)
    assert (settings.gateway_port, settings.eventing.retention_hours, settings.security.open) == (9100, 2.0, True)


def test_a_section_name_alone_or_a_lower_case_variable_is_no_setting(tmp_path: Path) -> None:
    env = {"KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_SERVING": "x", "knflow_gateway_port": "9000", "GATEWAY_PORT": "1"}
    assert load_settings(env, config_file=None).gateway_port == 8182


# -- Kafka and S3 locations ------------------------------------------------------------------------------------------


def test_a_kafka_location_defaults_its_topic_and_takes_ports_1_to_65535() -> None:
    kafka = parse_broker_url("kafka://a:9092")
    assert (kafka.scheme, kafka.servers, kafka.topic) == ("kafka", ("a:9092",), "knflow-events")
    assert parse_broker_url("kafka://a:1,b:65535").servers == ("a:1", "b:65535")
    for servers in ("a:0", "a:65536", "[::1]x:9092"):
        with pytest.raises(
            ConfigError, match=rf"^KNFLOW_BROKER='kafka://{re.escape(servers)}': expected embedded://PATH"
        ):
            parse_broker_url(f"kafka://{servers}")


@pytest.mark.parametrize("bucket", ["abc", "a" * 63, "a-b.c9"])
def test_a_bucket_name_of_3_to_63_lower_case_letters_digits_dashes_and_dots_is_taken(bucket: str) -> None:
    assert parse_store_url(f"s3://{bucket}?endpoint=http://s3.local:9000", {}).bucket == bucket


@pytest.mark.parametrize("bucket", ["ab", "a" * 64, "a_bc", "Abc", "aXc", "ab c"])
def test_any_other_bucket_name_is_refused(bucket: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_store_url(f"s3://{bucket}?endpoint=http://s3.local:9000", {})
    assert str(caught.value) == (
        f"KNFLOW_ARTIFACTS='s3://{bucket}?endpoint=http://s3.local:9000': {bucket!r} is not a valid S3 bucket name "
        "(3-63 lowercase letters, digits, '-', '.')"
    )


def test_the_endpoint_comes_from_the_url_then_aws_endpoint_url_then_minio_endpoint() -> None:
    env = {"AWS_ENDPOINT_URL": "http://aws.local:1", "MINIO_ENDPOINT": "http://minio.local:2"}
    assert parse_store_url(S3, env).endpoint == "s3.local:9000"
    assert parse_store_url("s3://bkt", env).endpoint == "aws.local:1"
    assert parse_store_url("s3://bkt", {"MINIO_ENDPOINT": "http://minio.local:2"}).endpoint == "minio.local:2"
    with pytest.raises(ConfigError) as caught:
        parse_store_url("s3://bkt", {})
    assert str(caught.value) == (
        f"KNFLOW_ARTIFACTS='s3://bkt': no endpoint; expected {FORMS} (or AWS_ENDPOINT_URL in the environment)"
    )


def test_the_process_environment_is_read_when_none_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://aws.local:443")
    assert parse_store_url("s3://bkt").endpoint == "aws.local:443"


def test_an_endpoint_without_a_scheme_is_http_and_https_is_secure() -> None:
    plain = parse_store_url("s3://bkt?endpoint=s3.local:9000", {})
    assert (plain.endpoint, plain.secure) == ("s3.local:9000", False)
    assert parse_store_url("s3://bkt?endpoint=https://s3.local", {}).secure is True


@pytest.mark.parametrize("endpoint", ["ftp://s3.local:21", "http://"])
def test_an_endpoint_that_is_not_http_or_names_no_host_is_refused(endpoint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_store_url(f"s3://bkt?endpoint={endpoint}", {}, setting="artifacts (config file)")
    assert str(caught.value) == f"artifacts (config file): endpoint {endpoint!r} must be http(s)://HOST:PORT"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("kafka://[::1:9092", f"KNFLOW_BROKER='kafka://[::1:9092': Invalid IPv6 URL; expected {BROKER_FORMS}"),
        ("s3://[bkt", f"KNFLOW_ARTIFACTS='s3://[bkt': Invalid IPv6 URL; expected {FORMS}"),
        ("s3://bkt?endpoint=http://[::1:9000",
         "KNFLOW_ARTIFACTS: endpoint 'http://[::1:9000': Invalid IPv6 URL; expected http(s)://HOST:PORT"),
    ],
)  # fmt: skip
def test_a_url_whose_brackets_do_not_close_is_refused_naming_the_setting(url: str, message: str) -> None:
    parse = parse_broker_url if url.startswith("kafka") else parse_store_url
    with pytest.raises(ConfigError) as caught:
        parse(url)
    assert str(caught.value) == message


@pytest.mark.parametrize(("given", "create"), [("", False), ("&create=true", True), ("&create=Off", False)])
def test_create_is_false_unless_the_url_says_true(given: str, create: bool) -> None:
    assert parse_store_url(S3 + given, {}).create is create


def test_a_create_that_is_no_boolean_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_store_url(S3 + "&create=please", {})
    assert str(caught.value) == "KNFLOW_ARTIFACTS create='please': expected true or false"


def test_the_region_comes_from_the_url_then_aws_region_then_aws_default_region() -> None:
    env = {"AWS_REGION": "r1", "AWS_DEFAULT_REGION": "r2"}
    assert parse_store_url(S3 + "&region=r0", env).region == "r0"
    assert parse_store_url(S3, env).region == "r1"
    assert parse_store_url(S3, {"AWS_DEFAULT_REGION": "r2"}).region == "r2"
    assert parse_store_url(S3, {}).region is None


@pytest.mark.parametrize(
    ("env", "keys"),
    [
        ({"AWS_ACCESS_KEY_ID": "a1", "MINIO_ACCESS_KEY": "a2", "MINIO_ROOT_USER": "a3",
          "AWS_SECRET_ACCESS_KEY": "s1", "MINIO_SECRET_KEY": "s2", "MINIO_ROOT_PASSWORD": "s3"}, ("a1", "s1")),
        ({"MINIO_ACCESS_KEY": "a2", "MINIO_ROOT_USER": "a3", "MINIO_SECRET_KEY": "s2", "MINIO_ROOT_PASSWORD": "s3"},
         ("a2", "s2")),
        ({"MINIO_ROOT_USER": "a3", "MINIO_ROOT_PASSWORD": "s3"}, ("a3", "s3")),
        ({}, (None, None)),
    ],
)  # fmt: skip
def test_credentials_come_from_aws_then_minio_then_minio_root_variables(
    env: dict[str, str], keys: tuple[str | None, str | None]
) -> None:
    location = parse_store_url(S3, env)
    assert (location.scheme, location.access_key, location.secret_key) == ("s3", *keys)


def test_a_store_location_hands_a_child_its_url_and_both_credentials_or_none() -> None:
    both = parse_store_url(S3, {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"})
    assert both.env() == {"KNFLOW_ARTIFACTS": both.url, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}
    half = StoreLocation("s3", bucket="bkt", endpoint="s3.local:9000", access_key="a")
    assert half.env() == {"KNFLOW_ARTIFACTS": "s3://bkt?endpoint=http://s3.local:9000"}


@pytest.mark.parametrize("address", ["[::1:8080", "::1]:8080", "::1:8080", "[::1]:http"])
def test_an_address_with_a_bracket_on_one_side_or_no_port_number_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(address))):
        split_authority(address)
