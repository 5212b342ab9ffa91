"""``knflow trigger``: list, add (Knative Trigger spec) or delete triggers of a running broker."""

from __future__ import annotations

import argparse
import json

from eventing.triggers import INITIAL_OFFSET_ANNOTATION
from infra.auth import auth_headers
from infra.errors import InvalidRequest
from infra.httpclient import JsonClient
from infra.settings import load_settings


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "add", "delete"])
    parser.add_argument("name", nargs="?", help="trigger name (add, delete)")
    parser.add_argument("--subscriber", help="subscriber URL (add)")
    parser.add_argument("--filter", action="append", default=[], metavar="ATTR=VALUE", help="exact attribute filter")
    parser.add_argument("--retry", type=int, default=None, help="delivery retries")
    parser.add_argument("--backoff-delay", default="PT0.2S", help="ISO-8601 backoff delay")
    parser.add_argument("--dead-letter-sink", default=None, help="dead-letter sink URL")
    parser.add_argument(
        "--initial-offset",
        choices=["latest", "earliest"],
        default="latest",
        help="where a new trigger starts: events accepted from now on (latest) or all the log holds (earliest)",
    )


def _call(method: str, path: str, body: dict | None = None) -> dict:
    settings = load_settings()
    broker = JsonClient(settings.url(settings.broker_port), timeout=60, headers=auth_headers(settings))
    return broker.call(method, path, body) or {}  # a PUT waits for the trigger's group to join


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        for item in _call("GET", "/triggers")["items"]:
            print(f"{item['name']}\t{json.dumps(item['spec'])}")
        return 0
    if not args.name:
        raise InvalidRequest(f"trigger {args.action} needs a NAME")
    if args.action == "delete":
        _call("DELETE", f"/triggers/{args.name}")
        return 0
    if not args.subscriber:
        raise InvalidRequest("trigger add needs --subscriber URL")
    spec: dict = {"subscriber": {"uri": args.subscriber}}
    attrs = dict(f.split("=", 1) for f in args.filter)
    if attrs:
        spec["filter"] = {"attributes": attrs}
    if args.retry is not None or args.dead_letter_sink:
        spec["delivery"] = {"retry": args.retry or 0, "backoffDelay": args.backoff_delay}
        if args.dead_letter_sink:
            spec["delivery"]["deadLetterSink"] = {"uri": args.dead_letter_sink}
    body = {"spec": spec, "metadata": {"annotations": {INITIAL_OFFSET_ANNOTATION: args.initial_offset}}}
    print(json.dumps(_call("PUT", f"/triggers/{args.name}", body)))
    return 0
