"""Virtual environments of deployed functions: one per dependency list, built once and shared by every function
that declares the same list.

A function's environment must import both its own dependencies and knflow (the host that serves it). knflow
usually runs from a virtual environment itself, and ``venv --system-site-packages`` would expose the *base*
interpreter's site-packages, not knflow's; so each environment is a plain venv of knflow's base interpreter
whose site-packages holds a ``.pth`` file adding knflow's own site directories (``site.addsitedir``, so
knflow's editable install and its dependencies resolve) after the environment's own. The function's pins come
first; what it does not declare comes from knflow's environment, and pip skips what that already satisfies.

Layout: ``<data_dir>/functions/envs/<key>/`` with ``key`` the hash of the sorted dependency list, the Python
version and knflow's site directories; ``knflow-env.json`` in it is written last, so an environment without it
is a failed or interrupted build and is rebuilt. A failed install leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import site
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from infra.atomic import write_json
from infra.errors import InvalidRequest, Unavailable

log = logging.getLogger(__name__)

MARKER = "knflow-env.json"
PTH = "_knflow_host.pth"
INSTALL_TIMEOUT_S = 900.0


def env_key(dependencies: Sequence[str]) -> str:
    """The cache key of a dependency list: order and duplicates do not matter; the Python version and where
    knflow lives (what the environment's ``.pth`` points at) do."""
    canon = sorted({d.strip() for d in dependencies})
    payload = json.dumps({"python": list(sys.version_info[:2]), "host": host_site_dirs(), "dependencies": canon})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def host_site_dirs() -> list[str]:
    """knflow's own site directories and the directory its packages are imported from."""
    import functions

    dirs = [*site.getsitepackages(), Path(functions.__file__).resolve().parents[1].as_posix()]
    return list(dict.fromkeys(d for d in dirs if Path(d).is_dir()))


class Environments:
    """The environments under ``root`` (``<data_dir>/functions/envs``)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def python_of(self, key: str) -> Path:
        return self.root / key / "bin" / "python"

    def ensure(self, dependencies: Sequence[str]) -> Path | None:
        """The interpreter of the environment for ``dependencies`` (built if needed); None when there are none
        (the function runs under knflow's own interpreter). ``InvalidRequest`` with pip's reason when they
        cannot be installed."""
        if not dependencies:
            return None
        key = env_key(dependencies)
        with self._locked(key):
            env = self.root / key
            if (env / MARKER).is_file():
                return self.python_of(key)
            shutil.rmtree(env, ignore_errors=True)  # an interrupted build
            try:
                self._build(env, list(dependencies))
            except BaseException:
                shutil.rmtree(env, ignore_errors=True)
                raise
            return self.python_of(key)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        (self.root / ".locks").mkdir(parents=True, exist_ok=True)
        with open(self.root / ".locks" / key, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two deploys of one dependency list build it once
            yield

    def _build(self, env: Path, dependencies: list[str]) -> None:
        started = time.monotonic()
        base = getattr(sys, "_base_executable", sys.executable)
        _run([base, "-m", "venv", "--without-pip", str(env)], "creating the environment", 120)
        python = env / "bin" / "python"
        purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], "venv", 60)
        adds = "; ".join(f"site.addsitedir({d!r})" for d in host_site_dirs())
        (Path(purelib.strip()) / PTH).write_text(f"import site; {adds}\n")  # .pth: one line, run at start
        pip = [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-input",
            "--disable-pip-version-check",
        ]
        _run([*pip, *dependencies], "installing " + " ".join(dependencies), INSTALL_TIMEOUT_S)
        write_json(env / MARKER, {"dependencies": dependencies, "built_s": round(time.monotonic() - started, 1)})
        log.info("environment %s built for %s in %.1fs", env.name, dependencies, time.monotonic() - started)


def _run(argv: list[str], what: str, timeout: float) -> str:
    """Run a build step; ``InvalidRequest`` with the tool's own reason when it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{what}: gave up after {timeout:.0f}s") from None
    except OSError as exc:
        raise Unavailable(f"{what}: {exc}") from None
    if done.returncode != 0:
        raise InvalidRequest(f"{what} failed: {pip_reason(done.stderr or done.stdout)}")
    return done.stdout


def pip_reason(output: str) -> str:
    """The lines of pip's output that say why it failed (its ``ERROR:`` lines, else the last lines)."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    chosen = errors or [line for line in lines if not line.startswith("WARNING:")][-8:]
    return "\n".join(chosen)[-2000:] or "no output"
