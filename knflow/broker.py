"""knflow's broker process: the event broker with the lifecycle's sources (``python -m knflow.broker``).

``eventing.broker`` gives landed objects no meaning; here an object under ``raw/`` becomes the lifecycle's
``data.arrived`` for the ``lifecycle`` pipeline, unless the settings say otherwise.
"""

from __future__ import annotations

import contextlib

from eventing.broker import serve_until_signal
from functions.contract import with_lifecycle
from infra.aio import run
from infra.logs import configure_logging
from infra.settings import Settings, load_settings
from infra.tracing import traced


def serve(settings: Settings) -> None:
    """Run the broker with the lifecycle's sources until SIGTERM/SIGINT."""
    configure_logging(settings.log_level, settings.log_format)
    with contextlib.suppress(KeyboardInterrupt), traced("broker"):
        run(serve_until_signal(with_lifecycle(settings)))


if __name__ == "__main__":
    serve(load_settings())
