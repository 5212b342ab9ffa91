"""The dashboard's charts in a real browser (Debian's chromium via Playwright) on a real platform (``knflow up``'s
processes) after a real tuning run and a plain training: curves and trial plots hold one series per trial with
each trial's epochs and grow while a run trains, the serving charts move under load, the comparison view highlights
differing parameters.

Each view's screenshot is written to ``$KNFLOW_DASHBOARD_SCREENSHOTS`` when it is set (``make screenshots`` sets it to
``knflow/dashboard/screenshots/``, the ones the dashboard README links), else to a scratch directory, so a test run
leaves the tracked ones as they were."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

import knflow.dashboard
from infra.auth import client_token
from infra.store import open_store
from knflow.client import Client
from knflow.commands.demo import DEMO_OPTIONS
from knflow.platform import Platform
from tests.eventually import eventually
from tests.lifecycle.helpers import platform_settings
from tests.lifecycle.usercode import write_code

pytestmark = pytest.mark.slow
SHOTS = Path(knflow.dashboard.__file__).parent / "screenshots"  # the README's
SCRATCH = Path(tempfile.gettempdir()) / "knflow-dashboard-shots"
SHOTS_TO = Path(os.environ.get("KNFLOW_DASHBOARD_SCREENSHOTS") or SCRATCH)
TIMEOUT_MS = 20_000
EPOCHS = 4
TUNED = {  # the demo's experiment, small: 3 MLP trials of a few epochs, at once
    **DEMO_OPTIONS,
    "train": {"model": "mlp", "epochs": EPOCHS},
    "tuning": {**DEMO_OPTIONS["tuning"], "algorithm": "random", "maxTrialCount": 3, "parallelTrialCount": 3,
               "earlyStopping": {"minTrialsRequired": 1, "startStep": 2}, "seed": 3},
}  # fmt: skip
PLAIN = {"model_name": "digits-plain", "train": {"model": "mlp", "epochs": 3, "lr": 0.02}}


@dataclass(frozen=True)
class Live:
    platform: Platform
    client: Client
    tuned: str  # run ids
    plain: str
    url: str  # the page, signed in by its token link


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One platform for the module, with a 3-trial tuning run and a plain training, both deployed."""
    settings = platform_settings(tmp_path_factory.mktemp("charts"))
    with Platform.start(settings) as platform:
        client = Client(platform.url("dashboard"), token=client_token(settings))
        digits = load_digits()
        x, y = digits.data.astype(np.float32), digits.target
        tuned = client.submit((x, y), dataset="digits", options=TUNED)
        plain = client.submit((x, y), dataset="digits", options=PLAIN)
        for run in (tuned, plain):
            outcome = run.wait(timeout=600)
            assert outcome.status == "deployed", outcome
        url = f"{platform.url('dashboard')}/?token={client_token(settings)}"
        yield Live(platform, client, tuned.runid, plain.runid, url)


async def open_page(browser, live: Live, route: str):  # type: ignore[no-untyped-def]
    page = await browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(live.url)  # the token link signs the page in (a cookie), then drops the token
    await page.goto(f"{live.platform.url('dashboard')}/#/{route}")
    return page


async def chart_data(page, name: str) -> list[list]:  # type: ignore[no-untyped-def]
    await page.locator(f'figure[data-chart="{name}"]').first.wait_for()
    return await page.evaluate("(name) => window.knflowCharts[name].data.map((column) => Array.from(column))", name)


def counted(column: list) -> int:
    return sum(1 for v in column if v is not None)


