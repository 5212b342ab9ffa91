"""``python -m knflow.dashboard``: serve the dashboard on settings.host:settings.dashboard_port."""

from __future__ import annotations

import asyncio

from infra.logs import configure_logging
from infra.settings import load_settings
from infra.tracing import traced
from knflow.dashboard.server import Dashboard, serve_until_signal


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    with traced("server"):
        asyncio.run(serve_until_signal(Dashboard(settings)))


if __name__ == "__main__":
    main()
