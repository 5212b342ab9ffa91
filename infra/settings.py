"""knflow's one settings object: defaults, then a TOML file, then ``KNFLOW_*`` environment variables.

Read once at start (``load_settings``) and passed down; nothing else reads the environment
while working. pydantic-settings reads the file and the variables and pydantic types them; every
wrong value fails here with a message naming the setting and what it accepts.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from infra.errors import ConfigError
from infra.namespaces import LABEL

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

BROKER_FORMS = "embedded://PATH or kafka://HOST:PORT[,HOST:PORT...][?topic=NAME]"
ARTIFACTS_FORMS = "file://PATH or s3://BUCKET?endpoint=http://HOST:PORT[&region=R][&create=true]"
#: What announces objects landing in an ``s3://`` store (``eventing.s3_arrivals``).
S3_ARRIVALS = ("poll", "notifications", "both")
#: Where the deploy step puts models (``serving.target``): the local gateway, or Knative Serving.
LOCAL, KNATIVE = "local", "knative"
SERVING_TARGETS = (LOCAL, KNATIVE)


@dataclass(frozen=True)
class BrokerLocation:
    """Where events are kept: an embedded log directory or Kafka bootstrap servers."""

    scheme: str  # "embedded" | "kafka"
    path: Path | None = None
    servers: tuple[str, ...] = ()
    topic: str = "knflow-events"

    @property
    def url(self) -> str:
        if self.scheme == "embedded":
            return f"embedded://{self.path}"
        return f"kafka://{','.join(self.servers)}?topic={self.topic}"


@dataclass(frozen=True)
class StoreLocation:
    """Where artifacts are kept: a local directory or an S3 bucket behind an endpoint."""

    scheme: str  # "file" | "s3"
    path: Path | None = None
    bucket: str = ""
    endpoint: str = ""
    region: str | None = None
    secure: bool = False
    create: bool = False
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The location as a URL that parses back to it (credentials aside: they stay in the environment)."""
        if self.scheme == "file":
            return f"file://{self.path}"
        scheme = "https" if self.secure else "http"
        url = f"s3://{self.bucket}?endpoint={scheme}://{self.endpoint}"
        if self.region:
            url += f"&region={self.region}"
        return url + ("&create=true" if self.create else "")

    def env(self) -> dict[str, str]:
        """The environment that makes a child process open this store: its URL and, for S3, the credentials."""
        env = {"KNFLOW_ARTIFACTS": self.url}
        if self.access_key and self.secret_key:
            env |= {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        return env


@dataclass(frozen=True)
class EventingSettings:
    """Broker ingress, delivery defaults and retention (file section ``[eventing]``)."""

    max_event_bytes: int = 4 * 1024 * 1024
    retention_hours: float = 168.0
    delivery_timeout_s: float = 30.0
    trigger_ready_timeout_s: float = 30.0  # how long PUT /triggers/{name} waits for the group to join
    webhook_secret: str = field(default="", repr=False)
    webhook_window_s: float = 300.0
    webhook_type: str = ""  # the type of a webhook's event; empty: the arrival type
    arrival_type: str = ""  # the type of the event an object landing under arrival_prefix becomes; empty: none
    arrival_prefix: str = ""
    arrival_pipeline: str = ""  # the pipeline extension an arrival event carries (which pipeline its run takes)
    arrival_ignore: str = ""  # comma-separated globs on file names that never start a run (companion files)
    minio_token: str = field(default="", repr=False)
    minio_kafka_servers: str = ""
    minio_kafka_topic: str = ""
    watch_raw: bool = True
    watch_interval_s: float = 1.0
    s3_arrivals: str = "both"  # on s3:// stores, what announces landed objects: poll, notifications or both
    s3_poll_interval_s: float = 2.0
    s3_poll_max_keys: int = 100_000  # how many object versions the poll marker remembers (the newest)
    ping_schedule: str = ""
    ping_data: str = ""


@dataclass(frozen=True)
class FunctionsSettings:
    """Function host and local runner (file section ``[functions]``)."""

    concurrency: int = 64
    max_request_bytes: int = 8 * 1024 * 1024
    idle_grace_s: float = 60.0
    start_timeout_s: float = 30.0


@dataclass(frozen=True)
class ServingSettings:
    """Inference gateway, replicas and autoscaling defaults (file section ``[serving]``)."""

    max_request_bytes: int = 16 * 1024 * 1024
    target_concurrency: float = 8.0
    max_replicas: int = 4
    stable_window_s: float = 60.0
    panic_window_pct: float = 10.0
    panic_threshold_pct: float = 200.0
    scale_to_zero_grace_s: float = 30.0
    activation_timeout_s: float = 30.0
    queue_limit: int = 1024
    intra_op_threads: int = 1
    autoscale_tick_s: float = 0.5
    log_queue_limit: int = 10_000  # logged requests waiting for the broker; more are dropped (and counted)
    log_queue_bytes: int = 64 * 1024 * 1024  # and their bodies' bytes
    target: str = "local"  # where deploy puts models: the local gateway, or one Knative Service per model
    model_template: str = ""  # knative: the model Service (JSON) that `knflow manifests` renders, filled in per model
    kubeconfig: str = ""  # knative: the kubeconfig of the Kubernetes API; empty: the pod's own service account
    model: str = ""  # set: this gateway is one model's server (a Knative Service's pod) and serves only this model
    model_version: int = 0  # the registry version the one-model server serves


@dataclass(frozen=True)
class PlatformSettings:
    """How ``knflow up`` supervises its processes (file section ``[platform]``)."""

    restart_backoff_s: float = 1.0  # the wait before the first restart; doubled for each restart in the window
    restart_backoff_max_s: float = 30.0
    restart_limit: int = 5  # restarts of one component within restart_window_s; one more exit stops knflow up
    restart_window_s: float = 300.0
    start_timeout_s: float = 60.0  # how long a restarted component has to answer its health check


@dataclass(frozen=True)
class SecuritySettings:
    """Who may call knflow's servers and where they may send (file section ``[security]``)."""

    open: bool = False  # no token asked anywhere: only for a machine nobody else can reach
    open_ingress: str = "auto"  # event ingress without a token: auto (when bound to loopback), true, false
    open_inference: str = "auto"  # V2 inference without a token: auto, true, false
    tokens_file: str = ""  # where tokens are kept (hashed); default <data_dir>/tokens.json
    hosts: str = ""  # more names the servers answer to (comma-separated; loopback names and `host` always; "*": any)
    origins: str = ""  # more origins a browser may change things from (the platform's own always)
    outbound: str = ""  # more hosts (or CIDRs) triggers, dead-letter sinks and notify targets may reach
    runs_per_minute: int = 30  # runs a bucket notification or webhook may start per dataset per minute
    token: str = field(default="", repr=False)  # the token this process calls knflow's servers with


@dataclass(frozen=True)
class TrainingSettings:
    """Where a training with several workers (or GPUs) runs (file section ``[training]``)."""

    target: str = "local"  # local: PyTorch's elastic agent on this machine; kubernetes: a Kubeflow Trainer TrainJob
    namespace: str = "knflow"  # kubernetes: the TrainJobs' namespace
    image: str = ""  # kubernetes: the workers' image (the one image of knflow's functions)
    runtime: str = "torch-distributed"  # kubernetes: the ClusterTrainingRuntime the TrainJobs reference
    env: str = ""  # kubernetes: the workers' container env as a JSON list (secretKeyRefs included)
    resources: str = ""  # kubernetes: each worker pod's ResourceRequirements as JSON (GPUs come from the run)
    kubeconfig: str = ""  # kubernetes: empty inside the cluster (the pod's ServiceAccount), else a kubeconfig path
    timeout_s: float = 1800.0  # kubernetes: how long train waits for a TrainJob (its activeDeadlineSeconds too)


@dataclass(frozen=True)
class Settings:
    """Everything knflow is configured with, resolved and validated."""

    data_dir: Path
    broker: BrokerLocation
    artifacts: StoreLocation
    host: str = "127.0.0.1"
    broker_port: int = 8180
    functions_port: int = 8181
    gateway_port: int = 8182
    dashboard_port: int = 8183
    grpc_port: int = 8184
    log_level: str = "INFO"
    log_format: str = "json"
    namespace: str = ""  # the namespace this process's client calls address (empty: its token's first, or default)
    eventing: EventingSettings = field(default_factory=EventingSettings)
    functions: FunctionsSettings = field(default_factory=FunctionsSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
    platform: PlatformSettings = field(default_factory=PlatformSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (settings stay immutable)."""
        return dataclasses.replace(self, **changes)

    @property
    def http_ports(self) -> tuple[int, int, int, int]:
        """The ports of the platform's HTTP servers: broker, functions, gateway, dashboard (not gRPC's)."""
        return (self.broker_port, self.functions_port, self.gateway_port, self.dashboard_port)

    @property
    def own_host(self) -> str | None:
        """The one address or name the servers bind (lower case, an IPv6 address without brackets); None when they
        bind every interface (``0.0.0.0``, ``::`` or empty)."""
        host = self.host.strip("[]").lower()
        return None if host in ("0.0.0.0", "::", "") else host

    @property
    def client_host(self) -> str:
        """Where a client on this machine reaches the servers: ``own_host``, else the loopback address of the
        family they bind (``::`` listens on IPv6 only, as asyncio binds it; ``0.0.0.0`` and empty on IPv4 too)."""
        if self.own_host is not None:
            return self.own_host
        return "::1" if self.host.strip("[]") == "::" else "127.0.0.1"

    def url(self, port: int, path: str = "") -> str:
        """``http://HOST:PORT`` and ``path``: one of the platform's servers as a client on this machine calls it."""
        return f"http://{authority(self.client_host, port)}{path}"


def authority(host: str, port: int) -> str:
    """``host:port`` as a URL or a listen address writes it: an IPv6 address in brackets (RFC 3986)."""
    host = host.removeprefix("[").removesuffix("]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_authority(address: str) -> tuple[str, int]:
    """``host:port`` or ``[IPv6]:port`` as its host (an IPv6 address without brackets) and port; ``ValueError`` when
    the port is not a number or an IPv6 address has no brackets (its last group would be taken for the port)."""
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{address!r}: an IPv6 address needs brackets, as in [::1]:8080")
    if not port.isdigit():
        raise ValueError(f"{address!r}: expected host:port")
    return host, int(port)


SECTIONS: dict[str, type] = {
    "eventing": EventingSettings,
    "functions": FunctionsSettings,
    "serving": ServingSettings,
    "platform": PlatformSettings,
    "training": TrainingSettings,
    "security": SecuritySettings,
}
#: Where a training with several workers runs (``training.target``).
TRAINING_TARGETS = ("local", "kubernetes")
_PORTS = ("broker_port", "functions_port", "gateway_port", "dashboard_port", "grpc_port")
_SCALARS = ("host", *_PORTS, "log_level", "log_format", "namespace")
_LOCATIONS = ("data_dir", "broker", "artifacts")  # read as text; load_settings turns them into paths and locations
_FORMS = {"int": "a whole number", "float": "a number", "bool": "true or false", "string": "text"}
_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def load_settings(env: Mapping[str, str] | None = None, config_file: str | Path | None = None) -> Settings:
    """Resolve settings: defaults < TOML file (``KNFLOW_CONFIG`` or ./knflow.toml) < environment."""
    env = os.environ if env is None else env
    path = _config_path(config_file or env.get("KNFLOW_CONFIG"))
    given = _read_sources(env, path)
    data_dir = Path(os.path.expanduser(given.pop("data_dir", "~/.knflow")))
    broker = given.pop("broker", f"embedded://{data_dir / 'events'}")
    artifacts = given.pop("artifacts", f"file://{data_dir / 'artifacts'}")
    if "host" in given:
        given["host"] = _parse_host(given["host"], setting=_setting_name(("host",), env, path))
    settings = Settings(
        data_dir=data_dir,
        broker=parse_broker_url(broker, setting=_setting_name(("broker",), env, path)),
        artifacts=parse_store_url(artifacts, env, setting=_setting_name(("artifacts",), env, path)),
        **given,
    )
    _check(settings, lambda *loc: _setting_name(loc, env, path))
    return settings


def _read_sources(env: Mapping[str, str], path: Path | None) -> dict[str, Any]:
    """The settings the environment and the file set (the environment wins, setting by setting), typed."""
    # pydantic-settings is imported on loading, not on import: most importers of this module only want the types.
    from pydantic import ValidationError
    from pydantic_settings import EnvSettingsSource, PydanticBaseSettingsSource, TomlConfigSettingsSource

    layout = _layout()
    from_env = EnvSettingsSource(layout)
    from_env.env_vars = _knflow_variables(env)  # the mapping given, not os.environ
    sources: tuple[PydanticBaseSettingsSource, ...] = (from_env,)
    if path is not None:
        try:
            from_file = TomlConfigSettingsSource(layout, toml_file=path)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # TOML is UTF-8
            raise ConfigError(f"KNFLOW_CONFIG={path}: not valid TOML ({exc})") from None
        _check_file(from_file.toml_data, path)
        sources += (from_file,)
    try:
        read = layout(_build_sources=(sources, {}))
    except ValidationError as exc:
        error = exc.errors()[0]
        setting = _setting_name(tuple(str(part) for part in error["loc"]), env, path)
        form = _FORMS.get(error["type"].split("_")[0], error["msg"])
        raise ConfigError(f"{setting}={error['input']!r}: expected {form}") from None
    return {name: getattr(read, name) for name in read.model_fields_set}


@functools.cache
def _layout() -> type[BaseSettings]:
    """Settings as pydantic-settings reads them: ``KNFLOW_<NAME>`` and, for a section, ``KNFLOW_<SECTION>_<NAME>``
    (split at the first ``_`` after the section's name), or the TOML file's keys and ``[section]`` tables."""
    from pydantic import create_model
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class Layout(BaseSettings):
        # The sections take the same config: numbers given to text settings stay text, as in the environment.
        model_config = SettingsConfigDict(
            env_prefix="KNFLOW_",
            env_nested_delimiter="_",
            env_nested_max_split=1,
            coerce_numbers_to_str=True,
            extra="ignore",  # KNFLOW_FUNCTIONS_PORT is functions_port, not [functions] port
            validate_default=False,  # the None defaults below mean "not set": Settings' own defaults apply
        )

    hints = _hints(Settings)
    fields: dict[str, Any] = {name: (str, None) for name in _LOCATIONS}
    fields |= {name: (hints[name], None) for name in (*_SCALARS, *SECTIONS)}
    return create_model("SettingsLayout", __base__=Layout, **fields)


def _knflow_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The ``KNFLOW_*`` variables (upper case, as documented) as pydantic-settings looks them up; a section's name
    alone (``KNFLOW_SERVING``) is not a setting."""
    sections = {f"KNFLOW_{section.upper()}" for section in SECTIONS}
    return {
        name.lower(): value
        for name, value in env.items()
        if name.startswith("KNFLOW_") and name.isupper() and name not in sections
    }


def _config_path(path: str | Path | None) -> Path | None:
    """The TOML file to read: the one named, else ./knflow.toml when there is one."""
    if path is None:
        default = Path("knflow.toml")
        return default if default.is_file() else None
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"KNFLOW_CONFIG={path}: no such file")
    return path


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The field types of a settings class (``typing.get_type_hints``, resolved once)."""
    return typing.get_type_hints(cls)


def _check_file(data: Mapping[str, Any], path: Path) -> None:
    """Refuse what pydantic-settings would not: unknown keys and sections, and booleans in number settings."""
    allowed = {*_LOCATIONS, *_SCALARS, *SECTIONS}
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {sorted(unknown)}; known: {sorted(allowed)}")
    for section, cls in SECTIONS.items():
        part = data.get(section, {})
        if not isinstance(part, dict):
            raise ConfigError(f"[{section}] in the config file must be a table")
        known = {f.name for f in dataclasses.fields(cls)}
        if set(part) - known:
            raise ConfigError(f"[{section}] has unknown setting(s) {sorted(set(part) - known)}; known: {sorted(known)}")
    _refuse_bools_as_numbers(data, _hints(Settings), "{} (config file)")
    for section, cls in SECTIONS.items():
        _refuse_bools_as_numbers(data.get(section, {}), _hints(cls), f"[{section}] {{}}")


def _refuse_bools_as_numbers(table: Mapping[str, Any], hints: Mapping[str, Any], key: str) -> None:
    """pydantic takes ``true`` for 1 in a number setting; a TOML ``true`` there is a mistake, refused as the
    environment's ``KNFLOW_GATEWAY_PORT=true`` is."""
    for name, value in table.items():
        if isinstance(value, bool) and hints.get(name) in (int, float):
            form = _FORMS[hints[name].__name__]
            raise ConfigError(f"{key.format(name)}={str(value).lower()}: expected {form}")


def _setting_name(loc: tuple[str, ...], env: Mapping[str, str], path: Path | None) -> str:
    """How the user set ``loc``: its environment variable, else its key in the config file."""
    env_name = "KNFLOW_" + "_".join(loc).upper()
    if path is None or env_name in env:
        return env_name
    return f"[{loc[0]}] {loc[1]}" if len(loc) > 1 else f"{loc[0]} (config file)"


def _check(settings: Settings, name: Callable[..., str]) -> None:
    """Refuse values of the right type but out of their range; ``name(*loc)`` says how the user set a setting."""
    for port_name in _PORTS:
        port = getattr(settings, port_name)
        if not 0 <= port <= 65535:
            raise ConfigError(f"{name(port_name)}={port}: expected a port from 0 to 65535")
    if settings.namespace and not LABEL.match(settings.namespace):
        raise ConfigError(f"{name('namespace')}={settings.namespace!r}: expected a DNS label (lowercase, digits, '-')")
    if settings.log_format not in ("json", "text"):
        raise ConfigError(f"{name('log_format')}={settings.log_format!r}: expected json or text")
    if settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{name('log_level')}={settings.log_level!r}: expected DEBUG, INFO, WARNING or ERROR")
    if settings.eventing.s3_arrivals not in S3_ARRIVALS:
        raise ConfigError(
            f"{name('eventing', 's3_arrivals')}={settings.eventing.s3_arrivals!r}: expected {', '.join(S3_ARRIVALS)}"
        )
    if settings.training.target not in TRAINING_TARGETS:
        raise ConfigError(
            f"{name('training', 'target')}={settings.training.target!r}: expected {' or '.join(TRAINING_TARGETS)}"
        )
    for field_name in ("open_ingress", "open_inference"):
        if getattr(settings.security, field_name) not in ("auto", "true", "false"):
            value = getattr(settings.security, field_name)
            raise ConfigError(f"{name('security', field_name)}={value!r}: expected auto, true or false")
    _check_serving(settings.serving, name)
    for section in SECTIONS:
        for f in dataclasses.fields(getattr(settings, section)):
            value = getattr(getattr(settings, section), f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"{name(section, f.name)}={value}: must not be negative")


def _check_serving(serving: ServingSettings, name: Callable[..., str]) -> None:
    if serving.target not in SERVING_TARGETS:
        raise ConfigError(f"{name('serving', 'target')}={serving.target!r}: expected {' or '.join(SERVING_TARGETS)}")
    if serving.target == KNATIVE and not serving.model_template:
        raise ConfigError(
            f"{name('serving', 'target')}=knative needs {name('serving', 'model_template')} (the model Service "
            "`knflow manifests` renders into the deploy function's environment)"
        )
    if serving.model and serving.model_version < 1:
        raise ConfigError(
            f"{name('serving', 'model')}={serving.model!r} needs {name('serving', 'model_version')} (1 or more)"
        )


def parse_broker_url(value: str, *, setting: str = "KNFLOW_BROKER") -> BrokerLocation:
    """Parse ``embedded://PATH`` or ``kafka://HOST:PORT[,...]``."""
    parts = _split_url(value, f"{setting}={value!r}", BROKER_FORMS)
    if parts.scheme == "embedded":
        path = _local_path(parts, f"{setting}={value!r}: the embedded broker needs a path; expected {BROKER_FORMS}")
        return BrokerLocation("embedded", path=path)
    if parts.scheme == "kafka":
        servers = tuple(s for s in parts.netloc.split(",") if s)
        if not servers or not all(_is_host_port(s) for s in servers):
            raise ConfigError(f"{setting}={value!r}: expected {BROKER_FORMS}")
        topic = parse_qs(parts.query).get("topic", ["knflow-events"])[0]
        return BrokerLocation("kafka", servers=servers, topic=topic)
    raise ConfigError(f"{setting}={value!r}: unknown scheme {parts.scheme!r}; expected {BROKER_FORMS}")


def parse_store_url(
    value: str, env: Mapping[str, str] | None = None, *, setting: str = "KNFLOW_ARTIFACTS"
) -> StoreLocation:
    """Parse ``file://PATH`` or ``s3://BUCKET?endpoint=…``; S3 credentials come from the environment."""
    env = os.environ if env is None else env
    parts = _split_url(value, f"{setting}={value!r}", ARTIFACTS_FORMS)
    if parts.scheme == "file":
        path = _local_path(parts, f"{setting}={value!r}: the file store needs a path; expected {ARTIFACTS_FORMS}")
        return StoreLocation("file", path=path)
    if parts.scheme != "s3":
        raise ConfigError(f"{setting}={value!r}: unknown scheme {parts.scheme!r}; expected {ARTIFACTS_FORMS}")
    bucket = parts.netloc
    if not (3 <= len(bucket) <= 63) or not all(c.islower() or c.isdigit() or c in "-." for c in bucket):
        raise ConfigError(
            f"{setting}={value!r}: {bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, '-', '.')"
        )
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    endpoint = query.get("endpoint") or env.get("AWS_ENDPOINT_URL") or env.get("MINIO_ENDPOINT")
    if not endpoint:
        raise ConfigError(
            f"{setting}={value!r}: no endpoint; expected {ARTIFACTS_FORMS} (or AWS_ENDPOINT_URL in the environment)"
        )
    full = endpoint if "://" in endpoint else f"http://{endpoint}"
    ep = _split_url(full, f"{setting}: endpoint {endpoint!r}", "http(s)://HOST:PORT")
    if ep.scheme not in ("http", "https") or not ep.netloc:
        raise ConfigError(f"{setting}: endpoint {endpoint!r} must be http(s)://HOST:PORT")
    create = _BOOLS.get(query.get("create", "false").strip().lower())
    if create is None:
        raise ConfigError(f"{setting} create={query['create']!r}: expected true or false")
    return StoreLocation(
        "s3",
        bucket=bucket,
        endpoint=ep.netloc,
        region=query.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        secure=ep.scheme == "https",
        create=create,
        access_key=_first(env, "AWS_ACCESS_KEY_ID", "MINIO_ACCESS_KEY", "MINIO_ROOT_USER"),
        secret_key=_first(env, "AWS_SECRET_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_ROOT_PASSWORD"),
    )


def _split_url(value: str, what: str, forms: str) -> SplitResult:
    """``urlsplit(value)``, or ``ConfigError`` naming ``what`` where it cannot split it (brackets that do not close)."""
    try:
        return urlsplit(value)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}; expected {forms}") from None


def _local_path(parts: SplitResult, missing: str) -> Path:
    """The directory a ``scheme://PATH`` URL names, ``~`` expanded; ``ConfigError(missing)`` when it names none."""
    path = unquote(parts.netloc + parts.path)
    if not path:
        raise ConfigError(missing)
    return Path(os.path.expanduser(path))


def _parse_host(value: str, *, setting: str) -> str:
    """The address or name the servers bind; an IPv6 address may come in brackets, as a URL writes it, and is kept
    without (the form binding takes). A colon elsewhere is a port or a typo: refused."""
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if ":" in bare or bare != value:
        try:
            ipaddress.IPv6Address(bare)
        except ValueError:
            raise ConfigError(
                f"{setting}={value!r}: expected an address or a name, without a port (an IPv6 address bare or in "
                "brackets)"
            ) from None
    return bare


def _first(env: Mapping[str, str], *names: str) -> str | None:
    return next((env[n] for n in names if env.get(n)), None)


def _is_host_port(text: str) -> bool:
    """``host:port`` with a port from 1 to 65535; an IPv6 address in brackets (``[::1]:9092``: bare, its last group
    would pass for the port)."""
    try:
        host, port = split_authority(text)
    except ValueError:
        return False
    return bool(host) and 0 < port < 65536
