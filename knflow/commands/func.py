"""``knflow func new``: write a function directory in Knative func's Python layout, ready to deploy."""

from __future__ import annotations

import argparse
from pathlib import Path

from knflow.scaffold import SHAPES, new_function


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    new = sub.add_parser("new", help="write a new function directory")
    new.add_argument("name", help="the function's name (a DNS label: lowercase letters, digits, '-')")
    new.add_argument("--dir", type=Path, default=None, help="the directory to write (default ./NAME)")
    new.add_argument(
        "--shape", choices=SHAPES, default="knative",
        help="knative: new() with async handle(scope, receive, send), as `func create -l python -t cloudevents` "
        "writes (default); knflow: handle(event, ctx)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    root = new_function(args.name, args.dir, args.shape)
    print(f"function {args.name} ({args.shape} shape) written to {root}")
    print(f"edit {root / 'function' / 'func.py'}, then: knflow deploy {root}")
    return 0
