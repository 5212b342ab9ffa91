"""The dashboard page in a real browser (Debian's chromium via Playwright) over a real broker, registry and gateway."""

from __future__ import annotations

import asyncio
import os

from aiohttp import ClientSession

from bench.dashboard.lifecycle_events import start_of_run
from eventing.client import publish_async
from functions.contract import FEATURES_READY
from infra.localservices import free_port
from serving.registry import ModelRegistry
from tests.dashboard.conftest import TRAIN_ERROR, Seeded, history, tiny_onnx
from tests.eventually import eventually

TIMEOUT_MS = 10_000
SHOTS = os.environ.get("KNFLOW_DASHBOARD_SCREENSHOTS")  # a directory: screenshots of each view, to look at


async def snap(page, name: str) -> None:  # type: ignore[no-untyped-def]
    if SHOTS:
        await page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


async def test_page_shows_runs_steps_failure_models_serving_and_replays(
    platform: Seeded, browser, http: ClientSession
) -> None:  # type: ignore[no-untyped-def]
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(platform.dashboard.url)

    # Runs: both runs, each with the status its events say.
    ok_row = page.locator(f'tr[data-runid="{platform.ok_runid}"]')
    bad_row = page.locator(f'tr[data-runid="{platform.failing_runid}"]')
    await ok_row.locator("td.status").get_by_text("succeeded").wait_for()
    await bad_row.locator("td.status").get_by_text("failed").wait_for()
    assert await page.locator("tr[data-runid]").count() == 2
    assert await bad_row.locator("td.step").inner_text() == "train"
    assert await ok_row.locator("td.experiment").inner_text() == "digits"  # by default, the run's data set
    assert "digits v1" in await ok_row.inner_text()
    assert "raw/iris/d.csv" in await bad_row.inner_text()
    assert await page.locator("#run-counts").inner_text() == "0 running · 1 succeeded · 1 failed"

    # The failing run: its steps, and why it failed (the subscriber's answer, carried by step.failed).
    await snap(page, "runs")
    await bad_row.click()
    await page.locator("#failure-reason").get_by_text(TRAIN_ERROR, exact=False).wait_for()
    for step, status in (("ingest", "succeeded"), ("featurize", "succeeded"), ("train", "failed")):
        assert status in await page.locator(f'tr[data-step="{step}"]').inner_text()
    assert "after 2 attempt(s): status 500" in await page.locator("#failure-reason").inner_text()
    assert await page.locator(f'tr[data-type="{FEATURES_READY}"]').count() == 1
    await snap(page, "run-failed")

    # The tuned run: every step done, the trials with their objective values.
    await page.goto(f"{platform.dashboard.url}/#/runs/{platform.ok_runid}")
    await page.locator('tr[data-trial="trial-0001"]').wait_for()
    assert "0.9600" in await page.locator('tr[data-trial="trial-0001"]').inner_text()
    for step in ("ingest", "featurize", "tune", "register", "deploy"):
        assert "succeeded" in await page.locator(f'tr[data-step="{step}"]').inner_text()
    assert await page.locator('tr[data-step="train"]').count() == 0  # a tuned run trains trials, not a model
    await snap(page, "run-tuned")

    # Models: the registered version, its accuracy and its alias.
    await page.click('nav a[data-view="models"]')
    version = page.locator('[data-model="digits"] tr[data-version="1"]')
    await version.locator("td.aliases").get_by_text("production").wait_for()
    assert (await version.locator("td.accuracy").inner_text()) == "0.9512"
    assert (await version.locator("td.answers").inner_text()).startswith("0, 1, 2, 3, 4, 5")
    # A regressor: its rmse and r², and no accuracy column.
    regressor = page.locator('[data-model="diabetes"] tr[data-version="1"]')
    assert (await regressor.locator("td.rmse").inner_text()) == "53.2000"
    assert (await regressor.locator("td.r2").inner_text()) == "0.4100"
    assert await regressor.locator("td.answers").inner_text() == "prediction"
    assert await page.locator('[data-model="diabetes"] td.accuracy').count() == 0
    await snap(page, "models")

    # Serving: the revision takes all traffic and counted the one inference request.
    await page.click('nav a[data-view="serving"]')
    revision = page.locator(f'[data-serving="digits"] tr[data-revision="{platform.revision}"]')
    await revision.locator("td.traffic").get_by_text("100 %").wait_for()
    assert await revision.locator("td.requests").inner_text() == "1"
    assert await revision.locator("td.errors").inner_text() == "0"
    await snap(page, "serving")

    # Failed events: replay re-publishes the original into the broker under a new id.
    await page.click('nav a[data-view="failures"]')
    failure = page.locator(f'tr[data-failure="{platform.failed_event_id}"]').first
    await failure.locator("td.reason").get_by_text("out of memory", exact=False).wait_for()
    await snap(page, "failures")
    await failure.locator("button[data-replay]").click()

    async def replayed() -> list[dict]:
        found = await history(http, platform.broker_url, runid=platform.failing_runid, type=FEATURES_READY)
        return [e for e in found if e.get("knflowreplayof") == platform.failed_event_id]

    (replay,) = await eventually(replayed, what="the replayed features.ready in the broker history")
    assert replay["id"] != platform.failed_event_id
    assert replay["mode"] == "train" and replay["data"]["dataset"] == "iris"
    # The page links the replay to the failure it came from.
    await failure.locator("td:nth-child(8) code").first.wait_for()
    await snap(page, "failures-replayed")
    await page.close()


async def test_page_refreshes_by_itself_and_a_backend_down_only_blanks_its_own_panel(
    broker, start_dashboard, registry: ModelRegistry, browser, http: ClientSession
) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(registry.register, "digits", tiny_onnx(), metrics={"test_accuracy": 0.9})
    gateway_down = f"http://127.0.0.1:{free_port()}"
    dashboard = await start_dashboard(broker.url, gateway_down)
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(dashboard.url)
    await page.get_by_text("none yet").wait_for()

    # A run that starts while the page is open appears without a reload.
    for event in start_of_run("fashion", "train"):
        await publish_async(broker.url, event)
    row = page.locator("tr[data-runid]")
    await row.locator("td.experiment").get_by_text("fashion").wait_for()
    assert await row.locator("td.status").inner_text() == "running"

    # The gateway is down: the serving panel says so; models and runs still render.
    await page.click('nav a[data-view="serving"]')
    await page.locator(".error").get_by_text(f"gateway {gateway_down} is not reachable", exact=False).wait_for()
    await page.click('nav a[data-view="models"]')
    await page.locator('[data-model="digits"] tr[data-version="1"]').wait_for()
    await page.click('nav a[data-view="runs"]')
    await page.locator("tr[data-runid] td.experiment").get_by_text("fashion").wait_for()
    await page.close()
