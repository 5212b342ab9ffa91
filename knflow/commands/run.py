"""``knflow run FILE``: submit FILE to the platform (the running one, else an embedded one it starts), follow its
run, probe the model."""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Any

import orjson

from infra.errors import KnflowError, NotFound
from infra.logs import configure_logging
from infra.settings import Settings, load_settings
from infra.store import open_store
from knflow.client import Client
from knflow.commands import add_namespace_option, with_namespace
from knflow.drive import Probe, held_out_categories, held_out_split, probe
from knflow.follow import SeenEvent
from knflow.outcome import RunOutcome
from knflow.platform import Platform


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="the data file (for IDX: the images file, labels beside it)")
    add_run_options(parser)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="dataset name (default: the file's stem)")
    parser.add_argument("--options", type=Path, help="run options JSON (label, train, tuning, deploy; see docs)")
    parser.add_argument("--experiment", help="the experiment the run belongs to (default: the dataset name)")
    parser.add_argument("--pipeline", default="lifecycle", help="the pipeline the run takes (default lifecycle)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the run (default 900)")
    parser.add_argument("--keep", action="store_true", help="leave a platform this command started running afterwards")
    add_namespace_option(parser)


def run(args: argparse.Namespace) -> int:
    options = orjson.loads(args.options.read_bytes()) if args.options else None
    dataset = args.dataset or args.file.name.split(".")[0].split("-")[0]
    return execute(load_settings(), dataset, args.file, None, options, args)


def execute(
    settings: Settings, dataset: str, data: Any, filename: str | None, options: dict | None, args: argparse.Namespace
) -> int:
    """Submit ``data`` to the platform the settings name (starting one when none answers), follow, probe, summarize."""
    configure_logging("WARNING", "text")
    if args.experiment:
        options = {**(options or {}), "experiment": args.experiment}
    started = time.monotonic()
    settings = with_namespace(settings, args)
    client = Client.from_settings(settings, timeout=300.0)
    platform = None
    if client.alive():
        print(f"knflow: submitting to the platform at {client.url}")
    else:
        print(f"knflow: starting the platform (broker {settings.broker.url}, artifacts {settings.artifacts.url})")
        platform = Platform.start(settings)
        client = Client.from_settings(settings, timeout=300.0)  # with the admin token the platform has just made
        print(
            f"knflow: up in {time.monotonic() - started:.1f}s — broker {platform.url('broker')}, functions "
            f"{platform.url('functions')}, gateway {platform.url('gateway')}"
        )
    try:
        submitted = client.submit(data, dataset=dataset, options=options, pipeline=args.pipeline, filename=filename)
        print(f"knflow: submitted {submitted.key} as run {submitted.runid}; following it")
        t0 = time.monotonic()
        outcome = submitted.wait(args.timeout, on_event=lambda e: print(progress_line(e, t0), flush=True))
        result = _probe(client, settings, outcome)
        print_summary(outcome, result, client.url, time.monotonic() - started)
        if args.keep and platform is not None:
            print("knflow: platform left running; Ctrl-C stops it")
            _wait_forever()
        # A run that registered a model the deployment policy chose not to deploy has still succeeded.
        return 0 if (outcome.deployed or outcome.registered) and not outcome.failure else 1
    finally:
        if platform is not None:
            platform.stop()


def _probe(client: Client, settings: Settings, outcome: RunOutcome) -> Probe | None:
    """Send the held-out test rows to the model the run deployed or, when it registered a version kept out of
    production, to the production version the gateway serves under the same name; None when there is none to probe
    or its data is elsewhere."""
    model = outcome.model
    if model is None or (not outcome.deployed and outcome.failure):
        return None
    health = client.health()
    if health.get("artifacts") not in (None, settings.artifacts.url):
        print(f"knflow: the platform's artifacts are {health['artifacts']}, not {settings.artifacts.url}: no probe")
        return None
    try:
        store = open_store(settings.artifacts)
        x, y = held_out_split(store, outcome.features or {})
        c = held_out_categories(store, outcome.features or {})
    except KnflowError as exc:
        print(f"knflow: cannot read the held-out rows ({exc}): no probe")
        return None
    try:
        return probe(health["gateway"], model, x, y, c=c, registered=outcome.registered, headers=client.headers)
    except KnflowError as exc:
        if outcome.deployed:
            raise
        if not isinstance(exc, NotFound):  # else no production version yet; it may have other columns
            print(f"knflow: production {model} did not take this run's held-out rows ({exc}): no probe")
        return None


def _wait_forever() -> None:
    import threading

    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


