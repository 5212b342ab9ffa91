"""Subcommands of the ``knflow`` command line, one module each."""

import argparse

from infra.namespaces import check
from infra.settings import Settings


def add_namespace_option(parser: argparse.ArgumentParser) -> None:
    """``--namespace`` for a command that talks to a running platform (``KNFLOW_NAMESPACE`` by default)."""
    parser.add_argument(
        "--namespace", "-n", help="the namespace to address (default: KNFLOW_NAMESPACE, else the token's first)"
    )


def with_namespace(settings: Settings, args: argparse.Namespace) -> Settings:
    """The settings with the namespace ``--namespace`` names, when given."""
    namespace = getattr(args, "namespace", None)
    return settings.replace(namespace=check(namespace)) if namespace else settings
