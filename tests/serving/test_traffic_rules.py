"""Traffic splitting's rules, in process: revisions' ids, percentages within 0..100 summing to 100, unique tags,
history and rollback, routing by tag, by version and by weighted split, and where the state is kept
(``make mutate`` measures ``serving/revisions.py`` with these)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from infra.errors import InvalidRequest, NotFound
from infra.store import ArtifactStore, open_store
from serving.logger import LogSpec
from serving.revisions import (
    Batching,
    Revision,
    Router,
    ServingState,
    TrafficTarget,
    add_revision,
    load_states,
    rollback,
    set_traffic,
    state_key,
    update_state,
)
from serving.rollout import Announce, Canary, RolloutPolicy


def _state(revisions: int, *traffic: TrafficTarget) -> ServingState:
    state = ServingState(model="digits")
    for version in range(1, revisions + 1):
        state, _ = add_revision(state, version, Batching(), 1)
    return ServingState(model="digits", revisions=state.revisions, traffic=traffic or state.traffic)


class FixedRoll:
    """A ``random.Random`` stand-in that always rolls ``value`` (``Router`` multiplies it by 100)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def _router(roll: float) -> Router:
    router = Router()
    router.random = FixedRoll(roll / 100)  # type: ignore[assignment]  # a fixed roll stands in for the generator
    return router


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return open_store(f"file://{tmp_path / 'artifacts'}")


# -- revisions --------------------------------------------------------------------------------------------------------


def test_revisions_are_numbered_from_1_in_five_digits_and_keep_their_configuration() -> None:
    state = ServingState(model="digits")
    state, first = add_revision(state, 7, Batching(max_batch=8, max_delay_ms=2.0), 3, LogSpec(mode="request"), "k1")
    state, second = add_revision(state, 9, Batching(), 1)
    assert (first.request, second.request) == ("k1", None)  # the Idempotency-Key each was made under
    assert ServingState.from_json(state.to_json()).revisions == (first, second)
    assert (first.id, second.id) == ("digits-00001", "digits-00002")
    assert (first.model, first.version, first.intra_op_threads) == ("digits", 7, 3)
    assert first.batching == Batching(8, 2.0) and first.logger == LogSpec(mode="request") and second.logger is None
    assert datetime.fromisoformat(first.created).tzinfo is not None
    assert state.revisions == (first, second)


def test_the_first_revision_takes_all_traffic_and_later_ones_none() -> None:
    state, first = add_revision(ServingState(model="digits"), 1, Batching(), 1)
    assert state.traffic == (TrafficTarget(first.id, 100),)
    state, _ = add_revision(state, 2, Batching(), 1)
    assert state.traffic == (TrafficTarget(first.id, 100),) and state.history == ()


def test_an_unknown_revision_is_not_found_naming_model_and_revision() -> None:
    with pytest.raises(NotFound, match=r"^model 'digits' has no revision 'digits-00009'$"):
        _state(1).revision("digits-00009")
    assert _state(2).revision("digits-00002").version == 2


# -- set_traffic -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "second"), [(0, 100), (100, 0), (1, 99), (50, 50)])
def test_percentages_from_0_to_100_summing_to_100_are_taken(first: int, second: int) -> None:
    targets = [TrafficTarget("digits-00001", first), TrafficTarget("digits-00002", second, "canary")]
    assert set_traffic(_state(2), targets).traffic == tuple(targets)


@pytest.mark.parametrize(("first", "second"), [(-1, 101), (101, -1)])
def test_a_percentage_outside_0_to_100_is_refused_naming_it(first: int, second: int) -> None:
    bad, rid = (first, "digits-00001") if first < 0 or first > 100 else (second, "digits-00002")
    targets = [TrafficTarget("digits-00001", first), TrafficTarget("digits-00002", second)]
    with pytest.raises(InvalidRequest, match=rf"^traffic percent {bad} for {rid} is not within 0\.\.100$"):
        set_traffic(_state(2), targets)


