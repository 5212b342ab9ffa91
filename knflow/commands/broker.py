"""``knflow broker``: run the event broker (ingress, triggers, delivery, sources) in the foreground."""

from __future__ import annotations

import argparse

from infra.settings import load_settings
from knflow.broker import serve


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="listen port (default: settings broker_port)")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.port is not None:
        settings = settings.replace(broker_port=args.port)
    print(f"broker on {settings.url(settings.broker_port)} over {settings.broker.url}; Ctrl-C stops it")
    return serve(settings)
