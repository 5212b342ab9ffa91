"""``knflow up``: run the embedded platform (broker, functions, gateway, dashboard) until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading

from infra.settings import load_settings
from knflow.platform import Platform

HELP = "run the platform (broker, function runner, inference gateway, dashboard) until Ctrl-C"


def register(parser: argparse.ArgumentParser) -> None:
    del parser  # no options: everything comes from the settings (see `knflow config`)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Platform.start(settings) as platform:
        for name in platform.processes:
            print(f"{name:<10} {platform.url(name)}   (log: {platform.log_dir}/{name}.log)")
        print(f"artifacts  {settings.artifacts.url}\nevents     {settings.broker.url}")
        print(
            "submit runs with `knflow run FILE` or knflow.Client(" + repr(platform.url("dashboard")) + "); objects put "
            "under raw/<dataset>/ in the artifact store start runs too; Ctrl-C stops",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0
