"""Subcommands of the ``knflow`` command line, one module each."""

import argparse

from infra.auth import auth_headers
from infra.namespaces import HEADER, check
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


def add_namespace_options(sub: argparse._SubParsersAction) -> None:
    """``--namespace`` on every action of a command."""
    for parser in sub.choices.values():
        add_namespace_option(parser)


def platform_headers(settings: Settings) -> dict[str, str]:
    """What the CLI calls the platform's servers with: its token, and the namespace it addresses when one is set."""
    return {**auth_headers(settings), **({HEADER: settings.namespace} if settings.namespace else {})}
