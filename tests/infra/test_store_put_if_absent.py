"""``put_if_absent``: atomic create-if-absent on both artifact store backends, under contention."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from infra.store import ArtifactStore


def test_put_if_absent_creates_once_and_keeps_the_first(store: ArtifactStore) -> None:
    first = store.put_if_absent("locks/a", b"first")
    second = store.put_if_absent("locks/a", b"second")
    assert first is not None and first.size == 5
    assert second is None
    assert store.get("locks/a") == b"first"
    assert store.stat("locks/a").sha256 == first.sha256


def test_put_if_absent_has_exactly_one_winner_under_contention(store: ArtifactStore) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: store.put_if_absent("locks/race", str(i).encode()), range(16)))
    winners = [i for i, r in enumerate(results) if r is not None]
    assert len(winners) == 1
    assert store.get("locks/race") == str(winners[0]).encode()