def progress_line(event: SeenEvent, t0: float) -> str:
    """One line per event of the run."""
    data: dict[str, Any] = event.data if isinstance(event.data, dict) else {}
    short = event.type.removeprefix("dev.knflow.")
    detail = {
        "data.arrived": lambda: f"{data.get('key')} ({data.get('size')} bytes)",
        "dataset.ingested": lambda: (
            f"{data.get('dataset')}@{str(data.get('version'))[:12]} "
            f"{data.get('rows')} rows, {_labels(data)}, {data.get('kind')}"
        ),
        "features.ready": lambda: f"splits {data.get('rows')} → {event.extensions.get('mode')}",
        "trial.requested": lambda: f"{data.get('trial')} {_fmt_params(data.get('params'))}",
        "model.trained": lambda: (
            f"{data.get('trial') or 'model'} {data.get('status')} {_fmt_metrics(data.get('metrics'))}"
        ),
        "tune.completed": lambda: (
            f"best {data.get('best_trial')} "
            f"{(data.get('objective') or {}).get('metric')}="
            f"{(data.get('objective') or {}).get('value')} ({data.get('reason')})"
        ),
        "model.registered": lambda: f"{data.get('name')} v{data.get('version')} sha256:{str(data.get('sha256'))[:12]}",
        "model.deployed": lambda: f"{data.get('revision')} {data.get('traffic_percent')}% → {data.get('endpoint')}",
        "step.failed": lambda: f"{data.get('trigger')}: {data.get('status')} {data.get('error')}",
    }.get(short, lambda: "")()
    return f"  [{time.monotonic() - t0:6.1f}s] {short:<17} {detail}"


def _labels(data: dict[str, Any]) -> str:
    """What the data set's labels are: a regression target, or N classes (named when they are names)."""
    if data.get("task") == "regression":
        return "regression target"
    classes = [c for c in data.get("classes") or [] if isinstance(c, str)]
    named = f" ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})" if classes else ""
    return f"{data.get('num_classes')} classes{named}"


def _fmt_params(params: Any) -> str:
    if not isinstance(params, dict):
        return ""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _fmt_metrics(metrics: Any) -> str:
    if not isinstance(metrics, dict):
        return ""
    keys = ("val_accuracy", "test_accuracy", "val_rmse", "test_rmse", "test_r2", "epochs")
    return " ".join(
        f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}" for k in keys if k in metrics
    )


def print_summary(outcome: RunOutcome, result: Probe | None, dashboard: str, total_s: float) -> None:
    """The run's summary: id, per-step times, best params, accuracy, version, endpoint, cold start."""
    print("\nknflow run summary")
    print(f"  run id          {outcome.runid}")
    print(f"  data            {outcome.key}")
    for step, seconds in outcome.phases():
        print(f"  {step:<15} {seconds:6.2f} s")
    if outcome.tuning:
        print(
            f"  best params     {_fmt_params(outcome.tuning.get('params'))} "
            f"({outcome.tuning.get('best_trial')}, {len(outcome.tuning.get('trials') or [])} trials)"
        )
    registered = outcome.registered
    if registered:
        metrics = registered.get("metrics") or {}
        shown = ("test_rmse", "test_r2") if registered.get("task") == "regression" else ("test_accuracy",)
        for name in shown:
            value = metrics.get(name)
            shown_value = f"{value:.4f}" if isinstance(value, float) else "-"
            print(f"  {name.replace('_', ' '):<15} {shown_value}")
        print(f"  model           {registered.get('name')} version {registered.get('version')}")
    if outcome.failure:
        print(f"  FAILED          {outcome.failure_reason}")
    elif outcome.deployed:
        print(f"  endpoint        {outcome.deployed.get('endpoint')}")
    elif registered:
        why = outcome.declined or "no model.deployed event came"
        print(f"  deploy          not deployed: {why} (production stays as it was)")
    if result:
        if not outcome.deployed:
            print(f"  production      {outcome.model}, probed with this run's held-out rows")
        zero = "from zero replicas" if result.replicas_before == 0 else f"{result.replicas_before} replica(s) up"
        print(f"  cold start      {result.cold_start_s * 1e3:.0f} ms ({zero})")
        score = (
            f"rmse {result.rmse:.4g} over {result.requests} held-out test rows"
            if (outcome.registered or {}).get("task") == "regression"
            else f"{result.correct}/{result.requests} held-out test rows right ({result.accuracy:.4f})"
        )
        print(f"  inference       {score}; p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms")
    print(f"  dashboard       {dashboard}")
    print(f"  total           {total_s:.1f} s")
