"""``knflow trigger``: list, add (Knative Trigger spec) or delete triggers of a running broker."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request

from eventing.triggers import INITIAL_OFFSET_ANNOTATION
from infra.errors import InvalidRequest, Unavailable
from infra.settings import load_settings

HELP = "list, add or delete triggers on the running broker"


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
    url = f"http://{settings.host}:{settings.broker_port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:  # a PUT waits for the group to join
            payload = resp.read()
    except urllib.error.HTTPError as exc:
        raise InvalidRequest(f"{method} {url}: {exc.code} {exc.read().decode('utf-8', 'replace')}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"broker at {url} is not reachable ({exc}); start it with `knflow broker`") from None
    return json.loads(payload) if payload else {}


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
