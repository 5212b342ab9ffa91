"""``knflow functions``: serve the functions locally (one worker process each, scaled to zero), list them, or remove
a deployed one."""

from __future__ import annotations

import argparse

from functions.runtime.loader import KNOWN_FUNCTIONS
from infra.errors import Conflict
from infra.settings import Settings, load_settings
from knflow.control import PipelineControl
from knflow.deployment import Deployer


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    serve = sub.add_parser("serve", help="run the gateway and start workers on demand (the default)")
    serve.add_argument("functions", nargs="*", help="extra functions: NAME=MODULE, a dotted module or a .py file")
    sub.add_parser("ls", help="show each function's state, pid, restarts and what it runs")
    rm = sub.add_parser("rm", help="stop hosting a function deployed with `knflow deploy` and delete its copy")
    rm.add_argument("name")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.action == "ls":
        return _list(settings)
    if args.action == "rm":
        return _remove(settings, args.name)
    from functions.runtime.runner import main

    return main(getattr(args, "functions", []))


def _list(settings: Settings) -> int:
    deployer = Deployer(settings)
    state, deployed = deployer.runner.call("GET", "/functions"), deployer.list()
    print(f"{'FUNCTION':20} {'STATE':9} {'PID':>7} {'RESTARTS':>8}  {'KIND':22} RUNS")
    for name, info in state.items():
        if name in deployed:
            kind, runs = f"deployed {deployed[name].version}", deployed[name].source
        elif info.get("function"):
            kind, runs = f"step instance of {info['function']}", info["module"]
        else:
            kind, runs = ("built-in" if name in KNOWN_FUNCTIONS else "instance"), info["module"]
        env = f"  (python {info['python']})" if info.get("python") else ""
        print(f"{name:20} {info['state']:9} {info['pid'] or '-':>7} {info['restarts']:>8}  {kind:22} {runs}{env}")
    return 0


def _remove(settings: Settings, name: str) -> int:
    users = PipelineControl(settings).using(name)
    if users:
        raise Conflict(f"pipelines {', '.join(users)} run function {name}; delete them or apply them without it first")
    Deployer(settings).remove(name)
    print(f"function {name} removed")
    return 0
