"""Where a training entrypoint's code lives and which interpreter runs it: an installed package (knflow's own
interpreter), a directory on disk, or a deployed function (a name with a directory and maybe an environment).

A deployed function is found through ``<data_dir>/functions/deployed/<name>.json``: ``{"directory": "/abs/path",
"python": "/abs/path/bin/python"}`` (``python`` optional), written by ``knflow deploy``. A directory with a virtual
environment of its own at ``.venv/`` runs with that environment's interpreter.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from infra.errors import InvalidRequest

DEPLOYED_DIR = Path("functions") / "deployed"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")


@dataclass(frozen=True)
class UserCode:
    """A located entrypoint: the directory put first on its ``sys.path`` (None: an installed package) and the
    interpreter of the child process that runs it."""

    directory: Path | None
    python: str
    origin: str  # for messages: "installed packages", "directory /x", "function NAME"

    @property
    def own_environment(self) -> bool:
        return Path(self.python) != Path(sys.executable)


def deployed_manifest(data_dir: Path, name: str) -> Path:
    """Where the record of a deployed function named ``name`` lives."""
    return data_dir / DEPLOYED_DIR / f"{name}.json"


def locate(code: str | None, data_dir: Path) -> UserCode:
    """The code a ``train.code`` value names; InvalidRequest saying what is missing."""
    if code is None:
        return UserCode(None, sys.executable, "installed packages")
    if code.startswith(("/", "~")):
        directory = Path(code).expanduser()
        if not directory.is_dir():
            raise InvalidRequest(f"train.code {code!r}: no such directory")
        return UserCode(directory, environment_python(directory) or sys.executable, f"directory {directory}")
    if "/" in code or code.startswith("."):
        raise InvalidRequest(f"train.code {code!r}: give a directory as an absolute path, or a function's name")
    if not _NAME.match(code):
        raise InvalidRequest(f"train.code {code!r} is not a function name (lower case letters, digits, '-', '.', '_')")
    return _deployed(code, data_dir)


def _deployed(name: str, data_dir: Path) -> UserCode:
    path = deployed_manifest(data_dir, name)
    try:
        record = json.loads(path.read_text())
        directory = Path(record["directory"])
    except FileNotFoundError:
        raise InvalidRequest(f"train.code {name!r}: no function of that name is deployed (knflow deploy)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidRequest(f"train.code {name!r}: its record {path} is unreadable ({exc})") from None
    if not directory.is_dir():
        raise InvalidRequest(f"train.code {name!r}: its directory {directory} is gone")
    python = record.get("python") or environment_python(directory) or sys.executable
    if not os.access(python, os.X_OK):
        raise InvalidRequest(f"train.code {name!r}: its interpreter {python} cannot be run")
    return UserCode(directory, str(python), f"function {name}")


def environment_python(directory: Path) -> str | None:
    """The interpreter of a virtual environment kept in the directory (``.venv/bin/python``), if there is one."""
    python = directory / ".venv" / "bin" / "python"
    return str(python) if os.access(python, os.X_OK) else None
