"""``knflow models``: the model registry (list, show, register, alias, audit) and deployments on the gateway."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from infra.settings import load_settings
from infra.store import open_store

HELP = "registered models and versions, aliases and audit; deploy, split traffic and roll back on the gateway"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("ls", help="list models, or the versions of one").add_argument("name", nargs="?")
    show = sub.add_parser("show", help="print a model card as JSON")
    show.add_argument("name")
    show.add_argument("version", nargs="?", default="latest", help="number or alias (default: latest)")
    reg = sub.add_parser("register", help="register an ONNX file as the next version")
    reg.add_argument("name")
    reg.add_argument("file", type=Path)
    alias = sub.add_parser("alias", help="point an alias (e.g. production) at a version")
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("version", type=int)
    alias.add_argument("--actor", default="cli")
    alias.add_argument("--reason", default="")
    sub.add_parser("audit", help="the audit trail of a model").add_argument("name")
    deploy = sub.add_parser("deploy", help="create a revision on the gateway")
    deploy.add_argument("name")
    deploy.add_argument("--version", default="latest")
    deploy.add_argument("--percent", type=int, default=None, help="canary share for the new revision")
    deploy.add_argument("--tag", default=None)
    deploy.add_argument("--max-batch", type=int, default=1)
    traffic = sub.add_parser("traffic", help="set the split: REVISION=PERCENT[:TAG] ...")
    traffic.add_argument("name")
    traffic.add_argument("targets", nargs="+")
    sub.add_parser("rollback", help="restore the previous traffic split").add_argument("name")
    sub.add_parser("status", help="revisions, traffic, replicas and counts on the gateway").add_argument("name")


def _gateway_action(args: argparse.Namespace, base_url: str) -> object:
    from serving.client import ServingClient

    client = ServingClient(base_url)
    if args.action == "deploy":
        batching = {"max_batch": args.max_batch} if args.max_batch > 1 else None
        return client.deploy(args.name, args.version, batching=batching, percent=args.percent, tag=args.tag)
    if args.action == "traffic":
        targets = []
        for item in args.targets:
            revision, _, rest = item.partition("=")
            percent, _, tag = rest.partition(":")
            targets.append({"revision": revision, "percent": int(percent), "tag": tag or None})
        return client.set_traffic(args.name, targets)
    if args.action == "rollback":
        return client.rollback(args.name)
    return client.describe(args.name)


def run(args: argparse.Namespace) -> int:
    from serving.registry import ModelRegistry

    settings = load_settings()
    if args.action in ("deploy", "traffic", "rollback", "status"):
        print(json.dumps(_gateway_action(args, f"http://{settings.host}:{settings.gateway_port}"), indent=2))
        return 0
    registry = ModelRegistry(open_store(settings.artifacts))
    if args.action == "ls" and not args.name:
        for name in registry.models():
            print(name)
    elif args.action == "ls":
        aliases = registry.aliases(args.name)
        for card in registry.versions(args.name):
            tags = ",".join(a for a, v in aliases.items() if v == card.version)
            print(f"{card.version:>4}  {card.created[:19]}  {card.sha256[:12]}  {json.dumps(card.metrics)}  {tags}")
    elif args.action == "show":
        print(registry.get(args.name, args.version).to_json().decode())
    elif args.action == "register":
        card = registry.register(args.name, args.file)
        print(f"{card.name} version {card.version}  sha256:{card.sha256}")
    elif args.action == "alias":
        registry.set_alias(args.name, args.alias, args.version, actor=args.actor, reason=args.reason)
    elif args.action == "audit":
        for record in registry.audit(args.name):
            print(json.dumps(record))
    return 0
