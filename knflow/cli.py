"""The ``knflow`` command line: one subcommand per module in ``knflow.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys

from infra.errors import KnflowError
from infra.version import VERSION as __version__

#: Each module has ``HELP`` (one line), ``register(parser)`` and ``run(args) -> int``.
COMMANDS = [
    "demo",
    "run",
    "runs",
    "up",
    "config",
    "artifacts",
    "services",
    "sources",
    "broker",
    "pipeline",
    "schedule",
    "token",
    "trigger",
    "invoke",
    "func",
    "deploy",
    "functions",
    "serve",
    "models",
    "dashboard",
    "manifests",
    "apply",
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="knflow",
        description="Kubeflow's ML lifecycle as event-driven serverless functions.",
    )
    parser.add_argument("--version", action="version", version=f"knflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"knflow.commands.{name.replace('-', '_')}")
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.register(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``knflow`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KnflowError as exc:
        print(f"knflow {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
