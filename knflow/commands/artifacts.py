"""``knflow artifacts``: list, put, get and delete objects in the configured artifact store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infra.settings import load_settings
from infra.store import open_store


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("ls", help="list objects under a prefix")
    ls.add_argument("prefix", nargs="?", default="")
    put = sub.add_parser("put", help="upload a local file (or - for stdin) to KEY")
    put.add_argument("file")
    put.add_argument("key")
    get = sub.add_parser("get", help="download KEY to a file (or - for stdout), verified")
    get.add_argument("key")
    get.add_argument("file", nargs="?", default="-")
    rm = sub.add_parser("rm", help="delete KEY")
    rm.add_argument("key")


def run(args: argparse.Namespace) -> int:
    store = open_store(load_settings().artifacts)
    if args.action == "ls":
        for info in store.list(args.prefix):
            print(f"{info.size:>12}  {info.modified:%Y-%m-%d %H:%M:%S}  {info.sha256[:12] or '-':12}  {info.key}")
    elif args.action == "put":
        source = sys.stdin.buffer if args.file == "-" else Path(args.file)
        info = store.put(args.key, source)
        print(f"{info.key}  {info.size} bytes  sha256:{info.sha256}")
    elif args.action == "get":
        if args.file == "-":
            with store.open(args.key) as reader:
                for chunk in iter(lambda: reader.read(1 << 20), b""):
                    sys.stdout.buffer.write(chunk)
        else:
            store.download(args.key, Path(args.file))
    elif args.action == "rm":
        store.delete(args.key)
    return 0