@pytest.mark.parametrize(("first", "second", "total"), [(50, 49, 99), (50, 51, 101), (0, 0, 0)])
def test_percentages_that_do_not_sum_to_100_are_refused_with_their_sum(first: int, second: int, total: int) -> None:
    targets = [TrafficTarget("digits-00001", first), TrafficTarget("digits-00002", second)]
    with pytest.raises(InvalidRequest, match=rf"^traffic percentages sum to {total}, not 100$"):
        set_traffic(_state(2), targets)


def test_traffic_to_an_unknown_revision_is_not_found() -> None:
    with pytest.raises(NotFound, match="no revision 'digits-00003'"):
        set_traffic(_state(2), [TrafficTarget("digits-00003", 100)])


def test_tags_must_be_unique_but_untagged_targets_may_be_many() -> None:
    state = _state(3)
    targets = [TrafficTarget("digits-00001", 50, "a"), TrafficTarget("digits-00002", 50, "a")]
    with pytest.raises(InvalidRequest, match=r"^traffic tags must be unique: \['a', 'a'\]$"):
        set_traffic(state, targets)
    untagged = [TrafficTarget("digits-00001", 50), TrafficTarget("digits-00002", 0), TrafficTarget("digits-00003", 50)]
    assert set_traffic(state, untagged).traffic == tuple(untagged)
    empty = [TrafficTarget("digits-00001", 50, ""), TrafficTarget("digits-00002", 50, "")]
    assert set_traffic(state, empty).traffic == tuple(empty)


def test_each_new_split_puts_the_old_one_in_history_which_keeps_the_last_20() -> None:
    state = _state(2)
    splits = [(TrafficTarget("digits-00001", 100 - n), TrafficTarget("digits-00002", n)) for n in range(25)]
    for split in splits:
        state = set_traffic(state, list(split))
    assert len(state.history) == 20
    assert state.history[-1] == splits[-2] and state.history[0] == splits[-21]
    assert _state(2).traffic == set_traffic(_state(2), list(splits[3])).history[0]


# -- rollback ----------------------------------------------------------------------------------------------------------


def test_rollback_restores_the_previous_split_and_drops_it_from_history() -> None:
    state = _state(3)
    first = [TrafficTarget("digits-00001", 80), TrafficTarget("digits-00002", 20)]
    second = [TrafficTarget("digits-00003", 100)]
    state = set_traffic(set_traffic(state, first), second)
    back = rollback(state)
    assert back.traffic == tuple(first) and back.history == (_state(3).traffic,)
    assert rollback(back).traffic == _state(3).traffic and rollback(back).history == ()


def test_rollback_without_history_sends_all_traffic_to_the_revision_before_the_newest() -> None:
    state = _state(3, TrafficTarget("digits-00003", 100))
    assert rollback(state).traffic == (TrafficTarget("digits-00002", 100),)
    assert rollback(_state(2)).traffic == (TrafficTarget("digits-00001", 100),)


def test_rollback_with_one_revision_and_no_history_is_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"^model 'digits' has nothing to roll back to$"):
        rollback(_state(1))


# -- routing -----------------------------------------------------------------------------------------------------------

SPLIT = (TrafficTarget("digits-00001", 70), TrafficTarget("digits-00002", 30, "canary"))


@pytest.mark.parametrize(("roll", "revision"), [(0.0, 1), (69.999, 1), (70.0, 2), (99.999, 2)])
def test_the_weighted_split_routes_each_roll_to_the_revision_whose_share_holds_it(roll: float, revision: int) -> None:
    assert _router(roll).pick(_state(2, *SPLIT)).version == revision


@pytest.mark.parametrize(("roll", "revision"), [(0.0, 2), (0.999, 2), (1.0, 3), (99.999, 3)])
def test_a_revision_with_0_percent_is_never_picked_and_1_percent_is_one_roll_in_100(roll, revision) -> None:
    split = (TrafficTarget("digits-00001", 0), TrafficTarget("digits-00002", 1), TrafficTarget("digits-00003", 99))
    assert _router(roll).pick(_state(3, *split)).version == revision


