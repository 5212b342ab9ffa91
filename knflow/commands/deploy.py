"""``knflow deploy DIR``: host a function directory on the running platform (checked, its dependencies installed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from infra.settings import load_settings
from knflow.deployment import Deployer


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="the function directory (as `knflow func new` writes it)")
    parser.add_argument("--name", default=None, help="the name to host it under (default: func.yaml's name)")


def run(args: argparse.Namespace) -> int:
    deployed = Deployer(load_settings()).deploy(args.directory, args.name)
    env = f"own environment {deployed.python}" if deployed.python else "knflow's interpreter"
    print(f"function {deployed.name} deployed: version {deployed.version}, {deployed.shape} shape, {env}")
    print(f"events reach it at /functions/{deployed.name}; name it in a pipeline step as `function: {deployed.name}`")
    return 0
