"""The model registry: gapless versions under concurrency, idempotent registration, aliases, audit, verified fetch."""

from __future__ import annotations

import hashlib
import multiprocessing
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from infra import owner
from infra.errors import IntegrityError, InvalidRequest, NotFound
from infra.store import ArtifactStore, open_store
from serving import registry as registry_module
from serving.registry import ModelRegistry, TensorSpec
from tests.serving.helpers import mlp_onnx, register_in_process


def test_register_records_card_signature_and_sha(registry: ModelRegistry) -> None:
    card = registry.register("digits", mlp_onnx(), metrics={"accuracy": 0.9}, lineage={"runid": "r1"})
    assert card.version == 1
    assert card.inputs == (TensorSpec("input", "FP32", (-1, 64)),)
    assert [o.name for o in card.outputs] == ["logits", "probabilities"]
    assert registry.get("digits") == card
    assert registry.get("digits", 1).metrics == {"accuracy": 0.9}
    assert registry.store.stat(card.onnx_key).sha256 == card.sha256
    assert registry.models() == ["digits"]


def test_concurrent_threads_get_versions_without_gaps(store: ArtifactStore) -> None:
    registry = ModelRegistry(store)
    with ThreadPoolExecutor(6) as pool:
        cards = list(pool.map(lambda i: registry.register("m", mlp_onnx(i, hidden=4)), range(6)))
    assert sorted(c.version for c in cards) == [1, 2, 3, 4, 5, 6]
    assert [c.version for c in registry.versions("m")] == [1, 2, 3, 4, 5, 6]
    assert {c.sha256 for c in registry.versions("m")} == {c.sha256 for c in cards}


def test_concurrent_processes_get_versions_without_gaps(tmp_path: Path) -> None:
    root = str(tmp_path / "shared")
    open_store(f"file://{root}")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        versions = pool.starmap(register_in_process, [(root, i) for i in range(8)])
    assert sorted(versions) == list(range(1, 9))


def test_same_idempotency_key_returns_the_existing_card(store: ArtifactStore) -> None:
    registry = ModelRegistry(store)
    with ThreadPoolExecutor(4) as pool:
        cards = list(pool.map(lambda _: registry.register("m", mlp_onnx(), idempotency_key="event-1"), range(4)))
    assert {c.version for c in cards} == {1}
    assert registry.register("m", mlp_onnx(1), idempotency_key="event-2").version == 2
    assert registry.register("m", mlp_onnx(), idempotency_key="event-1").version == 1
    assert [c.version for c in registry.versions("m")] == [1, 2]


def test_aliases_resolve_and_every_move_is_audited(registry: ModelRegistry) -> None:
    for seed in range(3):
        registry.register("m", mlp_onnx(seed, hidden=4))
    registry.set_alias("m", "production", 1, actor="alice", reason="first")
    registry.set_alias("m", "staging", 3, actor="deploy")
    registry.set_alias("m", "production", 2, actor="bob", reason="better accuracy")
    assert registry.aliases("m") == {"production": 2, "staging": 3}
    assert registry.get("m", "production").version == 2
    assert registry.get("m", "latest").version == 3
    moves = [r for r in registry.audit("m") if r["action"] == "set_alias"]
    assert [(r["alias"], r["version"], r["actor"]) for r in moves] == [
        ("production", 1, "alice"),
        ("staging", 3, "deploy"),
        ("production", 2, "bob"),
    ]
    assert moves[2]["reason"] == "better accuracy" and moves[2]["at"]
    with pytest.raises(NotFound):
        registry.get("m", "canary")
    with pytest.raises(NotFound):
        registry.set_alias("m", "production", 9, actor="x")
    with pytest.raises(InvalidRequest):
        registry.set_alias("m", "latest", 1, actor="x")


def test_fetch_gives_a_verified_local_copy(registry: ModelRegistry, tmp_path: Path) -> None:
    card = registry.register("m", mlp_onnx())
    path = registry.fetch("m", 1, tmp_path / "cache")
    assert path.read_bytes() == mlp_onnx() and card.sha256 in path.name


def test_corrupted_model_is_refused_with_a_clear_error(registry: ModelRegistry, file_store, tmp_path: Path) -> None:
    registry.register("m", mlp_onnx())
    stored = Path(file_store.root) / "models/m/1/model.onnx"
    data = bytearray(stored.read_bytes())
    data[100] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        registry.fetch("m", 1, tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("*.onnx"))


def test_replaced_model_that_does_not_match_the_card_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.register("m", mlp_onnx())
    registry.store.put("models/m/1/model.onnx", mlp_onnx(seed=7))  # consistent in the store, not the card
    with pytest.raises(IntegrityError, match="model card records"):
        registry.fetch("m", 1, tmp_path / "cache")


def test_unknown_model_and_version_are_not_found(registry: ModelRegistry) -> None:
    with pytest.raises(NotFound):
        registry.get("nope")
    registry.register("m", mlp_onnx())
    with pytest.raises(NotFound):
        registry.get("m", 5)


def test_a_registration_whose_process_died_midway_is_finished_at_once_by_the_next_one(tmp_path: Path) -> None:
    root = str(tmp_path / "shared")
    open_store(f"file://{root}")
    code = f"from tests.serving.helpers import register_and_go_down; register_and_go_down({root!r}, 'event-1')"
    died = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], timeout=120)
    assert died.returncode == 3  # it went down after claiming version 1, before writing it
    began = time.monotonic()
    card = ModelRegistry(open_store(f"file://{root}")).register("m", mlp_onnx(1, hidden=4), idempotency_key="event-1")
    waited = time.monotonic() - began
    assert card.version == 1 and [c.version for c in ModelRegistry(open_store(f"file://{root}")).versions("m")] == [1]
    assert waited < registry_module.IDEMPOTENT_WAIT_S / 3, waited  # the owner is known gone: no waiting out its claim


def test_a_claim_held_by_a_running_process_is_waited_for(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    claim = f"{owner._boot_id()}/{holder.pid}/{owner._started(holder.pid)}"  # as that process would name itself
    try:
        digest = hashlib.sha256(b"event-2").hexdigest()[:40]
        at = time.time()
        store.put(f"models/m/idempotency/{digest}.json", orjson.dumps({"key": "event-2", "at": at, "owner": claim}))
        monkeypatch.setattr(registry_module, "IDEMPOTENT_WAIT_S", 1.0)
        card = ModelRegistry(store).register("m", mlp_onnx(1, hidden=4), idempotency_key="event-2")
        assert card.version == 1 and time.time() - at >= 1.0  # alive: only the claim's age let it be taken
    finally:
        holder.kill()
        holder.wait()
    assert owner.gone(claim)
