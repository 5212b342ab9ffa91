"""Signing in to the dashboard in a real browser: without a token the page asks for one, a pasted token or the link
`knflow up` prints signs the browser in (an HttpOnly, SameSite=Strict cookie), and a revoked token is out again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession

from infra.auth import TokenFile, tokens_path
from infra.localservices import free_platform_ports
from infra.settings import load_settings
from knflow.dashboard.server import Dashboard

TIMEOUT_MS = 10_000


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[tuple[Dashboard, TokenFile]]:
    settings = load_settings({"KNFLOW_DATA_DIR": str(tmp_path), **free_platform_ports()}, config_file=None)
    async with Dashboard(settings) as dashboard:
        yield dashboard, TokenFile(tokens_path(settings))


async def test_the_page_asks_for_a_token_and_a_pasted_one_signs_in(guarded, browser) -> None:  # type: ignore[no-untyped-def]
    dashboard, tokens = guarded
    token = tokens.create("alice", "viewer", ("*",))
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(dashboard.url)
    await page.locator("#signin").wait_for()
    await page.fill("#token", "knf_wrong")
    await page.click("#signin button")
    await page.get_by_text("unknown or revoked token").wait_for()
    await page.fill("#token", token)
    await page.click("#signin button")
    await page.locator('[data-panel="/api/runs"]').wait_for()
    cookie = next(c for c in await page.context.cookies() if c["name"] == "knflow_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    tokens.revoke("alice")
    await page.reload()
    await page.locator("#signin").wait_for()


async def test_the_link_knflow_up_prints_signs_in_and_drops_the_token_from_the_address(guarded, browser) -> None:  # type: ignore[no-untyped-def]
    dashboard, tokens = guarded
    token = tokens.create("bob", "admin", ("*",))
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(f"{dashboard.url}/?token={token}")
    await page.locator('[data-panel="/api/runs"]').wait_for()
    assert "token=" not in page.url


async def test_the_api_needs_the_cookie_or_a_bearer_token(guarded) -> None:  # type: ignore[no-untyped-def]
    dashboard, tokens = guarded
    token = tokens.create("carol", "viewer", ("*",))
    async with ClientSession() as http:
        async with http.get(f"{dashboard.url}/api/runs") as r:
            assert r.status == 401
        async with http.get(f"{dashboard.url}/api/whoami", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200 and (await r.json())["name"] == "carol"
