"""The lifecycle's event contract: the CloudEvent types its steps take and answer, the extensions they route by,
and the default pipeline that wires them (``functions/lifecycle.yaml``).

The table of who produces and who consumes each type is the default pipeline spec itself; docs/lifecycle.md
describes the data of each type.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from eventing.events import STEP_FAILED
from functions.runoptions import DATASET_OPTIONS
from infra.errors import InvalidRequest
from infra.settings import Settings
from serving.logevents import INFERENCE_REQUEST, INFERENCE_RESPONSE

DATA_ARRIVED = "dev.knflow.data.arrived"
DATASET_INGESTED = "dev.knflow.dataset.ingested"
FEATURES_READY = "dev.knflow.features.ready"
TRIAL_REQUESTED = "dev.knflow.trial.requested"
MODEL_TRAINED = "dev.knflow.model.trained"
TUNE_COMPLETED = "dev.knflow.tune.completed"
MODEL_REGISTERED = "dev.knflow.model.registered"
MODEL_DEPLOYED = "dev.knflow.model.deployed"
DRIFT_DETECTED = "dev.knflow.drift.detected"
RETRAIN_STARTED = "dev.knflow.retrain.started"  # in the drifting run; the new run starts with its data.arrived
#: What the gateway logs of a deployed model's traffic (KServe's inference-logger types; drift takes the requests).
INFERENCE_TYPES = (INFERENCE_REQUEST, INFERENCE_RESPONSE)

#: Every type of the lifecycle, in the order a run produces them; ``step.failed`` is the platform's report.
EVENT_TYPES: tuple[str, ...] = (
    DATA_ARRIVED,
    DATASET_INGESTED,
    FEATURES_READY,
    TRIAL_REQUESTED,
    MODEL_TRAINED,
    TUNE_COMPLETED,
    MODEL_REGISTERED,
    MODEL_DEPLOYED,
    DRIFT_DETECTED,
    STEP_FAILED,
)

#: Extension on features.ready ("train" or "tune") and model.trained ("train" or "trial"): trigger filters are
#: exact matches, so the run's choice travels as an attribute the default pipeline routes by.
MODE = "mode"
TRAIN, TUNE, TRIAL = "train", "tune", "trial"

#: The pipeline knflow ships and every run uses unless it names another.
LIFECYCLE = "lifecycle"
#: Where raw data lands; an object put under it starts a run (``raw/<dataset>/<file>``).
RAW_PREFIX = "raw/"
#: Files under ``raw/`` that are not data on their own and start no run (globs on the file name): a data set's
#: run options and the labels half of an IDX pair (its images half starts the run).
NOT_DATA = (DATASET_OPTIONS, "*labels-idx1-ubyte*")


def data_of(event: CloudEvent) -> dict[str, Any]:
    """An event's data as the lifecycle's steps read it: a JSON object (``{}`` when there is none); anything else
    is refused (400: not retried), naming the event."""
    data = event.get_data()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"{event.get_type()} {event.get_id()}: data must be a JSON object, not {type(data).__name__}"
        )
    return data


def lifecycle_spec_path() -> Path:
    """The default pipeline's spec file, shipped inside the package."""
    return Path(str(resources.files("functions") / "lifecycle.yaml"))


def with_lifecycle(settings: Settings) -> Settings:
    """``settings`` with the lifecycle's meaning of arrivals filled in where the user set none: an object
    landing under ``raw/`` becomes ``data.arrived`` for the ``lifecycle`` pipeline, unless it is ``NOT_DATA``."""
    ev = settings.eventing
    filled = dataclasses.replace(
        ev,
        arrival_type=ev.arrival_type or DATA_ARRIVED,
        arrival_prefix=ev.arrival_prefix or RAW_PREFIX,
        arrival_pipeline=ev.arrival_pipeline or LIFECYCLE,
        arrival_ignore=ev.arrival_ignore or ",".join(NOT_DATA),
        webhook_type=ev.webhook_type or DATA_ARRIVED,
    )
    return settings.replace(eventing=filled)


def builtin_emits() -> dict[str, tuple[str, ...]]:
    """The event types each built-in step function answers with, as the shipped lifecycle declares them."""
    from functions.runtime.loader import KNOWN_FUNCTIONS
    from functions.runtime.pipeline import load_pipeline

    declared = {step.function: tuple(step.emits) for step in load_pipeline(lifecycle_spec_path()).steps}
    return {name: declared.get(name, ()) for name in KNOWN_FUNCTIONS}
