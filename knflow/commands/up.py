"""``knflow up``: run the embedded platform (broker, functions, gateway, dashboard) until Ctrl-C, restarting a component
that exits; it stops, with exit code 1, when one keeps failing."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from infra.auth import admin_token_path, client_token
from infra.logs import configure_logging
from infra.settings import load_settings
from knflow.platform import Platform


def register(parser: argparse.ArgumentParser) -> None:
    del parser  # no options: everything comes from the settings (see `knflow config`)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)  # the supervisor's reports go to stderr
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Platform.start(settings, timeout=settings.platform.start_timeout_s) as platform:
        supervisor = platform.supervise(on_failure=lambda _: stop.set())
        for name in platform.processes:
            print(f"{name:<10} {platform.url(name)}   (log: {platform.log_dir}/{name}.log)")
        print(f"artifacts  {settings.artifacts.url}\nevents     {settings.broker.url}")
        token = client_token(settings)
        if token:  # the machine user's admin token: the link signs the browser in (the CLI reads the file itself)
            print(f"sign in    {platform.url('dashboard')}/?token={token}   (token in {admin_token_path(settings)})")
        print(
            "submit runs with `knflow run FILE` or knflow.Client(" + repr(platform.url("dashboard")) + "); objects put "
            "under raw/<dataset>/ in the artifact store start runs too; Ctrl-C stops",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    if supervisor.failure:
        print(f"knflow up: stopped: {supervisor.failure}", file=sys.stderr)
        return 1
    return 0
