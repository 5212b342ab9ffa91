"""``knflow services``: run a local Kafka-protocol broker and S3 server for the "real services" setup."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from infra.localservices import start_seaweedfs, start_tansu
from infra.settings import load_settings


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-kafka", action="store_true", help="do not start the Kafka broker")
    parser.add_argument("--no-s3", action="store_true", help="do not start the S3 server")


def run(args: argparse.Namespace) -> int:
    base = Path(load_settings().data_dir) / "services"
    running = []
    try:
        if not args.no_kafka:
            kafka = start_tansu(base / "tansu")
            running.append(kafka)
            print(f"export KNFLOW_BROKER=kafka://{kafka.url}")
        if not args.no_s3:
            s3 = start_seaweedfs(base / "seaweedfs")
            running.append(s3)
            print(f"export KNFLOW_ARTIFACTS='s3://knflow?endpoint={s3.url}&create=true'")
        print("# services running; Ctrl-C stops them", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for service in running:
            service.stop()
    return 0
