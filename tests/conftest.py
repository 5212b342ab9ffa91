"""Session fixtures: the real services knflow's tests run against, started once on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.localservices import LocalService, start_seaweedfs, start_tansu
from infra.settings import parse_store_url
from infra.store import ArtifactStore, open_store


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    """A live SeaweedFS S3 server (``weed mini``) for the whole session."""
    service = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    """A live Kafka-protocol broker (tansu) for the whole session; ``url`` is HOST:PORT."""
    service = start_tansu(tmp_path_factory.mktemp("tansu"))
    yield service
    service.stop()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
async def browser():  # type: ignore[no-untyped-def]
    """Debian's chromium, headless, driven by Playwright (no downloaded browsers)."""
    from playwright import async_api as playwright_api

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is not installed: apt-get install chromium (Playwright drives Debian's browser)")
    async with playwright_api.async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


_bucket_counter = iter(range(1_000_000))


def make_s3_store(s3_server: LocalService) -> ArtifactStore:
    """A store on a fresh bucket of the session's S3 server."""
    bucket = f"knflow-test-{next(_bucket_counter)}"
    location = parse_store_url(
        f"s3://{bucket}?endpoint={s3_server.url}&create=true",
        {"AWS_ACCESS_KEY_ID": "knflow", "AWS_SECRET_ACCESS_KEY": "knflow-secret"},
    )
    return open_store(location)


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """The artifact store, once per backend: a ``file://`` directory and a live S3 bucket."""
    if request.param == "file":
        return open_store(f"file://{tmp_path / 'artifacts'}")
    return make_s3_store(request.getfixturevalue("s3_server"))


#: the folder whose files take longest (whole-platform runs, training): collected first, so that pytest-xdist, which
#: hands out files in collection order, starts them early instead of leaving one worker with them at the end (moving
#: every file marked ``slow`` to the front as well was slower: their CPU-heavy fuzzing and peers then ran together)
SLOW_FIRST = "tests/lifecycle/"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the slow folder's tests to the front, keeping every file's own order."""
    items.sort(key=lambda item: not item.nodeid.startswith(SLOW_FIRST))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker (``make test`` runs several): hand its fuzz counts to the controller."""
    from tests.fuzzing import TRIED

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fuzz_tried"] = dict(TRIED)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # type: ignore[no-untyped-def]
    """The controller adds up the fuzz counts of each worker as it finishes."""
    from tests.fuzzing import TRIED

    TRIED.update(getattr(node, "workeroutput", {}).get("fuzz_tried", {}))


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """How many inputs each fuzz target tried (see tests/fuzzing.py), over every worker."""
    from tests.fuzzing import TRIED

    if TRIED:
        terminalreporter.section("fuzzing")
        for name, count in sorted(TRIED.items()):
            terminalreporter.write_line(f"{name}: {count} inputs")
