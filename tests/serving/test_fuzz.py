"""Fuzzing the data plane: a live gateway process answers 2xx or 4xx to whatever V2 body it is sent (JSON, or
binary tensor data with its header length), and a replica cuts frames correctly however the byte stream is
split; no replica dies on the way."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import urllib3
from hypothesis import given
from hypothesis import strategies as st

from infra.store import open_store
from serving import framing
from serving.protocol import V2_TO_NUMPY
from serving.registry import ModelRegistry
from serving.replica import ReplicaSpec, serve
from tests.eventually import eventually_sync
from tests.fuzzing import Budget, fuzz, json_values, scalars
from tests.serving.helpers import children_of, identity_onnx, live_gateway, mlp_onnx
from tests.serving.wires import HEADER, raw_bytes

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
DATATYPES = list(V2_TO_NUMPY)

shapes = st.lists(st.integers(0, 70) | st.sampled_from([-1, 2**62, 2**63]), max_size=4)


def element(datatype: str) -> st.SearchStrategy:
    """Values a tensor of ``datatype`` can hold."""
    if datatype == "BYTES":
        return st.text(max_size=4)
    if datatype == "BOOL":
        return st.booleans()
    if datatype.startswith("FP"):
        return st.floats(width=16 if datatype == "FP16" else 32, allow_nan=False, allow_infinity=False)
    info = np.iinfo(V2_TO_NUMPY[datatype])
    return st.integers(int(info.min), int(info.max))


def tensor(name: str, datatype: str, rows: int, width: int) -> st.SearchStrategy:
    data = st.lists(element(datatype), min_size=rows * width, max_size=rows * width)
    return st.fixed_dictionaries(
        {"name": st.just(name), "datatype": st.just(datatype), "shape": st.just([rows, width]), "data": data}
    )


@st.composite
def well_formed(draw: st.DrawFn, model: str) -> dict:
    """A request the model should answer 200."""
    rows = draw(st.integers(0, 4))
    if model == "digits":
        inputs = [draw(tensor("input", "FP32", rows, 64))]
        names = ["logits", "probabilities"]
    else:
        inputs = [draw(tensor(f"x_{dt}", dt, rows, 3)) for dt in DATATYPES]
        names = [f"y_{dt}" for dt in DATATYPES]
    body: dict = {"inputs": inputs}
    if draw(st.booleans()):
        body["id"] = draw(st.text(max_size=8))
    if draw(st.booleans()):
        body["outputs"] = [{"name": n} for n in draw(st.lists(st.sampled_from(names), max_size=3, unique=True))]
    if draw(st.booleans()):
        body["parameters"] = draw(st.dictionaries(st.text(max_size=6), scalars, max_size=3))
    return body


@st.composite
def mutated(draw: st.DrawFn, model: str) -> dict:
    """A well-formed request with one field replaced by junk, or removed."""
    body = draw(well_formed(model))
    target = body if draw(st.booleans()) else draw(st.sampled_from(body["inputs"]))
    field = draw(st.sampled_from(sorted(set(target) | {"id", "outputs", "parameters", "shape", "data"})))
    if draw(st.integers(0, 4)) == 0:
        target.pop(field, None)
    else:
        target[field] = draw(json_values | shapes)
    return body


def bodies(model: str) -> st.SearchStrategy:
    return (
        well_formed(model).map(orjson.dumps)
        | mutated(model).map(orjson.dumps)
        | st.binary(max_size=300)
        | json_values.map(orjson.dumps)
    )


@st.composite
def binary_bodies(draw: st.DrawFn, model: str) -> tuple[bytes, dict[str, str]]:
    """A well-formed request with some inputs moved to the binary part, then (often) one thing broken:
    the header length, a binary_data_size, the binary part cut short or grown, a byte of it changed."""
    body = draw(well_formed(model))
    chunks = []
    for tensor in body["inputs"]:
        if draw(st.booleans()):
            dt = tensor["datatype"]
            raw = raw_bytes(dt, np.array(tensor.pop("data"), V2_TO_NUMPY[dt]))
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
    if draw(st.booleans()):
        body.setdefault("parameters", {})["binary_data_output"] = True
    sized = [t for t in body["inputs"] if "parameters" in t]
    fault = draw(st.sampled_from(["none", "none", "length", "size", "cut", "grow", "flip", "header"]))
    if fault == "size" and sized:
        junk = st.integers(-5, 2**63 - 1) | json_values | st.integers(0, 64)
        draw(st.sampled_from(sized))["parameters"]["binary_data_size"] = draw(junk)
    head, data = orjson.dumps(body), b"".join(chunks)
    header = str(len(head))
    if fault == "length":
        header = str(draw(st.integers(0, len(head) + len(data) + 8)))
    elif fault == "header":
        header = draw(st.text(alphabet="0123456789-+ x.", max_size=8))
    elif fault == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif fault == "grow":
        data += draw(st.binary(min_size=1, max_size=16))
    elif fault == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    return head + data, {HEADER: header}


@st.composite
def json_requests(draw: st.DrawFn, model: str) -> tuple[bytes, dict[str, str]]:
    """A JSON body (one in six with a byte changed) and no headers."""
    body = draw(bodies(model))
    if draw(st.integers(0, 5)) == 0:
        at = draw(st.integers(0, max(0, len(body) - 1)))
        body = body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1 :]
    return body, {}


@pytest.fixture(scope="module")
def gateway_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m serving.gateway`` with the digits MLP and the all-datatypes identity model deployed."""
    tmp = tmp_path_factory.mktemp("fuzz-gateway")
    store = open_store(f"file://{tmp / 'artifacts'}")
    registry = ModelRegistry(store)
    registry.register("digits", mlp_onnx())
    registry.register("ident", identity_onnx())
    serving = {"KNFLOW_SERVING_SCALE_TO_ZERO_GRACE_S": "3600", "KNFLOW_SERVING_MAX_REPLICAS": "1"}
    with live_gateway(tmp, store, ("digits", "ident"), serving, log_level="ERROR") as (base, _, proc):
        yield base, proc


