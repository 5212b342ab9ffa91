"""``knflow func new``: a function directory in the layout Knative's ``func create -l python`` writes, in either
shape the host loads: Knative's (``new()`` returning an object with ``async handle(scope, receive, send)``, the
CloudEvents flavour; the default) or knflow's (``handle(event, ctx)``).

The written function passes each event on as ``com.example.<name>.done`` with the same data, so it can sit
between two steps of a pipeline as it is; its test runs with ``python -m pytest`` in the directory.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from functions.runtime.instances import check_name
from infra.errors import Conflict

SHAPES = ("knative", "knflow")
SCHEMA = "https://raw.githubusercontent.com/knative/func/refs/heads/main/schema/func_yaml-schema.json"

FUNC_YAML = """\
# $schema: {schema}
# yaml-language-server: $schema={schema}
specVersion: 0.36.0
name: {name}
runtime: python
created: {created}
invoke: cloudevent
"""

PYPROJECT = """\
[project]
name = "function"
description = "{name}: a step of a knflow pipeline"
version = "0.1.0"
requires-python = ">=3.11"
# What the function needs besides knflow, which hosts it (cloudevents comes with knflow). `knflow deploy`
# installs these into an environment of the function's own; with none it runs under knflow's interpreter.
dependencies = []

[project.optional-dependencies]
test = ["pytest", "pytest-asyncio"]

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.pytest.ini_options]
pythonpath = ["."]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
"""

KNATIVE_INIT = "from .func import new\n"
KNFLOW_INIT = "from .func import handle\n"

KNATIVE_FUNC = '''\
"""{name}: a step of a knflow pipeline, in Knative's Python function shape (func-python's CloudEvents flavour)."""

import logging
import uuid

from cloudevents.core.v1.event import CloudEvent

#: The type of the event this function answers with: the step's `emits` in the pipeline spec.
REPLY_TYPE = "com.example.{name}.done"


def new():
    """Called once per instance; the object's handle() then takes every event."""
    return Function()


class Function:
    def start(self, cfg):
        """Called when an instance starts, with its environment (a copy of os.environ)."""
        logging.info("{name} starting")

    async def handle(self, scope, receive, send):
        """The request's CloudEvent is decoded in scope["event"]; knflow's context (artifact store, emit, the
        step's settings) is scope.get("knflow"). Answer with `await send(event)`; send nothing for no reply."""
        event = scope["event"]
        ctx = scope.get("knflow")
        settings = ctx.step_settings if ctx is not None else {{}}
        if ctx is not None:
            ctx.log.info("{name}: %s with step settings %s", event.get_type(), settings)
        reply = CloudEvent(
            attributes={{"type": REPLY_TYPE, "source": "/functions/{name}", "id": str(uuid.uuid4())}},
            data=event.get_data(),
        )
        await send(reply)

    def stop(self):
        """Called when an instance stops (scaled to zero, replaced)."""
        logging.info("{name} stopping")

    def alive(self):
        return True, "Alive"

    def ready(self):
        return True, "Ready"
'''

KNFLOW_FUNC = '''\
"""{name}: a step of a knflow pipeline, in knflow's function shape: handle(event, ctx) returns the reply."""

from cloudevents.core.v1.event import CloudEvent

from eventing.events import new_event
from functions.runtime import Context

#: The type of the event this function answers with: the step's `emits` in the pipeline spec.
REPLY_TYPE = "com.example.{name}.done"


async def handle(event: CloudEvent, ctx: Context) -> CloudEvent | None:
    """Pass the event's data on. ctx.store is the artifact store, ctx.step_settings the step's settings, ctx.emit
    sends more events; raise infra.errors.InvalidRequest to refuse the event (a 4xx is not retried)."""
    ctx.log.info("{name}: %s with step settings %s", event.get_type(), ctx.step_settings)
    return new_event(REPLY_TYPE, f"/functions/{{ctx.function}}", event.get_data(), cause=event)
'''

KNATIVE_TEST = '''\
"""The function answers an event with REPLY_TYPE and the same data (run: python -m pytest)."""

from cloudevents.core.v1.event import CloudEvent

from function import new
from function.func import REPLY_TYPE


async def test_passes_the_data_on():
    event = CloudEvent({{"id": "1", "type": "com.example.test", "source": "/tests"}}, {{"rows": 3}})
    sent = []

    async def send(reply):
        sent.append(reply)

    await new().handle({{"event": event}}, None, send)
    assert [(r.get_type(), r.get_data()) for r in sent] == [(REPLY_TYPE, {{"rows": 3}})]
'''

KNFLOW_TEST = '''\
"""The function answers an event with REPLY_TYPE and the same data (run: python -m pytest)."""

import logging
from types import SimpleNamespace

from cloudevents.core.v1.event import CloudEvent

from function import handle
from function.func import REPLY_TYPE


async def test_passes_the_data_on():
    event = CloudEvent({{"id": "1", "type": "com.example.test", "source": "/tests"}}, {{"rows": 3}})
    ctx = SimpleNamespace(function="{name}", step_settings={{}}, log=logging.getLogger("test"))
    reply = await handle(event, ctx)
    assert (reply.get_type(), reply.get_data()) == (REPLY_TYPE, {{"rows": 3}})
'''

README = """\
# {name}

A knflow function in {shape} shape, in the layout of Knative's `func create -l python`.

- `function/func.py`: the handler; `function/__init__.py` exports it.
- `pyproject.toml`: the function's own dependencies (installed by `knflow deploy` into an environment of its own).
- `tests/test_func.py`: `python -m pytest`.

Deploy it to the running platform with `knflow deploy .`, and put it into a pipeline with a step whose
`function` is this directory (or `{name}` once deployed). See docs/functions.md of knflow.
"""


def new_function(name: str, directory: Path | None = None, shape: str = "knative") -> Path:
    """Write a function directory (default ``./NAME``); ``Conflict`` if it exists and is not empty."""
    check_name(name)
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}")
    root = Path(directory) if directory is not None else Path(name)
    if root.exists() and any(root.iterdir()):
        raise Conflict(f"{root} exists and is not empty")
    created = dt.datetime.now(dt.UTC).isoformat()
    knative = shape == "knative"
    files = {
        "func.yaml": FUNC_YAML.format(schema=SCHEMA, name=name, created=created),
        "pyproject.toml": PYPROJECT.format(name=name),
        "README.md": README.format(name=name, shape="Knative's" if knative else "knflow's"),
        "function/__init__.py": KNATIVE_INIT if knative else KNFLOW_INIT,
        "function/func.py": (KNATIVE_FUNC if knative else KNFLOW_FUNC).format(name=name),
        "tests/test_func.py": (KNATIVE_TEST if knative else KNFLOW_TEST).format(name=name),
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
