"""``/api/health`` lists the components ``knflow up`` supervises (from the state its supervisor keeps in the data
directory, ignored once that supervisor is gone), and the page's header shows which ones are not running."""

from __future__ import annotations

import os
import subprocess
import sys

from aiohttp import ClientSession

from infra.atomic import write_json
from infra.localservices import free_port
from infra.settings import Settings
from knflow.supervisor import state_path
from tests.dashboard.test_browser import TIMEOUT_MS


def component(name: str, state: str = "running", restarts: int = 0, last_exit: str | None = None) -> dict:
    return {"name": name, "state": state, "pid": 1, "restarts": restarts, "since": "", "last_exit": last_exit}


def supervised(settings: Settings, supervisor_pid: int, *components: dict) -> None:
    """The state file a supervisor with pid ``supervisor_pid`` keeps."""
    write_json(state_path(settings), {"supervisor": supervisor_pid, "updated": "", "components": list(components)})


def unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def test_health_lists_the_supervised_components_and_ignores_a_gone_supervisor(
    settings: Settings, start_dashboard, http: ClientSession
) -> None:  # type: ignore[no-untyped-def]
    dashboard = await start_dashboard(unreachable(), unreachable())
    async with http.get(dashboard.url + "/api/health") as answer:
        assert (await answer.json())["components"] == []  # no knflow up on this data directory
    gateway = component("gateway", "backoff", 2, "was killed by SIGKILL")
    supervised(settings, os.getpid(), component("broker"), gateway)
    async with http.get(dashboard.url + "/api/health") as answer:
        body = await answer.json()
    assert answer.status == 200 and body["status"] == "ok"
    assert body["components"] == [component("broker"), gateway]
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    supervised(settings, int(gone.stdout), component("broker", "failed"))
    async with http.get(dashboard.url + "/api/health") as answer:
        assert (await answer.json())["components"] == []  # a stale file of a supervisor that is gone


async def test_page_header_shows_the_components_that_are_not_running(
    settings: Settings, start_dashboard, browser
) -> None:  # type: ignore[no-untyped-def]
    dashboard = await start_dashboard(unreachable(), unreachable())
    supervised(settings, os.getpid(), component("broker"), component("gateway", "failed", 5, "exited 1"))
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(dashboard.url)
    indicator = page.locator("#platform.status-failed")
    await indicator.get_by_text("gateway failed").wait_for()
    assert "gateway: failed, 5 restart(s); last: exited 1" in await indicator.get_attribute("title")
    supervised(settings, os.getpid(), component("broker"), component("gateway", restarts=1))
    await page.locator("#platform.status-succeeded").get_by_text("platform ok, 1 restart(s)").wait_for()
