"""knflow's broker process: the event broker with the lifecycle's sources (``python -m knflow.broker``).

``eventing.broker`` gives landed objects no meaning; here an object under ``raw/`` becomes the lifecycle's
``data.arrived`` for the ``lifecycle`` pipeline, unless the settings say otherwise.
"""

from __future__ import annotations

import sys

from eventing.broker import serve_until_signal
from functions.contract import with_lifecycle
from infra.serve import run_server
from infra.settings import Settings, load_settings


def serve(settings: Settings) -> int:
    """Run the broker with the lifecycle's sources until SIGTERM/SIGINT; the exit code."""
    return run_server(lambda: serve_until_signal(with_lifecycle(settings)), settings, service="broker")


if __name__ == "__main__":
    sys.exit(serve(load_settings()))
