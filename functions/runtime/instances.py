"""The function instances a runner hosts besides the built-in ones: a name, what to load, its environment and
the interpreter it runs under.

They are kept in ``<data_dir>/functions/instances.json`` (written atomically), so a restarted runner hosts
them again; a pipeline step with settings, and a user's deployed function, are such instances.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated

import pydantic

from infra.atomic import write_json
from infra.errors import InvalidRequest
from infra.validation import parse

NAME = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
#: An instance of a namespace's pipeline step: ``<ns>.<pipeline>-<step>`` (``functions.runtime.pipeline.owned``).
OWNED_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
EnvName = Annotated[str, pydantic.Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


class Instance(pydantic.BaseModel):
    """What a runner needs to host one function instance."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    target: str = pydantic.Field(min_length=1, max_length=1000)  # a built-in name, dotted module, .py file or directory
    env: dict[EnvName, Annotated[str, pydantic.Field(max_length=65536)]] = pydantic.Field(default_factory=dict)
    #: The interpreter of the function's own environment (``.../bin/python``); None: forked from the runner's template.
    python: str | None = pydantic.Field(default=None, min_length=1, max_length=1000)
    #: The hosted function this instance runs with an environment of its own (a pipeline step's settings): when that
    #: function is deployed again, the instance follows it to the new version.
    function: str | None = pydantic.Field(default=None, pattern=NAME)

    def digest(self) -> str:
        """A short digest of the environment (status shows it instead of values that may be secret)."""
        return hashlib.sha256(json.dumps(self.env, sort_keys=True).encode()).hexdigest()[:16]


def check_name(name: str) -> str:
    """``name`` if it can name an instance (a DNS label, as a Knative Service name must be)."""
    if not re.match(NAME, name):
        raise InvalidRequest(f"function name {name!r} must be a DNS label (lowercase letters, digits, '-')")
    return name


def check_instance_name(name: str) -> str:
    """``name`` if it can name a hosted instance: a function's name, or a namespace's step instance's."""
    if len(name) > 63 or not re.match(OWNED_NAME, name):
        return check_name(name)
    return name


def instances_path(data_dir: Path) -> Path:
    return data_dir / "functions" / "instances.json"


def load_instances(path: Path) -> dict[str, Instance]:
    """The instances recorded at ``path`` (none when there is no file yet)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise InvalidRequest(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: expected an object of function instances")
    return {check_instance_name(name): parse(Instance, body, f"{path}: {name}") for name, body in raw.items()}


def save_instances(path: Path, instances: dict[str, Instance]) -> None:
    write_json(path, {name: inst.model_dump() for name, inst in sorted(instances.items())})