def _replicas(proc: subprocess.Popen) -> set[int]:
    return set().union(*(children_of(z) for z in children_of(proc.pid)))


def _both_replicas(http: urllib3.PoolManager, base: str, proc: subprocess.Popen) -> set[int]:
    """Both models have a replica up before the fuzzing starts; their pids."""
    for name in ("digits", "ident"):
        http.request("POST", f"{base}/v2/models/{name}/infer", body=b"{}")
    return eventually_sync(lambda: len(_replicas(proc)) == 2 and _replicas(proc), 30, "two replicas")  # type: ignore[return-value]


BUDGET_SHARE = 0.15  # at least this share of the inputs must be answered by the model, not refused early
SETTINGS, BUDGET = fuzz("serving: V2 bodies against a live gateway", examples=400, seconds=45)
BINARY_SETTINGS, BINARY_BUDGET = fuzz("serving: V2 binary bodies against a live gateway", examples=300, seconds=40)
Check = Callable[[urllib3.BaseHTTPResponse], None]


def _fuzz_live(gateway_process, settings, budget: Budget, requests, check: Check) -> None:  # type: ignore[no-untyped-def]
    """POST what ``requests(model)`` draws to both models: every answer is 2xx/4xx and passes ``check``, no replica
    is replaced, and enough inputs reach a model."""
    base, proc = gateway_process
    http = urllib3.PoolManager(retries=False, timeout=10.0)
    replicas = _both_replicas(http, base, proc)
    statuses: Counter[int] = Counter()

    @settings
    @given(model=st.sampled_from(["digits", "ident"]), data=st.data())
    def one(model: str, data: st.DataObject) -> None:
        body, headers = data.draw(requests(model))  # drawn even past the budget: Hypothesis wants the same draws
        if not budget.take():
            return
        answer = http.request("POST", f"{base}/v2/models/{model}/infer", body=body, headers=headers)
        assert 200 <= answer.status < 500, (answer.status, headers, body[:300], answer.data[:300])
        check(answer)
        statuses[answer.status] += 1

    one()
    assert _replicas(proc) == replicas, "a replica was replaced while fuzzing"
    assert statuses[200] >= BUDGET_SHARE * sum(statuses.values()), f"too few inputs reached a model: {statuses}"


def _json_answer(answer: urllib3.BaseHTTPResponse) -> None:
    assert orjson.loads(answer.data)  # always a JSON answer