async def test_run_page_plots_each_trials_curve_and_the_trials_against_their_parameters(browser, live: Live) -> None:  # type: ignore[no-untyped-def]
    store = open_store(live.platform.settings.artifacts)
    trials = sorted(t["trial"] for t in live.client.api.call("GET", f"/api/runs/{live.tuned}")["trials"])
    assert len(trials) == 3
    epochs = [
        len(store.get(f"runs/{live.tuned}/trials/{t}/metrics.jsonl").decode().splitlines()) for t in trials
    ]  # EPOCHS each, fewer for a trial stopped early
    page = await open_page(browser, live, f"runs/{live.tuned}")

    for name in ("curves-loss", "curves-objective"):
        data = await chart_data(page, name)
        assert len(data) == 1 + 3, name  # the epochs, then one series per trial
        assert data[0] == list(range(1, max(epochs) + 1))
        assert [counted(column) for column in data[1:]] == epochs, name
    labels = await page.evaluate("() => window.knflowCharts['curves-loss'].series.slice(1).map((s) => s.label)")
    statuses = [s["status"] for s in live.client.api.call("GET", f"/api/runs/{live.tuned}/curves")["series"]]
    marked = [t + (" (early stopped)" if s == "EarlyStopped" else "") for t, s in zip(trials, statuses, strict=True)]
    assert labels == marked

    detail = live.client.api.call("GET", f"/api/runs/{live.tuned}")
    values = [t["value"] for t in sorted(detail["trials"], key=lambda t: t["trial"])]
    x, objective, best = await chart_data(page, "trials-objective")
    assert x == [1, 2, 3] and objective == pytest.approx(values)
    assert best == pytest.approx([max(values[: i + 1]) for i in range(3)])  # val_accuracy is maximized
    for param in ("lr", "dropout"):
        xs, ys = await chart_data(page, f"trials-param-{param}")
        pairs = sorted((t["params"][param], t["value"]) for t in detail["trials"])
        assert xs == pytest.approx([p for p, _ in pairs]) and ys == pytest.approx([v for _, v in pairs])
    await page.screenshot(path=str(SHOTS_TO / "run-charts.png"), full_page=True)
    await page.close()


async def test_serving_charts_move_under_load(browser, live: Live) -> None:  # type: ignore[no-untyped-def]
    page = await open_page(browser, live, "serving")
    await chart_data(page, "serving-digits-rps")
    stop = threading.Event()
    x = load_digits().data[:8].astype(np.float32)
    run = live.client.run(live.tuned)

    def load() -> None:
        while not stop.is_set():
            run.infer(x)

    sender = threading.Thread(target=load, daemon=True)
    sender.start()
    try:

        async def moved() -> list | None:
            rps = await chart_data(page, "serving-digits-rps")
            latency = await chart_data(page, "serving-digits-latency")
            replicas = await chart_data(page, "serving-digits-replicas")
            busy = any(sum(1 for v in column[-4:] if v and v > 0) >= 2 for column in rps[1:])  # over 2 samples
            timed = any(v for column in latency[1:] for v in column[-3:])
            up = any(v and v >= 1 for column in replicas[1:] for v in column[-3:])
            return rps if busy and timed and up else None

        rps = await eventually(moved, timeout=30, what="the serving charts to show the load")
        assert len(rps[0]) >= 2 and len(rps) >= 2  # time, then a series per revision
    finally:
        stop.set()
        await asyncio.to_thread(sender.join, 10)
    await page.screenshot(path=str(SHOTS_TO / "serving-charts.png"), full_page=True)
    await page.close()


