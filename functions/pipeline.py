"""The lifecycle as triggers: which events each step takes, in Knative Trigger form.

The same list becomes the embedded broker's triggers (``knflow up``) and Knative Trigger
resources in a cluster. Routing by run (train or tune) uses the ``mode`` extension that
featurize and train set, because trigger filters are exact matches (see docs/lifecycle.md).
"""

from __future__ import annotations

from eventing.events import (
    DATA_ARRIVED,
    DATASET_INGESTED,
    FEATURES_READY,
    MODEL_REGISTERED,
    MODEL_TRAINED,
    STEP_FAILED,
    TRIAL_REQUESTED,
    TUNE_COMPLETED,
)
from eventing.triggers import DeliverySpec, Trigger

#: (trigger name, function, filter attributes); one function may take several event kinds.
ROUTES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("ingest", "ingest", {"type": DATA_ARRIVED}),
    ("featurize", "featurize", {"type": DATASET_INGESTED}),
    ("train", "train", {"type": FEATURES_READY, "mode": "train"}),
    ("train-trials", "train", {"type": TRIAL_REQUESTED}),
    ("tune", "tune", {"type": FEATURES_READY, "mode": "tune"}),
    ("tune-results", "tune", {"type": MODEL_TRAINED, "mode": "trial"}),
    ("tune-failures", "tune", {"type": STEP_FAILED}),
    ("register", "register", {"type": MODEL_TRAINED, "mode": "train"}),
    ("register-best", "register", {"type": TUNE_COMPLETED}),
    ("deploy", "deploy", {"type": MODEL_REGISTERED}),
)

#: Steps that may run for minutes (training, a tuning round) get a longer per-attempt timeout.
LONG_RUNNING = {"train", "tune"}


def lifecycle_triggers(functions_url: str, *, retry: int = 3, backoff_delay: str = "PT0.5S") -> list[Trigger]:
    """The lifecycle's triggers, delivering to ``{functions_url}/functions/{function}``."""
    base = functions_url.rstrip("/")
    return [
        Trigger(
            name=name,
            subscriber=f"{base}/functions/{function}",
            filter=dict(attributes),
            delivery=DeliverySpec(
                retry=retry,
                backoff_policy="exponential",
                backoff_delay=backoff_delay,
                timeout="PT30M" if function in LONG_RUNNING else "PT2M",
            ),
        )
        for name, function, attributes in ROUTES
    ]


def lifecycle_functions() -> list[str]:
    """The function names the lifecycle needs running."""
    return sorted({function for _, function, _ in ROUTES})