def _json_or_binary_answer(answer: urllib3.BaseHTTPResponse) -> None:
    length = answer.headers.get(HEADER)
    head = orjson.loads(answer.data[: int(length)] if length else answer.data)
    assert head  # a JSON answer, or a JSON header before the binary outputs
    if length:
        sizes = [t["parameters"]["binary_data_size"] for t in head["outputs"] if "parameters" in t]
        assert len(answer.data) == int(length) + sum(sizes)


def test_v2_bodies_are_answered_2xx_or_4xx_and_no_replica_dies(gateway_process) -> None:  # type: ignore[no-untyped-def]
    _fuzz_live(gateway_process, SETTINGS, BUDGET, json_requests, _json_answer)


def test_binary_bodies_are_answered_2xx_or_4xx_and_no_replica_dies(gateway_process) -> None:  # type: ignore[no-untyped-def]
    _fuzz_live(gateway_process, BINARY_SETTINGS, BINARY_BUDGET, binary_bodies, _json_or_binary_answer)


@pytest.fixture(scope="module")
def replica_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A replica of the digits MLP served by ``serving.replica.serve`` on its own event loop thread."""
    tmp = tmp_path_factory.mktemp("fuzz-replica")
    model = tmp / "model.onnx"
    model.write_bytes(mlp_onnx())
    spec = ReplicaSpec(
        socket=str(tmp / "replica.sock"), model_path=str(model), model="digits", version="1",
        inputs=({"name": "input", "datatype": "FP32", "shape": (-1, 64)},),  # type: ignore[arg-type]
        outputs=({"name": "logits", "datatype": "FP32", "shape": (-1, 10)},),  # type: ignore[arg-type]
        max_batch=8,
    )  # fmt: skip
    spec = ReplicaSpec.from_dict(spec.__dict__)
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve(spec))

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    eventually_sync(lambda: Path(spec.socket).exists(), 30, "the replica socket")
    yield spec.socket
    loop.call_soon_threadsafe(task.cancel)
    thread.join(10)


FRAME_SETTINGS, FRAME_BUDGET = fuzz("serving: frame streams split anywhere", examples=150, seconds=30)
valid = st.integers(1, 40).map(lambda rows: (orjson.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, 64], "data": [0.25] * (rows * 64)}]}
), rows))  # fmt: skip
frame = st.tuples(st.just(0), valid) | st.tuples(st.sampled_from([0, 7]), bodies("digits").map(lambda b: (b, None)))


def test_frames_split_or_coalesced_anywhere_are_each_answered(replica_socket: str) -> None:
    @FRAME_SETTINGS
    @given(frames=st.lists(frame, min_size=1, max_size=6), cuts=st.lists(st.floats(0, 1), max_size=6))
    def one(frames: list[tuple[int, tuple[bytes, int | None]]], cuts: list[float]) -> None:
        if not FRAME_BUDGET.take():
            return
        stream = b"".join(framing.request_frame(rid, c, body) for rid, (c, (body, _)) in enumerate(frames, 1))
        points = sorted({int(c * len(stream)) for c in cuts} | {0, len(stream)})
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(20)
            sock.connect(replica_socket)
            for start, end in itertools.pairwise(points):
                sock.sendall(stream[start:end])
                time.sleep(0.001)  # let the replica read each piece on its own
            answers = _read_answers(sock, len(frames))
        assert sorted(answers) == list(range(1, len(frames) + 1))
        for rid, (status, body) in answers.items():
            _, (_, rows) = frames[rid - 1]
            assert status in (200, 400), (status, body[:200])
            if rows is not None:
                assert status == 200 and orjson.loads(body)["outputs"][0]["shape"] == [rows, 10]

    one()


def _read_answers(sock: socket.socket, count: int) -> dict[int, tuple[int, bytes]]:
    buffer, answers = b"", {}
    size = framing.RESPONSE.size
    while len(answers) < count:
        chunk = sock.recv(1 << 16)
        assert chunk, "the replica closed the connection"
        buffer += chunk
        while len(buffer) >= size:
            rid, status, length = framing.RESPONSE.unpack_from(buffer)
            if len(buffer) < size + length:
                break
            if status != framing.STARTED:
                answers[rid] = (status, buffer[size : size + length])
            buffer = buffer[size + length :]
    return answers
