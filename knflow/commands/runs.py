"""``knflow runs``: the runs of the running platform, through its knflow server (``knflow.Client``): list them by
dataset, experiment and status, show one, compare runs and trials, and read a run's function log lines."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
import yaml

from infra.settings import load_settings
from knflow.client import Client, Run
from knflow.commands import add_namespace_options, with_namespace
from knflow.output import FORMATS, cell, document, table

STATUSES = ("running", "succeeded", "failed")
FOLLOW_WAIT_S = 10.0
PAGE = 1000


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("ls", help="list runs, newest first")
    ls.add_argument("--dataset", help="only runs on this dataset")
    ls.add_argument("--experiment", help="only runs of this experiment (a run option; default: the dataset)")
    ls.add_argument("--status", choices=STATUSES, help="only runs in this state")
    show = sub.add_parser("show", help="one run: steps, trials, model, lineage")
    show.add_argument("run", help="the run id")
    compare = sub.add_parser("compare", help="runs or trials side by side; differing fields marked with *")
    compare.add_argument("items", nargs="+", metavar="RUN", help="a run id, or RUNID/TRIAL for one trial")
    logs = sub.add_parser("logs", help="the functions' log lines for a run")
    logs.add_argument("run", help="the run id")
    logs.add_argument("--step", help="only the lines of this step's function")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    for command in (ls, show, compare, logs):
        command.add_argument("-o", "--output", choices=FORMATS, default="table", help="table (default), json or yaml")
    add_namespace_options(sub)


def run(args: argparse.Namespace) -> int:
    client = Client.from_settings(with_namespace(load_settings(), args))
    if args.action == "ls":
        return list_runs(client, args)
    if args.action == "show":
        return show_run(client.run(args.run), args.output)
    if args.action == "compare":
        return compare_runs(client, args.items, args.output)
    return print_logs(client.run(args.run), args)


def list_runs(client: Client, args: argparse.Namespace) -> int:
    rows = client.runs(dataset=args.dataset, experiment=args.experiment, status=args.status)
    if args.output != "table":
        document({"runs": rows}, args.output)
        return 0
    header = ("RUN", "EXPERIMENT", "DATASET", "STATUS", "STEP", "STARTED", "DURATION", "MODEL")
    fields = ("runid", "experiment", "dataset", "status", "step")
    table(
        header,
        [[*(r.get(f) for f in fields), _when(r["started"]), _seconds(r["duration_s"]), r["model"]] for r in rows],
    )
    return 0


def show_run(run: Run, fmt: str) -> int:
    detail = run.detail()
    if fmt != "table":
        document(detail, fmt)
        return 0
    summary, model = detail["run"], detail.get("model")
    facts = [("run", summary["runid"]), ("experiment", summary.get("experiment")), ("dataset", summary["dataset"]),
             ("data", summary["key"]), ("pipeline", detail.get("pipeline")), ("status", summary["status"]),
             ("step", summary["step"]), ("started", _when(summary["started"])),
             ("duration", _seconds(summary["duration_s"]))]  # fmt: skip
    if detail.get("reason"):
        facts.append(("reason", detail["reason"]))
    if model:
        facts += [("model", f"{model['name']} v{model['version']}"), ("sha256", _short(model.get("sha256")))]
        facts += [(f"metrics.{k}", v) for k, v in (model.get("metrics") or {}).items()]
        facts += [(f"lineage.{k}", v) for k, v in (model.get("lineage") or {}).items()]
    table(("FIELD", "VALUE"), facts)
    steps = [[s["step"], s["status"], _when(s["started"]), _seconds(s["duration_s"])] for s in detail["steps"]]
    _section(("STEP", "STATUS", "STARTED", "DURATION"), steps)
    trials = [[t["trial"], t["status"], t.get("value"), _params(t.get("params"))] for t in detail["trials"]]
    _section(("TRIAL", "STATUS", "VALUE", "PARAMS"), trials)
    return 0


def compare_runs(client: Client, items: list[str], fmt: str) -> int:
    body = client.compare(*items)
    if fmt != "table":
        document(body, fmt)
        return 0
    columns, differs = body["items"], set(body["differs"])
    rows = [
        ["", field, *(cell(c.get(field)) for c in columns)] for field in ("experiment", "dataset", "status", "trials")
    ]
    rows.append(["", "model", *(_model(c.get("model")) for c in columns)])
    for section in ("params", "metrics", "data"):
        for name in sorted({n for c in columns for n in c[section]}):
            key = f"{section}.{name}"
            rows.append(["*" if key in differs else "", key, *(_short(c[section].get(name)) for c in columns)])
    table(("", "FIELD", *(c["id"] for c in columns)), rows)
    return 0


def print_logs(run: Run, args: argparse.Namespace) -> int:
    after: str | None = None
    while True:
        lines, after = run.logs(step=args.step, after=after, wait=FOLLOW_WAIT_S if args.follow else 0.0, limit=PAGE)
        for line in lines:
            _log_line(line, args.output)
        sys.stdout.flush()
        if not args.follow and len(lines) < PAGE:
            return 0


def _log_line(line: dict[str, Any], fmt: str) -> None:
    """One record: JSON Lines, a YAML document, or time, step, level and message (tab-separated when piped)."""
    if fmt == "json":
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
    elif fmt == "yaml":
        sys.stdout.write("---\n" + yaml.safe_dump(line, sort_keys=False, allow_unicode=True))
    else:
        fields = [cell(line.get(k)) for k in ("time", "step", "level", "message")]
        sep = "  " if sys.stdout.isatty() else "\t"
        sys.stdout.write(sep.join(fields) + "\n" + (line.get("exc") or "") + ("\n" if line.get("exc") else ""))


def _section(header: tuple[str, ...], rows: list[list[Any]]) -> None:
    if rows:
        sys.stdout.write("\n")
        table(header, rows)


def _short(value: Any) -> Any:
    """A sha256 as tables show it (its first 12 digits, as git shows commits); anything else as it is."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    return value


def _when(iso: str | None) -> str:
    return (iso or "").replace("T", " ")[:19]


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}s"


def _params(params: Any) -> str:
    if not isinstance(params, dict):
        return ""
    return " ".join(f"{k}={cell(v)}" for k, v in params.items())


def _model(model: dict[str, Any] | None) -> str:
    return f"{model['name']} v{model['version']}" if model else ""
