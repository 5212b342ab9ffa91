"""``knflow invoke``: send one CloudEvent to a function or the broker and print the reply (like ``func invoke``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from eventing.bindings import from_http, to_http_binary, to_http_structured, to_json
from eventing.events import new_event
from infra.auth import own_credentials
from infra.errors import InvalidRequest
from infra.httpclient import JsonClient, split_url
from infra.settings import Settings, load_settings


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", nargs="?", help="function name, sent to the local runner's /functions/NAME")
    parser.add_argument("--target", help="URL to send to instead (a host, the broker, a Knative service)")
    parser.add_argument("--broker", action="store_true", help="send to the broker ingress")
    parser.add_argument("--type", default="dev.knflow.invoke", help="event type (default %(default)s)")
    parser.add_argument("--source", default="/knflow/cli", help="event source (default %(default)s)")
    parser.add_argument("--data", help="JSON inline, @FILE, or - for stdin (default: {})")
    parser.add_argument("--content-type", default="application/json", help="data content type")
    parser.add_argument("--runid", help="run id (default: a new run)")
    parser.add_argument("--subject", help="event subject")
    parser.add_argument("--structured", action="store_true", help="send in structured mode (default binary)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the reply")


def target_url(args: argparse.Namespace, settings: Settings) -> str:
    """Where the event goes: --target, else the broker, else the runner URL of the named function."""
    if args.target:
        return args.target
    if args.broker:
        return settings.url(settings.broker_port, "/")
    if not args.function:
        raise InvalidRequest("name a function, or give --target URL or --broker")
    return settings.url(settings.functions_port, f"/functions/{args.function}")


def read_data(spec: str | None, content_type: str) -> Any:
    """The event data from inline text, @FILE or - (stdin); JSON is parsed when the content type says so."""
    if spec is None:
        return {} if "json" in content_type else None
    if spec == "-":
        raw = sys.stdin.buffer.read()
    elif spec.startswith("@"):
        raw = Path(spec[1:]).read_bytes()
    else:
        raw = spec.encode()
    if "json" not in content_type:
        return raw.decode() if content_type.startswith("text/") else raw
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"--data is not valid JSON ({exc}); set --content-type for other data") from None


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    url = target_url(args, settings)
    data = read_data(args.data, args.content_type)
    event = new_event(
        args.type, args.source, data, runid=args.runid, subject=args.subject, datacontenttype=args.content_type
    )
    headers, body = to_http_structured(event) if args.structured else to_http_binary(event)
    headers |= own_credentials(settings)(url)  # the token only to the platform's own servers
    server, path = split_url(url)
    answer = JsonClient(server, timeout=args.timeout).send("POST", path, body, headers=headers)
    status, reply_headers, reply = answer.status, answer.headers, answer.data
    print(f"{status} from {url} (sent {event.get_type()} id={event.get_id()})", file=sys.stderr)
    _print_reply(reply_headers, reply)
    return 0 if 200 <= status < 300 else 1


def _print_reply(headers: dict[str, str], body: bytes) -> None:
    if not body and not any(k.lower().startswith("ce-") for k in headers):
        return
    try:
        reply = from_http(headers, body)
    except InvalidRequest:
        sys.stdout.write(body.decode("utf-8", "replace") + "\n")
        return
    sys.stdout.write(orjson.dumps(orjson.loads(to_json(reply)), option=orjson.OPT_INDENT_2).decode() + "\n")
