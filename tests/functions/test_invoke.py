"""``knflow invoke`` against a running host and the runner, and ``knflow functions ls``."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson

from functions.runtime.runner import Runner
from tests.functions.conftest import make_settings

ROOT = Path(__file__).parents[2]


async def knflow(*args: str, stdin: bytes = b"", **env: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "knflow",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    return process.returncode, out.decode(), err.decode()


async def test_invoke_prints_the_reply_event_of_a_running_host(start_host):
    url = await start_host("echo")
    code, out, err = await knflow("invoke", "--target", url, "--type", "test.ping", "--data", '{"a": 1}')
    assert code == 0, err
    reply = orjson.loads(out)
    assert reply["type"] == "dev.knflow.echo.reply"
    assert reply["data"] == {"a": 1}
    assert err.startswith("200 from")


async def test_invoke_reads_data_from_a_file_and_from_stdin(start_host, tmp_path):
    url = await start_host("functions.examples.knative_echo")
    (tmp_path / "data.json").write_text('{"rows": [1, 2, 3]}')
    code, out, _ = await knflow("invoke", "--target", url, "--data", f"@{tmp_path / 'data.json'}", "--structured")
    assert code == 0
    assert orjson.loads(out)["data"] == {"rows": [1, 2, 3]}
    code, out, _ = await knflow("invoke", "--target", url, "--data", "-", stdin=b'{"from": "stdin"}')
    assert code == 0
    assert orjson.loads(out)["data"] == {"from": "stdin"}


async def test_invoke_resolves_a_function_name_to_the_runner_and_reports_failure(tmp_path):
    runner = Runner(make_settings(tmp_path))
    await runner.start(0)
    try:
        env = {"KNFLOW_FUNCTIONS_PORT": str(runner.port), "KNFLOW_DATA_DIR": str(tmp_path)}
        code, out, err = await knflow("invoke", "echo", "--data", '{"b": 2}', **env)
        assert code == 0, err
        assert orjson.loads(out)["data"] == {"b": 2}
        code, out, err = await knflow("functions", "ls", **env)
        assert code == 0, err
        assert "echo" in out and "running" in out
        code, out, err = await knflow("invoke", "nosuch", **env)
        assert code == 1
        assert err.startswith("404")
        assert "no function named" in out
    finally:
        await runner.stop()
