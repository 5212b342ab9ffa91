"""``knflow serve``: run the inference gateway (KServe V2 + control API) in the foreground."""

from __future__ import annotations

import argparse

HELP = "run the inference gateway (V2 REST, /v1 control API, /metrics on gateway_port; V2 gRPC on grpc_port)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="override settings.gateway_port")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    from infra.aio import run as run_loop
    from infra.logs import configure_logging
    from infra.settings import load_settings
    from infra.store import open_store
    from serving.gateway import Gateway

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)

    async def serve() -> None:
        gateway = Gateway(settings, open_store(settings.artifacts))
        port = await gateway.start(args.port)
        print(
            f"knflow gateway on http://{settings.host}:{port}, V2 gRPC on {settings.host}:{gateway.grpc_port}",
            flush=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await gateway.stop()

    with contextlib.suppress(KeyboardInterrupt):
        run_loop(serve())
    return 0
