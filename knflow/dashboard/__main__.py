"""``python -m knflow.dashboard``: serve the dashboard on settings.host:settings.dashboard_port."""

from __future__ import annotations

import sys

from infra.serve import run_server
from infra.settings import load_settings
from knflow.dashboard.server import Dashboard, serve_until_signal


def main() -> int:
    settings = load_settings()
    return run_server(lambda: serve_until_signal(Dashboard(settings)), settings, service="server")


if __name__ == "__main__":
    sys.exit(main())
