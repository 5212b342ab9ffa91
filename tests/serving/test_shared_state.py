"""Gateways sharing one store: serving state changes are compare-and-swap, so none overwrites another's."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path

import pytest

from infra.settings import load_settings
from infra.store import ArtifactStore
from serving.gateway import Gateway
from serving.revisions import Batching, ServingState, add_revision, load_states, update_state


def test_two_gateways_deploying_at_once_lose_no_revision(
    store: ArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(env={"KNFLOW_DATA_DIR": str(tmp_path)}, config_file=None)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # a gateway that serves nothing leaves nothing there
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
    assert list(temp.iterdir()) == []


def test_a_namespaces_serving_state_lives_under_its_prefix_and_default_keeps_its_place(store: ArtifactStore) -> None:
    update_state(store, "team-a/digits", lambda s: add_revision(s, 1, Batching(), 1)[0])
    update_state(store, "digits", lambda s: add_revision(s, 2, Batching(), 1)[0])
    assert store.exists("namespaces/team-a/serving/digits/state.json") and store.exists("serving/digits/state.json")
    assert not any(store.list("serving/team-a/"))
    states = load_states(store)
    assert [r.version for r in states["team-a/digits"].revisions] == [1]
    assert [r.version for r in states["digits"].revisions] == [2]


def test_a_namespaces_serving_state_kept_where_it_was_before_moves_under_its_prefix(store: ArtifactStore) -> None:
    old = ServingState(model="team-b/digits")
    store.put("serving/team-b/digits/state.json", add_revision(old, 3, Batching(), 1)[0].to_json())
    assert [r.version for r in load_states(store)["team-b/digits"].revisions] == [3]
    assert store.exists("namespaces/team-b/serving/digits/state.json")
    assert not store.exists("serving/team-b/digits/state.json")
    assert [r.version for r in load_states(store)["team-b/digits"].revisions] == [3]  # read from its new place
