"""The platform on Kafka skips nothing: every event accepted from the moment ``Platform.start`` returns reaches
every lifecycle trigger it matches, across a crash and restart of the broker process (counted by event id)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import urllib3

from eventing.bindings import to_http_binary
from eventing.events import STEP_FAILED, new_event
from eventing.filters import matches
from functions import contract as ev
from functions.runtime.pipeline import load_pipeline, pipeline_triggers
from infra.localservices import LocalService, free_platform_ports, free_port
from infra.settings import load_settings
from knflow.platform import Platform
from tests.eventually import eventually_sync

pytestmark = pytest.mark.slow

#: (type, extensions): every lifecycle route, one that no trigger takes, and a trial with its own key
KINDS = [
    (ev.DATA_ARRIVED, {}),
    (ev.DATASET_INGESTED, {}),
    (ev.FEATURES_READY, {"mode": "train"}),
    (ev.FEATURES_READY, {"mode": "tune"}),
    (ev.TRIAL_REQUESTED, {"mode": "trial", "partitionkey": "trial"}),
    (ev.MODEL_TRAINED, {"mode": "trial"}),
    (ev.MODEL_TRAINED, {"mode": "train"}),
    (STEP_FAILED, {}),
    (ev.TUNE_COMPLETED, {}),
    (ev.MODEL_REGISTERED, {}),
    (ev.MODEL_DEPLOYED, {}),
]
TOTAL = 330


class Functions(ThreadingHTTPServer):
    """Stands in for the function runner on its port: records (function, event id), answers 204 (no reply)."""

    daemon_threads = True

    def __init__(self, port: int):
        self.delivered: set[tuple[str, str]] = set()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the broker's client expects

    def do_GET(self) -> None:  # the runner's status: the pipeline control asks what is hosted
        body = b"{}"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        function = self.path.rsplit("/", 1)[-1]
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.delivered.add((function, self.headers["ce-id"]))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def functions_port() -> Iterator[tuple[int, Functions]]:
    port = free_port()
    server = Functions(port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield port, server
    server.shutdown()


def send_until_accepted(http: urllib3.PoolManager, url: str, event) -> None:
    """POST until the broker answers 202; an unknown outcome (the broker died mid-request) is sent again."""
    headers, body = to_http_binary(event)

    def accepted() -> bool:
        try:
            return http.request("POST", url, body=body, headers=headers, timeout=10.0).status == 202
        except urllib3.exceptions.HTTPError:
            return False  # the broker is down or died mid-request: send it again

    eventually_sync(accepted, 90, f"the broker to accept {event.get_id()}")


def test_every_event_accepted_after_ready_reaches_every_matching_trigger_across_a_broker_crash(
    tmp_path: Path, kafka_server: LocalService, functions_port: tuple[int, Functions]
) -> None:
    port, functions = functions_port
    env = {
        "KNFLOW_DATA_DIR": str(tmp_path),
        "KNFLOW_BROKER": f"kafka://{kafka_server.url}?topic=platform-{uuid.uuid4().hex[:8]}",
        "KNFLOW_ARTIFACTS": f"file://{tmp_path / 'artifacts'}",
        "KNFLOW_FUNCTIONS_PORT": str(port),
        **free_platform_ports("BROKER", "GATEWAY", "DASHBOARD", "GRPC"),
    }
    settings = load_settings(env, config_file=None)
    spec = load_pipeline(ev.lifecycle_spec_path())
    triggers = pipeline_triggers(spec, lambda step: f"http://127.0.0.1:{port}/functions/{step.function}")
    events = [
        new_event(kind, "/tests", {"i": i}, runid=f"run-{i % 7}", extensions={"pipeline": ev.LIFECYCLE, **ext})
        for i, (kind, ext) in enumerate(KINDS[i % len(KINDS)] for i in range(TOTAL))
    ]
    expected = {
        (t.subscriber.rsplit("/", 1)[-1], e.get_id())
        for e in events
        for t in triggers
        if matches(e, t.filter, t.filters)
    }
    http = urllib3.PoolManager(retries=False)
    with Platform.start(settings, timeout=120, only=("broker", "gateway", "dashboard")) as platform:
        url = platform.url("broker") + "/"
        for i, event in enumerate(events):  # from the moment the platform says it is up
            if i == TOTAL // 3:
                platform.restart("broker", kill=True)  # acks not yet committed are delivered again
            send_until_accepted(http, url, event)
        eventually_sync(lambda: expected <= functions.delivered, 120, "every matching trigger to get every event")
    assert {pair for pair in functions.delivered if pair[1] in {e.get_id() for e in events}} == expected
