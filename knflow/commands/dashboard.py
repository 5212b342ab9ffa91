"""``knflow dashboard``: serve the dashboard (runs, models, serving, failed events) in the foreground."""

from __future__ import annotations

import argparse

HELP = "serve the dashboard (runs, models, serving, failed events with replay) on settings.dashboard_port"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="override settings.dashboard_port")
    parser.add_argument("--broker", default=None, help="broker URL (default http://HOST:BROKER_PORT)")
    parser.add_argument("--gateway", default=None, help="gateway URL (default http://HOST:GATEWAY_PORT)")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    from infra.logs import configure_logging
    from infra.settings import load_settings
    from infra.tracing import traced
    from knflow.dashboard.server import Dashboard, serve_until_signal

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    dashboard = Dashboard(settings, broker_url=args.broker, gateway_url=args.gateway, port=args.port)
    print(f"knflow dashboard on http://{settings.host}:{args.port or settings.dashboard_port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt), traced("server"):
        asyncio.run(serve_until_signal(dashboard))
    return 0
