"""Deploying a user's function directory onto the running platform (``knflow deploy``, and pipeline steps whose
``function`` is a directory).

Deploying checks func.yaml (name, runtime python), installs the dependencies of pyproject.toml into an
environment of the function's own (``knflow.environments``; none when it declares none), copies the directory
into ``<data_dir>/functions/sources/<name>/<version>/`` (``version``: a digest of its files, so later edits of
the original change nothing deployed), imports it in a child process of its environment
(``functions.runtime.check``: a syntax error or a missing handler is refused with the file and line), and only
then asks the runner to host it (``PUT /admin/functions/<name>``: its own worker, scaled to zero, restarted
after a crash). A refusal at any point leaves nothing deployed: no copy, no instance, no environment that was
not built completely. What was deployed is recorded in ``<data_dir>/functions/deployed/<name>.json``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from functions.runtime.funcdir import FunctionDir, read_function_dir
from functions.runtime.instances import Instance, check_name
from functions.runtime.loader import KNOWN_FUNCTIONS
from infra.atomic import write_json
from infra.auth import auth_headers
from infra.errors import Conflict, InvalidRequest, KnflowError, NotFound, Unavailable
from infra.httpclient import JsonClient
from infra.settings import Settings
from knflow.environments import Environments

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 120.0
#: What is not part of a function's code: caches, environments, version control, func's build directory.
IGNORED = shutil.ignore_patterns(
    "__pycache__", "*.pyc", ".git", ".venv", "venv", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".func"
)


@dataclass(frozen=True)
class Deployed:
    """One deployed function: where its code and environment are, and what it was deployed from."""

    name: str
    version: str
    directory: str  # the deployed copy
    source: str  # the directory it was deployed from
    python: str | None  # its environment's interpreter; None: knflow's own (workers forked from the template)
    dependencies: tuple[str, ...]
    image: str | None  # func.yaml's image, for the cluster
    shape: str  # "knative" or "knflow"
    deployed: str  # ISO time

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Deployed:
        return cls(**{**raw, "dependencies": tuple(raw.get("dependencies") or ())})


class Deployer:
    """Deploys function directories to the runner of one platform and keeps the record of what it deployed."""

    def __init__(self, settings: Settings, runner: JsonClient | None = None):
        self.settings = settings
        self.runner = runner or JsonClient(
            settings.url(settings.functions_port), timeout=120.0, headers=auth_headers(settings)
        )
        root = settings.data_dir / "functions"
        self.sources, self.records = root / "sources", root / "deployed"
        self.environments = Environments(root / "envs")

    # -- reading ----------------------------------------------------------------------------------------------

    def list(self) -> dict[str, Deployed]:
        """Every deployed function's record, by name."""
        return {p.stem: self.get(p.stem) for p in sorted(self.records.glob("*.json"))}

    def get(self, name: str) -> Deployed:
        try:
            return Deployed.from_json(json.loads((self.records / f"{name}.json").read_text()))
        except FileNotFoundError:
            raise NotFound(f"no function named {name!r} was deployed") from None

    # -- deploying --------------------------------------------------------------------------------------------

    def deploy(self, directory: str | Path, name: str | None = None) -> Deployed:
        """Check, install, copy and host the function in ``directory`` (under func.yaml's name unless ``name``)."""
        source = Path(directory).resolve()
        fdir = read_function_dir(source)
        name = check_name(name or fdir.meta.name)
        if name in KNOWN_FUNCTIONS:
            raise Conflict(f"{name!r} is a built-in function; deploy yours under another name (--name)")
        python = self.environments.ensure(fdir.dependencies)
        final, created, shape = self._copy(fdir, name, python)
        instance = Instance(target=str(final), python=str(python) if python else None)
        try:
            self.runner.call("PUT", f"/admin/functions/{name}", instance.model_dump())
        except KnflowError:
            if created:
                shutil.rmtree(final, ignore_errors=True)
            raise
        record = Deployed(
            name, final.name, str(final), str(source), instance.python, fdir.dependencies, fdir.meta.image, shape,
            dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )  # fmt: skip
        write_json(self.records / f"{name}.json", asdict(record), indent=2)
        self._prune(name, keep=final)
        log.info("function %s deployed: version %s from %s", name, record.version, source)
        return record

    def _copy(self, fdir: FunctionDir, name: str, python: Path | None) -> tuple[Path, bool, str]:
        """Copy the directory into the data dir and check the copy loads; (its path, whether new, its shape)."""
        home = self.sources / name
        home.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=home, prefix=".staging-"))
        try:
            shutil.copytree(fdir.path, staging, ignore=IGNORED, dirs_exist_ok=True)
            final = home / tree_digest(staging)
            verdict = check_loads(staging, python, fdir.path)
            created = not final.exists()
            if created:
                staging.rename(final)
            return final, created, verdict["shape"]
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _prune(self, name: str, keep: Path) -> None:
        """Remove the versions of ``name`` no hosted instance runs any more."""
        with contextlib.suppress(KnflowError):
            used = {info.get("module") for info in self.runner.call("GET", "/functions").values()}
            for version in (self.sources / name).iterdir():
                if version != keep and not version.name.startswith(".") and str(version) not in used:
                    shutil.rmtree(version, ignore_errors=True)

    # -- removing ---------------------------------------------------------------------------------------------

    def remove(self, name: str) -> None:
        """Stop hosting a deployed function and delete its copies (environments stay, cached for others)."""
        hosted = self.runner.call("GET", "/functions")
        followers = sorted(n for n, info in hosted.items() if info.get("function") == name)
        if followers:
            raise Conflict(f"function {name} runs as {', '.join(followers)} of a pipeline; change that pipeline first")
        known = (self.records / f"{name}.json").exists()
        try:
            self.runner.call("DELETE", f"/admin/functions/{name}")
        except NotFound:
            if not known:
                raise NotFound(f"no function named {name!r} was deployed") from None
        (self.records / f"{name}.json").unlink(missing_ok=True)
        shutil.rmtree(self.sources / name, ignore_errors=True)


def check_loads(directory: Path, python: Path | None, shown_as: Path) -> dict[str, Any]:
    """Import the function at ``directory`` in a child process of its environment; its verdict, or
    ``InvalidRequest`` naming the file (as under ``shown_as``) and line at fault."""
    argv = [str(python or sys.executable), "-m", "functions.runtime.check", str(directory)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},  # the copy stays as it was deployed
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise InvalidRequest(f"{shown_as}: importing the function took more than {CHECK_TIMEOUT_S:.0f}s") from None
    try:
        verdict = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise Unavailable(f"{shown_as}: the load check gave no verdict: {done.stderr[-1000:]}") from None
    if not verdict["ok"]:
        file, line = verdict.get("file"), verdict.get("line")
        where = f"{shown_as / file if file and not Path(file).is_absolute() else file or shown_as}"
        where += f":{line}" if line else ""
        raise InvalidRequest(f"{where}: {verdict['error']}")
    return verdict


def tree_digest(root: Path) -> str:
    """A digest of a directory's files (paths and bytes): the deployed version's name."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]
