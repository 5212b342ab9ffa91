"""``knflow token``: create, list and revoke the bearer tokens knflow's servers accept (kept hashed)."""

from __future__ import annotations

import argparse

from infra.auth import ROLES, TokenFile, tokens_path
from infra.settings import load_settings


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="make a token (printed once: only its hash is kept)")
    create.add_argument("name")
    create.add_argument("--role", choices=ROLES, default="viewer", help="viewer reads; editor changes; admin manages")
    create.add_argument(
        "--namespace", "-n", action="append", default=[], help="a namespace the token acts for (repeatable; * for all)"
    )
    sub.add_parser("ls", help="list tokens: name, role, namespaces, created")
    revoke = sub.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("name")


def run(args: argparse.Namespace) -> int:
    tokens = TokenFile(tokens_path(load_settings()))
    if args.action == "create":
        print(tokens.create(args.name, args.role, tuple(args.namespace or ["default"])))
    elif args.action == "ls":
        for item in tokens.list():
            print(f"{item['name']:<24} {item['role']:<8} {','.join(item['namespaces']):<24} {item['created']}")
    else:
        tokens.revoke(args.name)
        print(f"token {args.name} revoked")
    return 0
