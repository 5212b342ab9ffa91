"""The ``knflow`` command line: one subcommand per module in ``knflow.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys

from infra.errors import KnflowError
from infra.version import VERSION as __version__

#: Each command: its one-line help. Its module ``knflow.commands.<name>`` has ``register(parser)`` and
#: ``run(args) -> int``, and is imported only when the command runs (``knflow --help`` imports none of them).
COMMANDS: dict[str, str] = {
    "demo": "run the whole lifecycle on the bundled digits images: ingest, featurize, tune, register, deploy, infer",
    "run": "run the whole lifecycle on a data file (CSV, NPZ, Parquet, IDX) and print a summary",
    "runs": "list, show and compare runs (experiments, trials), and read or follow their functions' log lines",
    "up": "run the platform (broker, function runner, gateway, dashboard) until Ctrl-C, restarting what exits",
    "config": "show the resolved configuration (defaults < knflow.toml < KNFLOW_* environment)",
    "artifacts": "list, put, get or delete objects in the artifact store",
    "services": "start a local Kafka-protocol broker (tansu) and S3 server (SeaweedFS) and print their URLs",
    "sources": "print the configuration a source outside knflow needs (minio: bucket notifications to the broker)",
    "broker": "run the event broker: CloudEvents ingress, triggers and delivery over the configured event log",
    "pipeline": "apply, list, show or delete pipelines (spec files of steps and triggers) on the running platform",
    "schedule": "add, list or delete schedules that re-run a pipeline on a data set's newest data on a cron",
    "token": "create, list or revoke bearer tokens (a role and the namespaces a token acts for)",
    "trigger": "list, add or delete triggers on the running broker",
    "invoke": "send a CloudEvent to a function (or the broker, or any URL) and print the reply",
    "func": "create a function directory (Knative func's Python layout) to deploy with `knflow deploy`",
    "deploy": "deploy a function directory (func.yaml, pyproject.toml, function/) to the running platform",
    "functions": "serve functions on the local runner (POST /functions/NAME), list them or remove a deployed one",
    "serve": "run the inference gateway (V2 REST, /v1 control API, /metrics on gateway_port; V2 gRPC on grpc_port)",
    "models": "registered models and versions, aliases and audit; deploy, split traffic and roll back on the gateway",
    "dashboard": "serve the dashboard (runs, models, serving, failed events with replay) on settings.dashboard_port",
    "manifests": "print the Kubernetes/Knative manifests (Kafka Broker, pipelines' Triggers and Services, model RBAC)",
    "apply": "apply the Knative manifests to the cluster of the current kubeconfig (server-side apply)",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every command with its help, and the arguments of ``only`` (all when None)."""
    parser = argparse.ArgumentParser(
        prog="knflow",
        description="Kubeflow's ML lifecycle as event-driven serverless functions.",
    )
    parser.add_argument("--version", action="version", version=f"knflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=summary)
        if only is None or name == only:
            module = importlib.import_module(f"knflow.commands.{name}")
            module.register(command)
            command.set_defaults(handler=module.run)
    return parser


def _command(argv: list[str]) -> str:
    """The command ``argv`` names (the first word that is not an option), or "" when it names none."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``knflow`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(only=_command(argv)).parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KnflowError as exc:
        print(f"knflow {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
