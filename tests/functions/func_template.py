"""A function directory exactly as Knative's ``func create -l python -t cloudevents checkout`` writes it today
(func's ``templates/python/cloudevents``: ``function/func.py``, ``function/__init__.py``, ``pyproject.toml``,
``tests/test_func.py``, and the func.yaml func writes for it; the template's README is left out). Kept byte for
byte, so the test that deploys it proves a directory made by ``func create`` deploys unchanged."""

from __future__ import annotations

from pathlib import Path

SCHEMA = "https://raw.githubusercontent.com/knative/func/refs/heads/main/schema/func_yaml-schema.json"

FUNC_YAML = f"""\
# $schema: {SCHEMA}
# yaml-language-server: $schema={SCHEMA}
specVersion: 0.36.0
name: checkout
runtime: python
created: 2026-11-29T12:00:00.123456789+00:00
invoke: cloudevent
"""

FUNCTION_INIT = "from .func import new\n"

FUNC_PY = '''# Function
import logging
from cloudevents.core.v1.event import CloudEvent


def new():
    """ New is the only method that must be implemented by a Function.
    The instance returned can be of any name.
    """
    return Function()


class Function:
    def __init__(self):
        """ The init method is an optional method where initialization can be
        performed. See the start method for a startup hook which includes
        configuration.
        """

    async def handle(self, scope, receive, send):
        """ Handle all HTTP requests to this Function other than readiness
        and liveness probes.  The CloudEvent from the request is already
        decoded and available in the scope as 'event'.

        The 'send' method can be used to directly send a structured CloudEvent
        as a response.

        To send a binary encoded CloudEvent use `send.binary(myResponseEvent)`.
        """
        logging.info("Request Received")

        # 1) Extract the CloudEvent from the scope
        request = scope["event"]

        # 2) Create a new CloudEvent as response with "OK" as data
        response = CloudEvent(
            attributes={
                "type": "function.response",
                "source": "function",
                "id": f"response-{request.get_id() or 'unknown'}"
            },
            data={"message": "OK"}
        )

        # 3) Send the response CloudEvent
        # The 'send' method is already decorated with CloudEvent middleware
        await send(response)

    def start(self, cfg):
        """ start is an optional method which is called when a new Function
        instance is started, such as when scaling up or during an update.
        Provided is a dictionary containing all environmental configuration.
        Args:
            cfg (Dict[str, str]): A dictionary containing environmental config.
                In most cases this will be a copy of os.environ, but it is
                best practice to use this cfg dict instead of os.environ.
        """
        logging.info("Function starting")

    def stop(self):
        """ stop is an optional method which is called when a function is
        stopped, such as when scaled down, updated, or manually canceled.  Stop
        can block while performing function shutdown/cleanup operations.  The
        process will eventually be killed if this method blocks beyond the
        platform's configured maximum studown timeout.
        """
        logging.info("Function stopping")

    def alive(self):
        """ alive is an optional method for performing a deep check on your
        Function's liveness.  If removed, the system will assume the function
        is ready if the process is running. This is exposed by default at the
        path /health/liveness.  The optional string return is a message.
        """
        return True, "Alive"

    def ready(self):
        """ ready is an optional method for performing a deep check on your
        Function's readiness.  If removed, the system will assume the function
        is ready if the process is running.  This is exposed by default at the
        path /health/readiness.
        """
        return True, "Ready"
'''

PYPROJECT = """[project]
name = "function"
description = ""
version = "0.1.0"
requires-python = ">=3.9"
readme = "README.md"
license = "MIT"
dependencies = [
  "httpx",
  "cloudevents",
  "pytest",
  "pytest-asyncio"
]
authors = [
  { name="Your Name", email="you@example.com"},
]

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.pytest.ini_options]
asyncio_mode = "strict"
asyncio_default_fixture_loop_scope = "function"


"""

TEST_FUNC = '''"""
Unit tests for the CloudEvent function implementation.
Tests both the function health endpoints and its handling of CloudEvents.

Functions are currently served as ASGI applications using hypercorn, so we
use httpx for testing.  To run the tests using poetry:

poetry run python -m unittest discover
"""
import json
import asyncio
import pytest
from cloudevents.http import CloudEvent
from function import new


@pytest.mark.asyncio
async def test_func():
    f = new()  # Instantiate Function to Test

    # A test CloudEvent
    attributes = {
        "id": "test-id",
        "type": "com.example.test1",
        "source": "https://example.com/event-producer",
    }
    data = {"message": "test message"}
    event = CloudEvent(attributes, data)

    invoked = False  # Flag indicating send method was invoked

    # Send
    # confirms the Functions responds with a CloudEvent containing "OK".
    async def send(e):
        nonlocal invoked
        invoked = True  # Flag send was invoked

        # Ensure we got a CloudEvent
        assert isinstance(e, CloudEvent), f"Expected CloudEvent, got {type(e)}"

        # Ensure it returns {"message": "OK"} as data
        expected = {"message": "OK"}
        assert e.data == expected, f"Expected data {expected}, got {e.data}"

    # Invoke the Function
    scope = {"event": event}  # Add the CloudEvent to the scope
    await f.handle(scope, {}, send)

    # Assert send was called
    assert invoked, "Function did not call send"
'''

FILES = {
    "func.yaml": FUNC_YAML,
    "pyproject.toml": PYPROJECT,
    "function/__init__.py": FUNCTION_INIT,
    "function/func.py": FUNC_PY,
    "tests/test_func.py": TEST_FUNC,
}


def write_func_create_directory(root: Path) -> Path:
    """Write the directory under ``root`` and return it."""
    for relative, text in FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
