"""``knflow models``: the model registry (list, show, register, alias, audit) and deployments on the gateway."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from infra.errors import InvalidRequest
from infra.namespaces import DEFAULT, scoped
from infra.settings import load_settings
from infra.store import open_store
from knflow.commands import add_namespace_options, platform_headers, with_namespace
from serving.formats import GENERATED_ROWS, TOLERANCE
from serving.registry import ModelCard, ModelRegistry

REGISTER_HELP = (
    "Register a model as the next version. An .onnx file is stored as it is. A scikit-learn estimator or Pipeline "
    "saved with joblib/pickle, an XGBoost model (.json/.ubj) or a LightGBM text model (.txt) is converted to ONNX "
    "(skl2onnx / onnxmltools) and refused unless ONNX Runtime's answers on the sample rows match the library's own "
    "predictions. Loading a joblib or pickle file runs code its author put in it: only register files you made."
)


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("ls", help="list models, or the versions of one").add_argument("name", nargs="?")
    show = sub.add_parser("show", help="print a model card as JSON")
    show.add_argument("name")
    show.add_argument("version", nargs="?", default="latest", help="number or alias (default: latest)")
    reg = sub.add_parser(
        "register",
        help="register a model file as the next version (ONNX, or scikit-learn / XGBoost / LightGBM converted to it)",
        description=REGISTER_HELP,
    )
    reg.add_argument("name")
    reg.add_argument("file", type=Path, help="model.onnx | model.joblib / .pkl | xgboost .json / .ubj | lightgbm .txt")
    reg.add_argument(
        "--sample",
        type=Path,
        help="feature rows to check the conversion on: CSV with a header row (features only), NPZ (array x) or NPY; "
        f"without it, {GENERATED_ROWS} rows drawn from N(0, 1) over the model's feature count (recorded on the card)",
    )
    reg.add_argument(
        "--tolerance",
        type=float,
        default=TOLERANCE,
        help="max |ONNX - library| (scaled by magnitude above 1 for predictions; default %(default)s)",
    )
    alias = sub.add_parser("alias", help="point an alias (e.g. production) at a version")
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("version", type=int)
    alias.add_argument("--actor", default="cli")
    alias.add_argument("--reason", default="")
    sub.add_parser("audit", help="the audit trail of a model").add_argument("name")
    deploy = sub.add_parser("deploy", help="create a revision on the gateway")
    deploy.add_argument("name")
    deploy.add_argument("--version", default="latest")
    deploy.add_argument("--percent", type=int, default=None, help="canary share for the new revision")
    deploy.add_argument("--tag", default=None)
    deploy.add_argument("--max-batch", type=int, default=1)
    traffic = sub.add_parser("traffic", help="set the split: REVISION=PERCENT[:TAG] ...")
    traffic.add_argument("name")
    traffic.add_argument("targets", nargs="+")
    sub.add_parser("rollback", help="restore the previous traffic split").add_argument("name")
    sub.add_parser("status", help="revisions, traffic, replicas and counts on the gateway").add_argument("name")
    add_namespace_options(sub)


def _gateway_action(args: argparse.Namespace, base_url: str, headers: dict[str, str]) -> object:
    from serving.client import ServingClient

    client = ServingClient(base_url, headers=headers)
    if args.action == "deploy":
        batching = {"max_batch": args.max_batch} if args.max_batch > 1 else None
        return client.deploy(args.name, args.version, batching=batching, percent=args.percent, tag=args.tag)
    if args.action == "traffic":
        targets = []
        for item in args.targets:
            revision, _, rest = item.partition("=")
            percent, _, tag = rest.partition(":")
            targets.append({"revision": revision, "percent": int(percent), "tag": tag or None})
        return client.set_traffic(args.name, targets)
    if args.action == "rollback":
        return client.rollback(args.name)
    return client.describe(args.name)


def _register_file(registry: ModelRegistry, args: argparse.Namespace) -> None:
    from serving.modelfiles import read_model, read_sample

    model = read_model(args.file)
    if isinstance(model, bytes):
        if args.sample is not None:
            raise InvalidRequest("--sample is for models knflow converts; an ONNX file is registered as it is")
        card = registry.register(args.name, model)
    else:
        sample = read_sample(args.sample) if args.sample is not None else None
        card = registry.register_model(args.name, model, sample, tolerance=args.tolerance)
    print(f"{card.name} version {card.version}  sha256:{card.sha256}")
    if card.conversion:
        facts = card.conversion
        print(
            f"converted from {card.format} ({facts['model_class']}) with {facts['converter']}: "
            f"max |diff| {facts['max_abs_diff']:.3g} over {facts['rows_checked']} rows ({facts['sample']})"
        )


def labels_of(card: ModelCard) -> str:
    """What a version answers, for one line: ``regression``, or its classes (the label output's values)."""
    task, classes = card.task, list(card.classes)
    if task == "regression":
        return "regression"
    if not classes:
        return task
    shown = ",".join(str(c) for c in classes[:6]) + (f",... ({len(classes)} classes)" if len(classes) > 6 else "")
    return f"classes {shown}"


def run(args: argparse.Namespace) -> int:
    settings = with_namespace(load_settings(), args)
    if args.action in ("deploy", "traffic", "rollback", "status"):
        gateway = settings.url(settings.gateway_port)
        print(json.dumps(_gateway_action(args, gateway, platform_headers(settings)), indent=2))
        return 0
    registry = ModelRegistry(scoped(open_store(settings.artifacts), settings.namespace or DEFAULT))
    if args.action == "ls" and not args.name:
        for name in registry.models():
            print(name)
    elif args.action == "ls":
        aliases = registry.aliases(args.name)
        for card in registry.versions(args.name):
            tags = ",".join(a for a, v in aliases.items() if v == card.version)
            print(
                f"{card.version:>4}  {card.created[:19]}  {card.sha256[:12]}  {json.dumps(card.metrics)}  "
                f"{labels_of(card)}  {tags}".rstrip()
            )
    elif args.action == "show":
        print(registry.get(args.name, args.version).to_json().decode())
    elif args.action == "register":
        _register_file(registry, args)
    elif args.action == "alias":
        registry.set_alias(args.name, args.alias, args.version, actor=args.actor, reason=args.reason)
    elif args.action == "audit":
        for record in registry.audit(args.name):
            print(json.dumps(record))
    return 0
