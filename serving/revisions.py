"""Revisions and traffic: immutable deploys of a registry version, percentage splits, tags, rollback, persistence.

The serving state of a model lives in the artifact store at ``serving/<model>/state.json`` (under its namespace's
prefix, ``namespaces/<ns>/``, outside ``default``) so a
restarted gateway restores it; changes are compare-and-swap (``update_state``), so gateways sharing a
store do not overwrite each other.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson

from infra import cas
from infra.errors import InvalidRequest, NotFound
from infra.namespaces import ROOT, prefix, split
from infra.store import ArtifactStore
from serving.logger import LogSpec

if TYPE_CHECKING:
    from serving.rollout import Canary


@dataclass(frozen=True)
class Batching:
    """Server-side adaptive batching of one revision (off unless ``max_batch`` > 1)."""

    max_batch: int = 1
    max_delay_ms: float = 0.0  # 0: batch only what is already queued (greedy); > 0: also wait for company


@dataclass(frozen=True)
class Revision:
    """One immutable deploy: a registry version plus its runtime configuration."""

    id: str
    model: str
    version: int
    batching: Batching = Batching()
    intra_op_threads: int = 1
    created: str = ""
    logger: LogSpec | None = None  # inference logging (serving.logger); None: off
    request: str | None = None  # the Idempotency-Key it was made under: the same deploy asked again gets it back


@dataclass(frozen=True)
class TrafficTarget:
    """A share of a model's traffic, and optionally a tag that reaches the revision directly."""

    revision: str
    percent: int
    tag: str | None = None


@dataclass(frozen=True)
class ServingState:
    """Every revision of one model, the current traffic, the traffic history (for rollback), the open canary
    being judged (serving.rollout) and the rollout notices not yet taken by the broker (structured JSON events)."""

    model: str
    revisions: tuple[Revision, ...] = ()
    traffic: tuple[TrafficTarget, ...] = ()
    history: tuple[tuple[TrafficTarget, ...], ...] = field(default=())
    canary: Canary | None = None
    notices: tuple[str, ...] = ()

    def revision(self, rid: str) -> Revision:
        for r in self.revisions:
            if r.id == rid:
                return r
        raise NotFound(f"model {self.model!r} has no revision {rid!r}")

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> ServingState:
        from serving.rollout import canary_from_dict

        raw = orjson.loads(data)
        revisions = tuple(
            Revision(**{**r, "batching": Batching(**r["batching"]), "logger": _log_spec(r.get("logger"))})
            for r in raw["revisions"]
        )
        return cls(
            model=raw["model"],
            revisions=revisions,
            traffic=tuple(TrafficTarget(**t) for t in raw["traffic"]),
            history=tuple(tuple(TrafficTarget(**t) for t in h) for h in raw["history"]),
            canary=canary_from_dict(raw.get("canary")),
            notices=tuple(raw.get("notices", ())),
        )


def _log_spec(raw: dict | None) -> LogSpec | None:
    return LogSpec(**raw) if raw else None


def add_revision(
    state: ServingState,
    version: int,
    batching: Batching,
    threads: int,
    logger: LogSpec | None = None,
    request: str | None = None,
) -> tuple[ServingState, Revision]:
    """A new revision; the model's first revision takes all traffic, later ones none until traffic is set."""
    rev = Revision(
        id=f"{state.model}-{len(state.revisions) + 1:05d}",
        model=state.model,
        version=version,
        batching=batching,
        intra_op_threads=threads,
        created=datetime.now(UTC).isoformat(),
        logger=logger,
        request=request,
    )
    state = replace(state, revisions=(*state.revisions, rev))
    if not state.traffic:
        state = replace(state, traffic=(TrafficTarget(rev.id, 100),))
    return state, rev


