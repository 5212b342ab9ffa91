"""Fuzzing the parsers of what callers send: CloudEvents over HTTP and Kafka (the reference bindings and the broker's
fast paths), MinIO notifications, webhook signatures, pipeline specs and run options. Each input is parsed, or
refused with knflow's 4xx error naming what is wrong, within a deadline; any other exception is a bug."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from eventing import bindings, wire
from eventing.sources.minio import notification_events
from eventing.sources.webhook import parse_signature, sign, verify
from functions.contract import with_lifecycle
from functions.runoptions import parse_options
from functions.runtime.pipeline import parse_pipeline
from infra.errors import InvalidRequest
from infra.settings import load_settings
from knflow.commands.demo import DEMO_OPTIONS
from tests.eventing.test_sources import minio_notification
from tests.fuzzing import fuzz, json_values, mutated_bytes, mutated_tree, refused_or_done

ROOT = Path(__file__).parents[2]
REFUSED = (InvalidRequest,)  # what every parser here documents (InvalidEvent is one)

# -- CloudEvents -------------------------------------------------------------------------------------------------

TRICKY = [
    "", "1.0", "0.3", "1", " ", "%", "%ZZ", "%41", "caf\udce9", "é", "\x00", "a\r\nb", "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00", "9999-99-99T99:99:99Z", "+275760-09-13T00:00:00Z", "0001-01-01T00:00:00-23:59",
    "application/json", "application/json; charset=utf-8", "text/plain", "application/octet-stream", "xml",
]  # fmt: skip
texts = st.sampled_from(TRICKY) | st.text(max_size=12) | st.text(st.characters(exclude_categories=()), max_size=6)
json_texts = texts.filter(lambda t: t.encode("utf-8", "surrogatepass").decode("utf-8", "replace") == t)
ATTRIBUTES = ["specversion", "id", "source", "type", "time", "subject", "dataschema", "datacontenttype", "runid"]
names = st.sampled_from([*ATTRIBUTES, "partitionkey", "Type", "x_y", "", "a" * 30, "data", "data_base64"])
VALID = {"specversion": "1.0", "id": "1", "source": "/fuzz", "type": "dev.fuzz", "time": "2026-01-01T00:00:00Z"}
bodies = json_values.map(orjson.dumps) | st.binary(max_size=40) | mutated_bytes(b'{"k": [1, 2.5, "x"]}') | st.just(b"")


@st.composite
def binary_mode(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    """Headers of a binary-mode event with some attributes changed, removed or added, and a body."""
    headers = {f"ce-{k}": v for k, v in VALID.items()} | {"content-type": "application/json"}
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["ce-", "Ce-", "CE-", ""]) | st.just("content-")) + draw(names)
        if draw(st.integers(0, 3)):
            headers[name] = draw(texts)
        else:
            headers.pop(name, None)
    return headers, draw(bodies)


@st.composite
def structured(draw: st.DrawFn) -> dict:
    """A structured-mode event object with some fields changed, removed or added."""
    event: dict = {**VALID, "datacontenttype": "application/json", "data": {"k": 1}}
    for _ in range(draw(st.integers(0, 4))):
        name = draw(names)
        if draw(st.integers(0, 3)):
            event[name] = draw(json_texts | json_values)
        else:
            event.pop(name, None)
    return event


structured_bodies = structured().map(orjson.dumps).flatmap(lambda b: st.just(b) | mutated_bytes(b))
batch_bodies = st.lists(structured(), max_size=3).map(orjson.dumps).flatmap(lambda b: st.just(b) | mutated_bytes(b))
HTTP_SETTINGS, HTTP_BUDGET = fuzz("parsers: CloudEvents HTTP binding", examples=300, seconds=8)


@HTTP_SETTINGS
@given(
    message=binary_mode()
    | structured_bodies.map(lambda b: ({"content-type": bindings.STRUCTURED_CONTENT_TYPE}, b))
    | bodies.map(lambda b: ({"content-type": bindings.STRUCTURED_CONTENT_TYPE}, b)),
    batch=batch_bodies,
)
def test_http_events_are_read_or_refused_as_invalid(message: tuple[dict[str, str], bytes], batch: bytes) -> None:
    if not HTTP_BUDGET.take():
        return
    headers, body = message
    for codec in (bindings, wire):  # the reference and the broker's fast path
        refused_or_done(lambda: codec.from_http(headers, body), REFUSED)  # noqa: B023
        refused_or_done(lambda: codec.from_batch(batch), REFUSED)  # noqa: B023
        refused_or_done(lambda: codec.from_json(body), REFUSED)  # noqa: B023


KAFKA_SETTINGS, KAFKA_BUDGET = fuzz("parsers: CloudEvents Kafka binding", examples=200, seconds=6)
kafka_names = st.sampled_from(["ce_", "CE_", ""]).flatmap(lambda p: names.map(lambda n: p + n))
kafka_values = texts.map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(max_size=8)


@st.composite
def kafka_records(draw: st.DrawFn) -> tuple[list[tuple[str, bytes]], bytes | None, bytes]:
    headers = [(f"ce_{k}", v.encode()) for k, v in VALID.items()] + [("content-type", b"application/json")]
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 3)) and headers:
            headers.pop(draw(st.integers(0, len(headers) - 1)))
        else:
            headers.append((draw(kafka_names | st.just("content-type")), draw(kafka_values)))
    key = draw(st.none() | st.binary(max_size=8))
    return headers, key, draw(bodies | structured_bodies)


@KAFKA_SETTINGS
@given(record=kafka_records())
def test_kafka_records_are_read_or_refused_as_invalid(record: tuple[list, bytes | None, bytes]) -> None:
    if not KAFKA_BUDGET.take():
        return
    headers, key, value = record
    for codec in (bindings, wire):
        refused_or_done(lambda: codec.from_kafka(headers, key, value), REFUSED)  # noqa: B023


# -- sources ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lifecycle_settings(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    env = {"KNFLOW_DATA_DIR": str(tmp_path_factory.mktemp("fuzz-parsers"))}
    return with_lifecycle(load_settings(env, config_file=None))


NOTIFICATION = minio_notification("knflow", "raw/digits/d%20x.csv")
notifications = mutated_tree(NOTIFICATION, junk=json_values | json_texts) | mutated_bytes(
    orjson.dumps(NOTIFICATION)
).map(lambda raw: orjson.loads(raw) if _is_json(raw) else None)
MINIO_SETTINGS, MINIO_BUDGET = fuzz("parsers: MinIO notifications", examples=300, seconds=6)


def _is_json(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False  # the handler answers 400 "not JSON" before parsing
    return True


def test_minio_notifications_are_read_or_refused_as_invalid(lifecycle_settings) -> None:  # type: ignore[no-untyped-def]
    @MINIO_SETTINGS
    @given(payload=notifications)
    def one(payload: object) -> None:
        if MINIO_BUDGET.take():
            refused_or_done(lambda: notification_events(payload, lifecycle_settings), REFUSED)

    one()


SECRET = "s3cret"
WEBHOOK_SETTINGS, WEBHOOK_BUDGET = fuzz("parsers: webhook signatures", examples=300, seconds=4)
signatures = st.builds(sign, st.just(SECRET), st.binary(max_size=8), st.integers(0, 2**40)).flatmap(
    lambda s: st.just(s) | mutated_bytes(s.encode()).map(lambda b: b.decode("utf-8", "surrogateescape"))
)


@WEBHOOK_SETTINGS
@given(header=signatures | texts, body=st.binary(max_size=16), secret=st.sampled_from([SECRET, ""]))
def test_webhook_signatures_are_checked_without_raising(header: str, body: bytes, secret: str) -> None:
    if not WEBHOOK_BUDGET.take():
        return
    pair = parse_signature(header)
    assert pair is None or (isinstance(pair[0], int) and len(pair[1]) == 64)
    reason = verify(secret, header, body, 300.0, now=pair[0] if pair else None)
    assert reason is None or isinstance(reason, str)
    refused_or_done(lambda: verify(secret, header, body, 300.0), ())


# -- pipeline specs and run options --------------------------------------------------------------------------

LIFECYCLE_TEXT = (ROOT / "functions" / "lifecycle.yaml").read_bytes()
LIFECYCLE = yaml.safe_load(LIFECYCLE_TEXT)
odd_yaml = (
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)
    | st.integers(1, 3000).map(lambda n: "{a: " * n + "1" + "}" * n)
    | st.integers(1, 12).map(
        lambda n: "a0: &a0 [x, x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n" for i in range(1, n))
    )
    | st.sampled_from(["", "~", "!!python/object:os.system x", "- 1\n- 2", "a: !!binary x", "%YAML 9.9\n---\n1"])
)  # fmt: skip
specs = (
    mutated_bytes(LIFECYCLE_TEXT)
    | mutated_bytes(LIFECYCLE_TEXT).map(lambda b: b.decode("utf-8", "replace"))
    | mutated_tree(LIFECYCLE, most=4, junk=json_values | json_texts)
    | odd_yaml
)
PIPELINE_SETTINGS, PIPELINE_BUDGET = fuzz("parsers: pipeline specs", examples=250, seconds=10)


@PIPELINE_SETTINGS
@given(raw=specs)
def test_pipeline_specs_are_read_or_refused_naming_the_field(raw: object) -> None:
    if PIPELINE_BUDGET.take():
        refused_or_done(lambda: parse_pipeline(raw), REFUSED)


OPTION_VALUES = {
    "task": st.sampled_from(["classification", "regression", "clustering"]),
    "label": json_texts,
    "categorical": st.lists(json_texts, max_size=3),
    "seed": st.integers(-(2**70), 2**70),
    "val_fraction": st.floats(),
    "test_fraction": st.floats(-1, 1),
}
valid_options = {**DEMO_OPTIONS, "task": "classification"}
options = mutated_tree(valid_options, most=4, junk=json_values | json_texts) | st.dictionaries(
    st.sampled_from([*OPTION_VALUES, "train", "tuning", "deploy", "drift", "model_name", "x"]),
    json_values,
    max_size=4,
).flatmap(lambda raw: st.fixed_dictionaries({k: OPTION_VALUES.get(k, st.just(v)) for k, v in raw.items()}))
OPTIONS_SETTINGS, OPTIONS_BUDGET = fuzz("parsers: run options", examples=300, seconds=8)


@OPTIONS_SETTINGS
@given(raw=options | json_values)
def test_run_options_are_read_or_refused_naming_the_option(raw: object) -> None:
    if OPTIONS_BUDGET.take():
        refused_or_done(lambda: parse_options(raw, "knflow.json"), REFUSED)  # type: ignore[arg-type]