async def test_comparison_highlights_the_parameters_two_runs_differ_in(browser, live: Live) -> None:  # type: ignore[no-untyped-def]
    page = await open_page(browser, live, "runs")
    for runid in (live.tuned, live.plain):
        await page.locator(f'tr[data-runid="{runid}"] input[data-compare]').check()
    assert await page.locator('[data-experiment="digits"] tr[data-runid]').count() == 2  # grouped by experiment
    await page.screenshot(path=str(SHOTS_TO / "runs-experiments.png"), full_page=True)
    await page.locator("#compare-selected").click()
    await page.locator("#compare-table").wait_for()
    assert page.url.endswith(f"#/compare/{live.tuned},{live.plain}")
    answer = live.client.api.call("GET", f"/api/compare?runs={live.tuned},{live.plain}")
    lrs = [item["params"]["lr"] for item in answer["items"]]
    assert lrs[1] == PLAIN["train"]["lr"] and lrs[0] != lrs[1]
    lr = page.locator('#compare-table tr[data-field="params.lr"]')
    assert await lr.get_attribute("class") == "differs"
    cells = await lr.locator("td").all_inner_texts()
    assert [float(c) for c in cells] == pytest.approx(lrs, rel=1e-4)
    assert await page.locator('#compare-table tr[data-field="params.epochs"]').get_attribute("class") == "differs"
    same = page.locator('#compare-table tr[data-field="params.model"]')  # both trained an MLP
    assert await same.get_attribute("class") is None
    assert await same.locator("td").all_inner_texts() == ["mlp", "mlp"]
    highlighted = await page.locator("#compare-table tr.differs").evaluate_all(
        "(rows) => rows.map((r) => r.dataset.field)"
    )
    assert sorted(highlighted) == sorted(answer["differs"])
    # Their curves side by side: the tuned run's best trial and the plain training, with their own epochs.
    data = await chart_data(page, "compare-val_accuracy")
    curves = live.client.api.call("GET", f"/api/runs/{live.tuned}/curves")
    best = next(s for s in curves["series"] if s["trial"] == curves["best"])
    assert [counted(column) for column in data[1:]] == [len(best["metrics"]["epoch"]), PLAIN["train"]["epochs"]]
    await page.screenshot(path=str(SHOTS_TO / "compare.png"), full_page=True)

    # Two trials of the tuned run, picked on its page: their lr and dropout differ.
    await page.goto(f"{live.platform.url('dashboard')}/#/runs/{live.tuned}")
    for trial in ("trial-0000", "trial-0001"):
        await page.locator(f'input[data-compare="{live.tuned}/{trial}"]').check()
    await page.locator("#compare-selected").click()
    await page.locator('#compare-table tr[data-field="params.dropout"].differs').wait_for()
    assert await page.locator('#compare-table tr[data-field="params.lr"]').get_attribute("class") == "differs"
    await page.close()


async def test_curves_grow_on_the_page_while_the_run_trains(browser, live: Live, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    epochs, gate = 6, tmp_path / "gate"
    let_through(gate, 1)  # the training reports epoch 1, then waits for the test to let it go on
    code = write_code(tmp_path / "code", paced=PACED)
    train = {"entrypoint": "paced:fit", "code": str(code), "epochs": epochs, "gate": str(gate)}
    digits = load_digits()
    run = await asyncio.to_thread(
        live.client.submit, (digits.data.astype(np.float32), digits.target), dataset="digits",
        options={"model_name": "digits-live", "train": train},
    )  # fmt: skip
    page = await open_page(browser, live, f"runs/{run.runid}")

    async def drawn(more_than: int) -> int | None:
        if not await page.locator('figure[data-chart="curves-loss"]').count():
            return None
        n = counted((await chart_data(page, "curves-loss"))[1])
        return n if n > more_than else None

    assert await eventually(lambda: drawn(0), timeout=120, what="the first epoch on the page") == 1
    let_through(gate, 3)
    assert await eventually(lambda: drawn(2), timeout=60, what="two more epochs on the page") == 3
    let_through(gate, epochs)
    await asyncio.to_thread(run.wait, 600)
    assert await eventually(lambda: drawn(epochs - 1), timeout=10, what="every epoch once trained") == epochs
    await page.close()


#: a user's training that reports one epoch at a time, as far as the test lets it (the number in ``gate``)
PACED = """
import time
from pathlib import Path

from sklearn.linear_model import LogisticRegression


def fit(ctx):
    gate = Path(ctx.params["gate"])
    for epoch in range(1, int(ctx.params["epochs"]) + 1):
        deadline = time.monotonic() + 120  # a test that went away does not hold the training forever
        while int(gate.read_text()) < epoch and time.monotonic() < deadline:
            time.sleep(0.05)
        ctx.reporter.report(epoch, loss=1.0 / epoch)
    return LogisticRegression(max_iter=50).fit(ctx.train.x.reshape(len(ctx.train.x), -1), ctx.train.y)
"""


def let_through(gate: Path, epochs: int) -> None:
    staged = gate.with_suffix(".tmp")
    staged.write_text(str(epochs))
    staged.replace(gate)  # whole, never half written


def test_screenshots_are_written_where_the_readme_links_them() -> None:
    readme = (SHOTS.parent / "README.md").read_text()
    for shot in ("run-charts.png", "serving-charts.png", "compare.png", "runs-experiments.png"):
        assert f"screenshots/{shot}" in readme
        assert (SHOTS / shot).stat().st_size > 10_000
