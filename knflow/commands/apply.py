"""``knflow apply``: render the Knative manifests and server-side apply them to the current kubeconfig's cluster."""

from __future__ import annotations

import argparse
import os

from infra.kubeapply import apply, client_from_kubeconfig
from knflow.commands.manifests import add_render_options, render_from


def register(parser: argparse.ArgumentParser) -> None:
    add_render_options(parser)
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig (default: $KUBECONFIG, else ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context (default: its current-context)")
    parser.add_argument("--dry-run", action="store_true", help="validate and list what would be applied; no cluster")


def run(args: argparse.Namespace) -> int:
    resources, note = render_from(args)
    if note:
        print(note.removeprefix("# "), end="")
    if args.dry_run:
        for resource in resources:
            print(f"{resource['kind']}/{resource['metadata']['name']} (dry run: not applied)")
        return 0
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    client = client_from_kubeconfig(kubeconfig, args.context)
    with client:
        for name in apply(resources, client):
            print(f"{name} applied")
    return 0