def test_the_split_is_random_and_seeded_routers_repeat_it() -> None:
    state = _state(2, *SPLIT)
    runs = [[router.pick(state).version for _ in range(40)] for router in (Router(seed=1), Router(seed=1))]
    assert runs[0] == runs[1] and len(set(runs[0])) == 2  # the same 40 picks, both revisions among them
    router = Router(seed=7)
    versions = [router.pick(state).version for _ in range(1000)]
    assert 620 <= versions.count(1) <= 780


def test_a_split_short_of_100_sends_the_rest_to_the_last_revision_with_traffic() -> None:
    split = (TrafficTarget("digits-00001", 10), TrafficTarget("digits-00002", 20), TrafficTarget("digits-00003", 0))
    state = _state(3, *split)
    assert _router(5.0).pick(state).version == 1
    assert _router(29.9).pick(state).version == 2
    assert _router(30.0).pick(state).version == 2
    assert _router(99.0).pick(state).version == 2
    three = _state(4, *split[:2], TrafficTarget("digits-00003", 1), TrafficTarget("digits-00004", 0))
    assert _router(31.0).pick(three).version == 3  # the last with traffic, though it has only 1 %


def test_a_model_with_no_revision_receiving_traffic_is_not_found() -> None:
    for traffic in ((TrafficTarget("digits-00001", 0),), ()):
        state = ServingState(model="digits", revisions=_state(1).revisions, traffic=traffic)
        with pytest.raises(NotFound, match=r"^model 'digits' has no revision receiving traffic$"):
            _router(0.0).pick(state)


def test_a_tag_reaches_its_revision_whatever_its_share() -> None:
    state = _state(2, TrafficTarget("digits-00001", 100, "stable"), TrafficTarget("digits-00002", 0, "canary"))
    assert _router(0.0).pick(state, tag="canary").version == 2
    assert _router(99.0).pick(state, tag="stable").version == 1
    assert _router(99.0).pick(state, tag="").version == 1  # no tag: the split
    with pytest.raises(NotFound, match=r"^model 'digits' has no route tagged 'beta'$"):
        _router(0.0).pick(state, tag="beta")


def test_a_tag_wins_over_a_version() -> None:
    state = _state(2, TrafficTarget("digits-00001", 100, "stable"), TrafficTarget("digits-00002", 0, "canary"))
    assert _router(0.0).pick(state, tag="canary", version="1").version == 2


def test_a_version_reaches_its_newest_revision_in_traffic_else_its_newest() -> None:
    state = ServingState(model="digits")
    for version in (1, 2, 1, 1):
        state, _ = add_revision(state, version, Batching(), 1)
    routed = replace_traffic(state, TrafficTarget("digits-00003", 60), TrafficTarget("digits-00002", 40))
    assert _router(99.0).pick(routed, version="1").id == "digits-00003"
    assert _router(0.0).pick(routed, version="2").id == "digits-00002"
    unrouted = replace_traffic(state, TrafficTarget("digits-00002", 100))
    assert _router(0.0).pick(unrouted, version="1").id == "digits-00004"


@pytest.mark.parametrize(
    ("version", "reason"), [("3", "no deployed version 3"), ("v1", "no version 'v1'"), ("", "no version ''")]
)
def test_a_version_not_deployed_or_not_a_number_is_not_found(version: str, reason: str) -> None:
    with pytest.raises(NotFound, match=rf"^model 'digits' has {reason}$"):
        _router(0.0).pick(_state(2), version=version)


def replace_traffic(state: ServingState, *traffic: TrafficTarget) -> ServingState:
    return ServingState(model=state.model, revisions=state.revisions, traffic=traffic)


# -- where the state is kept -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "key"),
    [("digits", "serving/digits/state.json"), ("team-a/digits", "namespaces/team-a/serving/digits/state.json")],
)
def test_a_models_state_is_kept_under_its_namespaces_prefix(model: str, key: str) -> None:
    assert state_key(model) == key


