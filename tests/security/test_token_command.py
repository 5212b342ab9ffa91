"""`knflow token create|ls|revoke` as the README's Security section shows it, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from infra.auth import TokenFile


def knflow_token(data: Path, *args: str) -> subprocess.CompletedProcess:
    (data / "knflow.toml").touch()
    env = {**os.environ, "KNFLOW_DATA_DIR": str(data), "KNFLOW_CONFIG": str(data / "knflow.toml")}
    return subprocess.run([sys.executable, "-m", "knflow", "token", *args], capture_output=True, text=True, env=env)


def test_a_token_is_printed_once_listed_without_its_secret_and_revoked(tmp_path: Path) -> None:
    created = knflow_token(tmp_path, "create", "ci", "--role", "editor", "--namespace", "team-a")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    principal = TokenFile(tmp_path / "tokens.json").verify(token)
    assert principal is not None and (principal.name, principal.role) == ("ci", "editor")
    listed = knflow_token(tmp_path, "ls")
    assert listed.returncode == 0 and "ci" in listed.stdout and "editor" in listed.stdout and "team-a" in listed.stdout
    assert token not in listed.stdout
    assert knflow_token(tmp_path, "revoke", "ci").returncode == 0
    assert TokenFile(tmp_path / "tokens.json").verify(token) is None
