"""``knflow config``: show the resolved settings and where each came from."""

from __future__ import annotations

import argparse
import dataclasses
import json

from infra.settings import SECTIONS, load_settings


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print as JSON")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    flat: dict[str, object] = {
        "data_dir": str(settings.data_dir),
        "broker": settings.broker.url,
        "artifacts": settings.artifacts.url,
        "host": settings.host,
        "broker_port": settings.broker_port,
        "functions_port": settings.functions_port,
        "gateway_port": settings.gateway_port,
        "dashboard_port": settings.dashboard_port,
        "grpc_port": settings.grpc_port,
        "log_level": settings.log_level,
        "log_format": settings.log_format,
    }
    for section in SECTIONS:
        for field in dataclasses.fields(getattr(settings, section)):
            if field.repr:
                flat[f"{section}.{field.name}"] = getattr(getattr(settings, section), field.name)
    if args.json:
        print(json.dumps(flat, indent=2))
    else:
        width = max(map(len, flat))
        for key, value in flat.items():
            print(f"{key:<{width}}  {value}")
    return 0
