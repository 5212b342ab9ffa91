"""``knflow pipeline``: apply, list, show, delete and check pipeline specs on the running platform."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from functions.runtime.pipeline import PipelineSpec, Step, is_directory, load_pipeline, schema, with_functions
from infra.httpclient import JsonClient
from infra.settings import load_settings
from knflow.commands import add_namespace_options, platform_headers, with_namespace


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    apply = sub.add_parser("apply", help="apply a spec file (its function directories are deployed first)")
    apply.add_argument("file", help="the pipeline spec (YAML or JSON)")
    sub.add_parser("ls", help="list the applied pipelines")
    show = sub.add_parser("show", help="print an applied pipeline's spec")
    show.add_argument("name")
    show.add_argument("-o", "--output", choices=["yaml", "json", "table"], default="yaml")
    delete = sub.add_parser("delete", help="remove a pipeline's triggers and its own function instances")
    delete.add_argument("name")
    check = sub.add_parser("check", help="check a spec file without a platform")
    check.add_argument("file")
    sub.add_parser("schema", help="print the JSON schema of pipeline specs")
    add_namespace_options(sub)


def api(args: argparse.Namespace) -> JsonClient:
    """The running platform's knflow API (the dashboard port), addressing ``--namespace`` when given."""
    settings = with_namespace(load_settings(), args)
    return JsonClient(settings.url(settings.dashboard_port), timeout=300.0, headers=platform_headers(settings))


def absolute(spec: PipelineSpec, spec_file: Path) -> PipelineSpec:
    """The spec with function directories made absolute (they are relative to the spec file)."""

    def resolved(step: Step) -> str:
        if is_directory(step.function) and not Path(step.function).is_absolute():
            return str((spec_file.parent / step.function).resolve())
        return step.function

    return with_functions(spec, resolved)


def run(args: argparse.Namespace) -> int:
    if args.action == "schema":
        print(json.dumps(schema(), indent=2))
    elif args.action == "check":
        spec = load_pipeline(args.file)
        print(f"{args.file}: pipeline {spec.name}, {len(spec.steps)} steps: ok")
    elif args.action == "apply":
        spec = absolute(load_pipeline(args.file), Path(args.file))
        applied = api(args).call("PUT", f"/api/pipelines/{spec.name}", spec.to_dict())
        for name in applied.get("deployed") or ():
            print(f"function {name} deployed")
        print(f"pipeline {spec.name} applied: triggers {', '.join(applied['triggers'])}")
        if applied["removed"]:
            print(f"removed: {', '.join(applied['removed'])}")
    elif args.action == "ls":
        for item in api(args).call("GET", "/api/pipelines")["pipelines"]:
            steps = " -> ".join(s["name"] for s in item["steps"])
            print(f"{item['name']:<20} {steps}")
    elif args.action == "show":
        raw = api(args).call("GET", f"/api/pipelines/{args.name}")
        print(
            json.dumps(raw, indent=2) if args.output == "json" else PipelineSpec.model_validate(raw).to_yaml(), end=""
        )
    else:  # delete
        removed = api(args).call("DELETE", f"/api/pipelines/{args.name}")
        print(f"pipeline {args.name} deleted: {', '.join(removed['removed']) or 'nothing else to remove'}")
    return 0
