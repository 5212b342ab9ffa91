"""The ``knflow`` command: help lists the commands that exist, each with a one-line help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from knflow.cli import COMMANDS, build_parser

ROOT = Path(__file__).parents[1]


def test_help_lists_every_command_with_one_line_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "knflow", "--help"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    for name in COMMANDS:
        assert f"    {name}" in out
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for choice in sub._choices_actions:
        assert choice.help and "\n" not in choice.help


def test_help_imports_no_command_and_a_command_imports_only_its_own_module() -> None:
    script = (
        "import contextlib, io, sys\n"
        "from knflow.cli import main\n"
        "for argv in (['--help'], ['token', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "    print(sorted(m for m in sys.modules if m.startswith('knflow.commands.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.splitlines() == ["[]", "['knflow.commands.token']"]


def test_a_commands_own_options_are_parsed_and_its_handler_set() -> None:
    args = build_parser(only="runs").parse_args(["runs", "ls", "--experiment", "iris"])
    assert (args.command, args.experiment) == ("runs", "iris") and callable(args.handler)


def test_config_shows_resolved_settings(tmp_path: Path) -> None:
    env = {"KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_GATEWAY_PORT": "9555", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "knflow", "config"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        check=True,
    ).stdout
    assert "gateway_port" in out and "9555" in out
    assert f"embedded://{tmp_path}/events" in out


def test_a_wrong_setting_fails_with_its_name(tmp_path: Path) -> None:
    env = {"KNFLOW_BROKER": "nats://x", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-m", "knflow", "config"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert run.returncode == 2
    assert "KNFLOW_BROKER='nats://x'" in run.stderr


def test_artifacts_put_get_ls(tmp_path: Path) -> None:
    env = {"KNFLOW_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    src = tmp_path / "in.csv"
    src.write_text("a,label\n1,0\n")

    def knflow(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "knflow", "artifacts", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            check=True,
        ).stdout

    assert "raw/t/in.csv" in knflow("put", str(src), "raw/t/in.csv")
    assert "raw/t/in.csv" in knflow("ls", "raw/")
    assert knflow("get", "raw/t/in.csv") == "a,label\n1,0\n"
