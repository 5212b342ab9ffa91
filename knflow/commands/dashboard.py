"""``knflow dashboard``: serve the dashboard (runs, models, serving, failed events) in the foreground."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="override settings.dashboard_port")
    parser.add_argument("--broker", default=None, help="broker URL (default http://HOST:BROKER_PORT)")
    parser.add_argument("--gateway", default=None, help="gateway URL (default http://HOST:GATEWAY_PORT)")


def run(args: argparse.Namespace) -> int:
    from infra.serve import run_server
    from infra.settings import load_settings
    from knflow.dashboard.server import Dashboard, serve_until_signal

    settings = load_settings()
    print(f"knflow dashboard on {settings.url(args.port or settings.dashboard_port)}", flush=True)

    async def serve() -> bool:
        dashboard = Dashboard(settings, broker_url=args.broker, gateway_url=args.gateway, port=args.port)
        return await serve_until_signal(dashboard)

    return run_server(serve, settings, service="server")
