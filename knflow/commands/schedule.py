"""``knflow schedule``: re-run a pipeline on a data set's newest raw object on a cron, on the running platform."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from infra.settings import load_settings
from knflow.client import Client
from knflow.commands import add_namespace_options, with_namespace


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add (or replace) a schedule; it ticks from now on")
    add.add_argument("name", help="the schedule's name (lowercase letters, digits, '-')")
    add.add_argument(
        "--cron",
        required=True,
        help="cron expression: 5 fields (minute hour day month weekday); locally a 6th for seconds ('* * * * * */30')",
    )
    add.add_argument("--dataset", required=True, help="the data set whose newest object under raw/<dataset>/ runs")
    add.add_argument("--pipeline", default="lifecycle", help="the pipeline each run takes (default lifecycle)")
    add.add_argument("--options", type=Path, help="run options JSON for each run (see docs/lifecycle.md)")
    sub.add_parser("ls", help="list the schedules")
    delete = sub.add_parser("delete", help="delete a schedule; it stops at once")
    delete.add_argument("name")
    add_namespace_options(sub)


def run(args: argparse.Namespace) -> int:
    client = Client.from_settings(with_namespace(load_settings(), args), timeout=120.0)
    if args.action == "add":
        options = orjson.loads(args.options.read_bytes()) if args.options else None
        added = client.add_schedule(
            args.name, cron=args.cron, dataset=args.dataset, pipeline=args.pipeline, options=options
        )
        print(
            f"schedule {added['name']} added: pipeline {added['pipeline']} on {added['dataset']} at '{added['cron']}'"
        )
    elif args.action == "ls":
        for item in client.schedules():
            print(f"{item['name']:<20} {item['cron']:<20} {item['dataset']:<20} {item['pipeline']}")
    else:
        client.delete_schedule(args.name)
        print(f"schedule {args.name} deleted")
    return 0
