"""The ``schedule`` function: a schedule's ping becomes the arrival of its data set's newest data object."""

from __future__ import annotations

import pytest

from eventing.events import new_event
from eventing.sources.ping import PING_TYPE
from functions import schedule
from functions.contract import DATA_ARRIVED
from infra.errors import InvalidRequest
from infra.settings import load_settings
from infra.store import ArtifactStore
from tests.lifecycle.helpers import StepContext


def ping(data: object) -> object:
    return new_event(PING_TYPE, "knflow/ping/nightly", data, subject="nightly")


def test_a_schedules_ping_becomes_the_arrival_of_the_newest_data_for_its_pipeline(store: ArtifactStore) -> None:
    ctx = StepContext(store=store, settings=load_settings(env={}))
    store.put("raw/iris/a-old.csv", b"a,label\n1,0\n")
    newest = store.put("raw/iris/b-new.csv", b"a,label\n2,1\n")
    store.put("raw/iris/knflow.json", b"{}")  # written last, but not data
    options = {"model_name": "iris", "train": {"epochs": 2}}
    tick = ping({"schedule": "nightly", "dataset": "iris", "pipeline": "tabular", "options": options})

    arrived = schedule.handle(tick, ctx)
    again = schedule.handle(tick, ctx)  # a redelivered ping

    assert arrived is not None and again is not None
    assert arrived.get_type() == DATA_ARRIVED and arrived.get_extension("pipeline") == "tabular"
    data = arrived.get_data()
    assert (data["key"], data["dataset"], data["options"], data["schedule"]) == (newest.key, "iris", options, "nightly")
    assert data["etag"] == newest.sha256
    assert arrived.get_extension("runid") == tick.get_extension("runid")  # the tick's run goes on
    assert again.get_id() == arrived.get_id()  # the same arrival, so the run is not started twice


def test_a_tick_on_a_data_set_without_data_fails_naming_it_and_other_pings_are_ignored(store: ArtifactStore) -> None:
    ctx = StepContext(store=store, settings=load_settings(env={}))
    store.put("raw/empty/knflow.json", b"{}")
    with pytest.raises(InvalidRequest, match="dataset 'empty' has no data under raw/empty/"):
        schedule.handle(ping({"schedule": "nightly", "dataset": "empty"}), ctx)
    with pytest.raises(InvalidRequest, match="unknown run options"):
        schedule.handle(ping({"schedule": "nightly", "dataset": "empty", "options": {"epochs": 1}}), ctx)
    assert schedule.handle(ping({"hello": "world"}), ctx) is None
    assert schedule.handle(ping(None), ctx) is None
