"""``knflow sources minio`` prints MinIO's notification settings for knflow; the endpoint and token it prints, used the
way MinIO's webhook target uses them (a bare token goes out as ``Bearer <token>``), start a run in the broker."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson

from eventing.broker import BrokerServer
from functions.contract import DATA_ARRIVED, with_lifecycle
from infra.auth import TokenFile, tokens_path
from infra.localservices import free_port
from infra.settings import load_settings
from tests.eventing.test_sources import minio_notification
from tests.eventually import eventually

ROOT = Path(__file__).parents[1]


def knflow_sources_minio(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "knflow", "sources", "minio", *args], capture_output=True, text=True, cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def assignments(snippet: str) -> dict[str, str]:
    """NAME=VALUE of every ``export`` line, and KEY=VALUE of ``mc admin config set`` lines, as a shell reads them."""
    found = {}
    for line in snippet.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"] or words[:4] == ["mc", "admin", "config", "set"]:
            found.update(w.split("=", 1) for w in words if "=" in w)
    return found


def test_minio_configuration_names_the_bucket_prefix_broker_token_and_kafka_alternative(tmp_path: Path) -> None:
    env = {
        "KNFLOW_DATA_DIR": str(tmp_path),
        "KNFLOW_ARTIFACTS": "s3://lake?endpoint=http://minio.internal:9000",
        "KNFLOW_BROKER": "kafka://kafka-1:9092,kafka-2:9092",
        "KNFLOW_EVENTING_MINIO_TOKEN": "s3cr3t",
    }
    result = knflow_sources_minio(env, "--alias", "prod", "--broker-url", "http://knflow.internal:8180/")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    values = assignments(out)
    assert values["MINIO_NOTIFY_WEBHOOK_ENABLE_KNFLOW"] == "on"
    assert values["MINIO_NOTIFY_WEBHOOK_ENDPOINT_KNFLOW"] == "http://knflow.internal:8180/sources/minio"
    assert values["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_KNFLOW"] == values["auth_token"] == "s3cr3t"
    assert values["endpoint"] == "http://knflow.internal:8180/sources/minio"
    assert "mc admin config set prod notify_webhook:KNFLOW " in out
    assert "mc event add prod/lake arn:minio:sqs::KNFLOW:webhook --event put --prefix raw/" in out
    assert values["MINIO_NOTIFY_KAFKA_BROKERS_KNFLOW"] == "kafka-1:9092,kafka-2:9092"
    assert values["MINIO_NOTIFY_KAFKA_TOPIC_KNFLOW"] == values["KNFLOW_EVENTING_MINIO_KAFKA_TOPIC"] == "knflow-minio"
    assert "mc event add prod/lake arn:minio:sqs::KNFLOW:kafka --event put --prefix raw/" in out
    assert "KNFLOW_EVENTING_MINIO_TOKEN" not in values  # already set: nothing to add on knflow's side


def test_minio_configuration_on_a_file_store_says_it_needs_s3(tmp_path: Path) -> None:
    result = knflow_sources_minio({"KNFLOW_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "MinIO notifications need an s3:// store" in result.stderr


async def test_the_printed_endpoint_and_token_used_as_minio_does_start_a_run(tmp_path: Path) -> None:
    env = {
        "KNFLOW_DATA_DIR": str(tmp_path),
        "KNFLOW_BROKER": f"embedded://{tmp_path / 'events'}",
        "KNFLOW_ARTIFACTS": "s3://knflow?endpoint=http://127.0.0.1:9",  # nothing there: the poll fails, quietly
        "KNFLOW_BROKER_PORT": str(free_port()),
    }
    printed = assignments(knflow_sources_minio(env).stdout)
    env["KNFLOW_EVENTING_MINIO_TOKEN"] = printed["KNFLOW_EVENTING_MINIO_TOKEN"]  # step 3 of what it printed
    settings = with_lifecycle(load_settings(env, config_file=None))
    viewer = {"Authorization": f"Bearer {TokenFile(tokens_path(settings)).create('reader', 'viewer', ('*',))}"}
    async with BrokerServer(settings) as broker, aiohttp.ClientSession() as session:
        url, token = printed["MINIO_NOTIFY_WEBHOOK_ENDPOINT_KNFLOW"], printed["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_KNFLOW"]
        body = orjson.dumps(minio_notification("knflow", "raw/iris/flowers.csv"))
        async with session.post(url, data=body, headers={"Authorization": f"Bearer {token}"}) as answer:
            assert answer.status == 202, await answer.text()
        async with session.post(url, data=body, headers={"Authorization": "Bearer wrong"}) as answer:
            assert answer.status == 401

        async def arrived() -> list:
            async with session.get(f"{broker.url}/events", params={"type": DATA_ARRIVED}, headers=viewer) as page:
                return (await page.json())["events"]

        events = await eventually(arrived, 10, "the notification's arrival event")
    assert [e["data"]["key"] for e in events] == ["raw/iris/flowers.csv"]
