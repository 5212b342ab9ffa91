"""``knflow sources minio``: print what to paste into MinIO so that objects landing in ``raw/`` of the artifact
bucket are announced to knflow's broker by MinIO's own bucket notifications (webhook target, or Kafka target)."""

from __future__ import annotations

import argparse
import secrets
import shlex

from functions.contract import with_lifecycle
from infra.errors import ConfigError
from infra.settings import Settings, load_settings

DEFAULT_TOPIC = "knflow-minio"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    minio = sub.add_parser(
        "minio",
        help="MinIO's webhook or Kafka notification target and the mc event add command",
        description="Print MinIO's notification settings (webhook target, and the Kafka target as the alternative) "
        "and the mc commands that send new objects under raw/ of the artifact bucket to knflow's broker.",
    )
    minio.add_argument(
        "--alias", default="myminio", help="your MinIO's mc alias (mc alias set ALIAS URL USER PASSWORD)"
    )
    minio.add_argument("--broker-url", help="knflow's broker as MinIO reaches it (default http://HOST:BROKER_PORT)")
    minio.add_argument("--id", default="KNFLOW", help="the notification target's identifier (default KNFLOW)")
    minio.add_argument(
        "--topic", help=f"the Kafka target's topic (default eventing.minio_kafka_topic or {DEFAULT_TOPIC})"
    )


def run(args: argparse.Namespace) -> int:
    print(minio_configuration(with_lifecycle(load_settings()), args.alias, args.broker_url, args.id, args.topic))
    return 0


def minio_configuration(
    settings: Settings, alias: str, broker_url: str | None = None, target: str = "KNFLOW", topic: str | None = None
) -> str:
    """The shell snippet that configures MinIO to notify knflow's broker of new objects under the arrival prefix."""
    store, ev = settings.artifacts, settings.eventing
    if store.scheme != "s3":
        raise ConfigError(
            f"the artifact store is {store.url}; MinIO notifications need an s3:// store "
            "(KNFLOW_ARTIFACTS=s3://BUCKET?endpoint=http://HOST:PORT)"
        )
    endpoint = f"{(broker_url or settings.url(settings.broker_port)).rstrip('/')}/sources/minio"
    token = ev.minio_token or secrets.token_urlsafe(24)
    topic = topic or ev.minio_kafka_topic or DEFAULT_TOPIC
    servers = ",".join(settings.broker.servers) if settings.broker.scheme == "kafka" else "KAFKA_HOST:9092"
    events = (
        f"mc event add {alias}/{store.bucket} arn:minio:sqs::{target}:{{kind}} --event put --prefix {ev.arrival_prefix}"
    )
    q = shlex.quote
    lines = [
        f"# MinIO bucket notifications for knflow: new objects under {ev.arrival_prefix} of bucket {store.bucket!r}",
        f"# start runs. knflow's broker takes them at {endpoint} (Bearer token: eventing.minio_token).",
        "",
        "# 1. The webhook target, in MinIO's environment (then restart MinIO):",
        f"export MINIO_NOTIFY_WEBHOOK_ENABLE_{target}=on",
        f"export MINIO_NOTIFY_WEBHOOK_ENDPOINT_{target}={q(endpoint)}",
        f"export MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_{target}={q(token)}",
        f"export MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_{target}=/data/.knflow-events  # kept there while the broker is down",
        "#    or the same at runtime with mc:",
        f"mc admin config set {alias} notify_webhook:{target} endpoint={q(endpoint)} auth_token={q(token)}",
        f"mc admin service restart {alias}",
        "# 2. Send the bucket's new objects to it:",
        events.format(kind="webhook"),
        "",
        "# Alternatively, MinIO's Kafka target, read by the broker from the topic (instead of 1. and 2.):",
        f"export MINIO_NOTIFY_KAFKA_ENABLE_{target}=on",
        f"export MINIO_NOTIFY_KAFKA_BROKERS_{target}={q(servers)}",
        f"export MINIO_NOTIFY_KAFKA_TOPIC_{target}={q(topic)}",
        f"#    or: mc admin config set {alias} notify_kafka:{target} brokers={q(servers)} topic={q(topic)}",
        events.format(kind="kafka"),
        f"export KNFLOW_EVENTING_MINIO_KAFKA_TOPIC={q(topic)}"
        + ("" if settings.broker.scheme == "kafka" else f" KNFLOW_EVENTING_MINIO_KAFKA_SERVERS={q(servers)}")
        + "  # for knflow's broker, which reads the topic",
        "",
        "# 3. knflow's side (before `knflow up`):",
    ]
    if not ev.minio_token:
        lines.append(
            f"export KNFLOW_EVENTING_MINIO_TOKEN={q(token)}  # then the broker takes only notifications with it"
        )
    lines += [
        "export KNFLOW_EVENTING_S3_ARRIVALS=notifications",
        "#    (or keep the default, both: the broker's poll also catches what a notification missed; no object is",
        "#    announced twice)",
    ]
    return "\n".join(lines)
