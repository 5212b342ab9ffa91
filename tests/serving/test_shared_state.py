"""Gateways sharing one store: serving state changes are compare-and-swap, so none overwrites another's."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from infra.settings import load_settings
from infra.store import ArtifactStore
from serving.gateway import Gateway
from serving.revisions import Batching, add_revision, load_states


def test_two_gateways_deploying_at_once_lose_no_revision(store: ArtifactStore, tmp_path: Path) -> None:
    settings = load_settings(env={"KNFLOW_DATA_DIR": str(tmp_path)}, config_file=None)
    gateways = [
        Gateway(settings, store),
        Gateway(settings, store),
    ]  # two processes' worth: nothing shared but the store
    start = threading.Barrier(len(gateways))

    def deploy_many(gateway: Gateway, versions: range) -> None:
        async def run() -> None:
            start.wait()
            for version in versions:
                await gateway.commit("digits", lambda s, v=version: add_revision(s, v, Batching(), 1)[0])

        asyncio.run(run())

    threads = [
        threading.Thread(target=deploy_many, args=(gw, range(i * 10 + 1, i * 10 + 11))) for i, gw in enumerate(gateways)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    stored = load_states(store)["digits"]
    assert sorted(r.version for r in stored.revisions) == list(range(1, 21))
    assert len({r.id for r in stored.revisions}) == 20
