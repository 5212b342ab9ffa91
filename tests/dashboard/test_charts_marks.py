"""A trial the median stopping rule stopped is marked on the curves (dashed, and named so), in a real
browser over the dashboard's seeded broker, store and gateway."""

from __future__ import annotations

import asyncio

from infra.store import ArtifactStore
from tests.dashboard.conftest import Seeded
from tests.dashboard.test_charts_api import write_trial
from tests.dashboard.test_charts_browser import TIMEOUT_MS


async def test_an_early_stopped_trial_is_dashed_and_named_on_the_curves(
    platform: Seeded, file_store: ArtifactStore, browser
) -> None:  # type: ignore[no-untyped-def]
    for trial, epochs, status in (("trial-0000", 5, "Succeeded"), ("trial-0001", 2, "EarlyStopped")):
        await asyncio.to_thread(write_trial, file_store, platform.ok_runid, trial, epochs, status)
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(f"{platform.dashboard.url}/#/runs/{platform.ok_runid}")
    await page.locator('figure[data-chart="curves-loss"]').wait_for()
    series = await page.evaluate(
        "() => window.knflowCharts['curves-loss'].series.slice(1).map((s) => ({label: s.label, dash: s.dash || null}))"
    )
    assert series == [
        {"label": "trial-0000", "dash": None},
        {"label": "trial-0001 (early stopped)", "dash": [6, 4]},
    ]
    data = await page.evaluate("() => window.knflowCharts['curves-loss'].data.map((c) => Array.from(c))")
    assert data[0] == [1, 2, 3, 4, 5] and data[2][2:] == [None, None, None]  # it stopped after epoch 2
    await page.close()