def test_the_serving_state_round_trips_through_its_json_with_every_field() -> None:
    state, _ = add_revision(ServingState(model="digits"), 1, Batching(4, 1.5), 2, LogSpec(sample_rate=0.5))
    state, _ = add_revision(state, 2, Batching(), 1)
    state = set_traffic(state, [TrafficTarget("digits-00001", 90), TrafficTarget("digits-00002", 10, "canary")])
    state = ServingState(**{**state.__dict__, "notices": ('{"id": "n-1"}',)})
    assert ServingState.from_json(state.to_json()) == state


def test_an_open_canary_round_trips_through_the_states_json() -> None:
    state, _ = add_revision(ServingState(model="digits"), 1, Batching(), 1)
    announce = Announce("dev.knflow.model.deployed", {"runid": "run-1"})
    state = ServingState(**{**state.__dict__, "canary": Canary("digits-00001", 1, RolloutPolicy(), announce)})
    assert ServingState.from_json(state.to_json()).canary == state.canary


def test_a_state_without_canary_or_notices_is_read_with_none() -> None:
    raw = b'{"model": "m", "revisions": [], "traffic": [], "history": []}'
    assert ServingState.from_json(raw) == ServingState(model="m")


def test_update_state_starts_from_an_empty_state_and_applies_changes_in_turn(store: ArtifactStore) -> None:
    seen: list[ServingState] = []

    def change(state: ServingState) -> ServingState:
        seen.append(state)
        return add_revision(state, len(state.revisions) + 1, Batching(), 1)[0]

    first = update_state(store, "digits", change)
    second = update_state(store, "digits", change)
    assert seen[0] == ServingState(model="digits")
    assert [r.version for r in first.revisions] == [1] and [r.version for r in second.revisions] == [1, 2]
    assert load_states(store) == {"digits": second}


def test_load_states_reads_every_namespace_and_skips_other_keys(store: ArtifactStore) -> None:
    update_state(store, "digits", lambda s: add_revision(s, 1, Batching(), 1)[0])
    update_state(store, "team-a/iris", lambda s: add_revision(s, 2, Batching(), 1)[0])
    store.put("serving/digits/notes.json", b"{}")
    store.put("namespaces/team-a/serving/iris/other.json", b"{}")
    store.put("namespaces/team-a/models/iris/state.json", b"{}")
    states = load_states(store)
    assert sorted(states) == ["digits", "team-a/iris"]
    assert states["team-a/iris"].revisions[0].version == 2


def test_a_state_kept_where_it_was_before_namespaces_moves_once_under_its_prefix(store: ArtifactStore) -> None:
    old = add_revision(ServingState(model="team-b/digits"), 3, Batching(), 1)[0]
    store.put("serving/team-b/digits/state.json", old.to_json())
    assert load_states(store) == {"team-b/digits": old}
    assert not store.exists("serving/team-b/digits/state.json")
    moved = store.stat("namespaces/team-b/serving/digits/state.json")
    assert moved.content_type == "application/json"
    assert ServingState.from_json(store.get(moved.key)) == old


def test_a_moved_state_never_overwrites_one_already_in_its_new_place(store: ArtifactStore) -> None:
    newer = update_state(store, "team-b/digits", lambda s: add_revision(s, 4, Batching(), 1)[0])
    old = add_revision(ServingState(model="team-b/digits"), 3, Batching(), 1)[0]
    store.put("serving/team-b/digits/state.json", old.to_json())
    assert load_states(store) == {"team-b/digits": newer}
    assert not store.exists("serving/team-b/digits/state.json")


def test_revisions_are_frozen_values() -> None:
    revision = Revision(id="digits-00001", model="digits", version=1)
    with pytest.raises(AttributeError):
        revision.version = 2  # type: ignore[misc]  # the point: a deploy is immutable
