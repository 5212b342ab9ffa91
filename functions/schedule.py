"""Schedule: on a schedule's ping, the ``data.arrived`` of its data set's newest raw object, for its pipeline.

A knflow schedule is a ping source (Knative's PingSource) whose data is ``{"schedule", "dataset", "pipeline",
"options"}``; the ``schedules`` trigger brings its pings here. The arrival continues the ping's run (its
``runid``), so a tick whose data set has no data fails that run with the reason instead of vanishing.
Pings without a ``schedule`` and ``dataset`` (someone else's ping source) are not this function's.
"""

from __future__ import annotations

from typing import Any

from cloudevents.core.v1.event import CloudEvent

from functions.arrivals import arrival, newest_raw
from functions.contract import LIFECYCLE
from functions.runoptions import parse_options

SOURCE = "/knflow/functions/schedule"


def handle(event: CloudEvent, ctx: Any) -> CloudEvent | None:
    """ping → data.arrived of the newest object under ``raw/<dataset>/`` (None for pings that are not a schedule's)."""
    data = event.get_data()
    if not isinstance(data, dict) or not data.get("schedule") or not data.get("dataset"):
        ctx.log.info("schedule: ping %s from %s is not a knflow schedule's", event.get_id(), event.get_source())
        return None
    dataset, pipeline, options = data["dataset"], data.get("pipeline") or LIFECYCLE, data.get("options")
    if options is not None:
        parse_options(options, f"schedule {data['schedule']} options")
    info = newest_raw(ctx.store, dataset)
    ctx.log.info("schedule %s: %s for pipeline %s", data["schedule"], info.key, pipeline)
    return arrival(
        ctx.settings.artifacts,
        ctx.store,
        info,
        dataset=dataset,
        pipeline=pipeline,
        options=options,
        source=SOURCE,
        cause=event,
        extra={"schedule": data["schedule"]},
    )