def set_traffic(state: ServingState, targets: list[TrafficTarget]) -> ServingState:
    """Replace the split (percentages must sum to 100; tags must be unique); the old split goes to history."""
    for t in targets:
        state.revision(t.revision)
        if not 0 <= t.percent <= 100:
            raise InvalidRequest(f"traffic percent {t.percent} for {t.revision} is not within 0..100")
    if sum(t.percent for t in targets) != 100:
        raise InvalidRequest(f"traffic percentages sum to {sum(t.percent for t in targets)}, not 100")
    tags = [t.tag for t in targets if t.tag]
    if len(tags) != len(set(tags)):
        raise InvalidRequest(f"traffic tags must be unique: {tags}")
    return replace(state, traffic=tuple(targets), history=(*state.history, state.traffic)[-20:])


def rollback(state: ServingState) -> ServingState:
    """Back to the previous split; with no history, all traffic to the revision before the newest."""
    if state.history:
        return replace(state, traffic=state.history[-1], history=state.history[:-1])
    if len(state.revisions) < 2:
        raise InvalidRequest(f"model {state.model!r} has nothing to roll back to")
    return replace(state, traffic=(TrafficTarget(state.revisions[-2].id, 100),))


class Router:
    """Picks the revision for a request: by tag, by registry version, or by weighted random split."""

    def __init__(self, seed: int | None = None):
        self.random = random.Random(seed)

    def pick(self, state: ServingState, tag: str | None = None, version: str | None = None) -> Revision:
        if tag:
            for t in state.traffic:
                if t.tag == tag:
                    return state.revision(t.revision)
            raise NotFound(f"model {state.model!r} has no route tagged {tag!r}")
        if version is not None:
            return self._by_version(state, version)
        roll = self.random.random() * 100
        for t in state.traffic:
            roll -= t.percent
            if roll < 0 and t.percent > 0:
                return state.revision(t.revision)
        live = [t for t in state.traffic if t.percent > 0]
        if not live:
            raise NotFound(f"model {state.model!r} has no revision receiving traffic")
        return state.revision(live[-1].revision)

    @staticmethod
    def _by_version(state: ServingState, version: str) -> Revision:
        if not version.isdigit():
            raise NotFound(f"model {state.model!r} has no version {version!r}")
        routed = {t.revision for t in state.traffic}
        matches = [r for r in state.revisions if r.version == int(version)]
        if not matches:
            raise NotFound(f"model {state.model!r} has no deployed version {version}")
        in_traffic = [r for r in matches if r.id in routed]
        return (in_traffic or matches)[-1]


def state_key(model: str) -> str:
    """Where a model's serving state is kept: ``serving/<name>/state.json`` under its namespace's prefix."""
    namespace, name = split(model)
    return f"{prefix(namespace)}serving/{name}/state.json"


def load_states(store: ArtifactStore) -> dict[str, ServingState]:
    """Every model's serving state from the store, every namespace's; a state found where it was kept before
    namespaces had their own prefix (``serving/<ns>/<name>/``) is moved to its namespace's."""
    states = {}
    own = [i.key for i in store.list(ROOT) if re.fullmatch(r"namespaces/[^/]+/serving/[^/]+/state\.json", i.key)]
    for key in [i.key for i in store.list("serving/")] + own:
        if key.endswith("/state.json"):
            raw = store.get(key)
            state = ServingState.from_json(raw)
            if key != state_key(state.model):  # the old place: the state moves, once
                store.put_if_absent(state_key(state.model), raw, content_type="application/json")
                store.delete(key)
                state = ServingState.from_json(store.get(state_key(state.model)))
            states[state.model] = state
    return states


def update_state(store: ArtifactStore, model: str, change: Callable[[ServingState], ServingState]) -> ServingState:
    """Apply ``change`` to the stored state of ``model`` (an empty one if none) by compare-and-swap: when another
    gateway sharing the store wrote in between, its state is read again and ``change`` re-applied."""

    def apply(raw: bytes | None) -> bytes:
        return change(ServingState.from_json(raw) if raw else ServingState(model=model)).to_json()

    stored = cas.update(store, state_key(model), apply)
    assert stored is not None, "apply always writes a state"
    return ServingState.from_json(stored)
