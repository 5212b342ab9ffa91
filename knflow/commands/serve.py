"""``knflow serve``: run the inference gateway (KServe V2 + control API) in the foreground."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="override settings.gateway_port")


def run(args: argparse.Namespace) -> int:
    from infra.serve import run_server, serve_until_signalled
    from infra.settings import authority, load_settings
    from infra.store import open_store
    from serving.gateway import Gateway

    settings = load_settings()

    async def serve() -> bool:
        gateway = Gateway(settings, open_store(settings.artifacts))

        async def start() -> None:
            port = await gateway.start(args.port)
            grpc = authority(settings.client_host, gateway.grpc_port)
            print(f"knflow gateway on {settings.url(port)}, V2 gRPC on {grpc}", flush=True)

        return await serve_until_signalled(start, gateway.stop, name="gateway")

    return run_server(serve, settings, service="gateway", dump_stacks=True)
