"""``knflow broker``: run the event broker (ingress, triggers, delivery, sources) in the foreground."""

from __future__ import annotations

import argparse

from eventing.broker import serve_until_signal
from infra.aio import run as run_loop
from infra.logs import configure_logging
from infra.settings import load_settings

HELP = "run the event broker: CloudEvents ingress, triggers and delivery over the configured event log"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="listen port (default: settings broker_port)")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.port is not None:
        settings = settings.replace(broker_port=args.port)
    configure_logging(settings.log_level, settings.log_format)
    print(f"broker on http://{settings.host}:{settings.broker_port} over {settings.broker.url}; Ctrl-C stops it")
    run_loop(serve_until_signal(settings))
    return 0
