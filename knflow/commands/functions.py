"""``knflow functions``: serve the functions locally (one worker process each, scaled to zero) or list them."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request

from infra.errors import Unavailable
from infra.settings import Settings, load_settings

HELP = "serve functions on the local runner (POST /functions/NAME), or list their state"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    serve = sub.add_parser("serve", help="run the gateway and start workers on demand (the default)")
    serve.add_argument("functions", nargs="*", help="extra functions: NAME=MODULE, a dotted module or a .py file")
    sub.add_parser("ls", help="show each function's state, pid, last event and restarts")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.action == "ls":
        return _list(settings)
    from functions.runtime.runner import main

    return main(getattr(args, "functions", []))


def _list(settings: Settings) -> int:
    url = f"http://{settings.host}:{settings.functions_port}/functions"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            state = json.load(response)
    except urllib.error.URLError as exc:
        raise Unavailable(f"no function runner at {url}: {exc.reason}") from None
    print(f"{'FUNCTION':12} {'STATE':9} {'PID':>7} {'RESTARTS':>8}  MODULE")
    for name, info in state.items():
        print(f"{name:12} {info['state']:9} {info['pid'] or '-':>7} {info['restarts']:>8}  {info['module']}")
    return 0
