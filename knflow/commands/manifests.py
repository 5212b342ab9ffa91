"""``knflow manifests``: print (or write) the Knative resources that run knflow in a cluster, validated."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from functions.runtime.pipeline import load_pipeline
from infra.errors import KnflowError
from infra.settings import load_settings
from knflow.commands.pipeline import absolute
from knflow.control import PipelineControl
from knflow.deployment import Deployer
from knflow.manifests import ManifestOptions, read_func_yaml, render, secret_note, to_yaml
from knflow.schedules import Schedule, ScheduleControl


def add_render_options(parser: argparse.ArgumentParser) -> None:
    """The options ``manifests`` and ``apply`` share."""
    parser.add_argument("--func-yaml", default="func.yaml", help="the func.yaml naming the image (default ./func.yaml)")
    parser.add_argument("--namespace", "-n", default=None, help="namespace (default: func.yaml deploy.namespace)")
    parser.add_argument("--broker", default="knflow", help="Broker name (default knflow)")
    parser.add_argument("--image", default=None, help="image (default: func.yaml image)")
    parser.add_argument("--partitions", type=int, default=10, help="Kafka topic partitions")
    parser.add_argument("--replication-factor", type=int, default=3, help="Kafka topic replication factor")
    parser.add_argument("--gpu", action="store_true", help="request nvidia.com/gpu: 1 for train and every model")
    parser.add_argument(
        "--gpu-node-selector", action="append", default=[], metavar="KEY=VALUE", help="node selector for GPU pods"
    )
    parser.add_argument("--no-gpu-toleration", action="store_true", help="no nvidia.com/gpu NoSchedule toleration")
    parser.add_argument(
        "--pipeline", action="append", default=[], metavar="FILE",
        help="a pipeline spec to render (repeatable; default: the shipped lifecycle)",
    )  # fmt: skip
    parser.add_argument(
        "--minio-topic", default=None, metavar="TOPIC",
        help="MinIO's Kafka notification topic: render a KafkaSource that starts runs from MinIO's notifications",
    )  # fmt: skip
    parser.add_argument(
        "--minio-kafka", default=None, metavar="HOST:PORT[,...]",
        help="the bootstrap servers of MinIO's Kafka (default: the Broker's, from func.yaml's KNFLOW_BROKER)",
    )  # fmt: skip
    parser.add_argument(
        "--applied", action="store_true", help="every pipeline applied to the configured platform's artifact store"
    )


def render_from(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """The resources for the shared options, and a YAML comment on what was left out: the pipelines named
    (function directories relative to their spec file) or applied, user functions with the image recorded
    when they were deployed, the stored schedules a cluster can run."""
    pipelines = [absolute(load_pipeline(f), Path(f)) for f in args.pipeline]
    if args.applied:
        control = PipelineControl(load_settings())
        pipelines += [control.get(name) for name in control.names() or ["lifecycle"]]
    images = {name: d.image for name, d in Deployer(load_settings()).list().items() if d.image}
    schedules, note = cluster_schedules()
    return render(args.func_yaml, options_from(args), pipelines or None, images, schedules), note


def options_from(args: argparse.Namespace) -> ManifestOptions:
    """``ManifestOptions`` from the parsed shared options."""
    selector = tuple(tuple(item.split("=", 1)) for item in args.gpu_node_selector if "=" in item)
    return ManifestOptions(
        namespace=args.namespace,
        broker=args.broker,
        image=args.image,
        partitions=args.partitions,
        replication_factor=args.replication_factor,
        gpu=args.gpu,
        gpu_node_selector=selector,
        gpu_toleration=not args.no_gpu_toleration,
        minio_topic=args.minio_topic,
        minio_kafka=tuple(s for s in (args.minio_kafka or "").split(",") if s),
    )


def register(parser: argparse.ArgumentParser) -> None:
    add_render_options(parser)
    parser.add_argument("--output-dir", "-o", default=None, help="write one file per resource here instead")


def cluster_schedules() -> tuple[list[Schedule], str]:
    """The schedules stored in the configured artifact store that a cluster can run, and a YAML comment naming the
    ones it cannot (seconds-level) or why none could be read."""
    try:
        stored = ScheduleControl(load_settings()).list()
    except (KnflowError, OSError) as exc:
        return [], f"# schedules: not rendered, the artifact store cannot be read ({exc})\n"
    local = [s.name for s in stored if s.seconds_level]
    note = f"# schedules with a seconds field run only locally, not rendered: {', '.join(local)}\n" if local else ""
    return [s for s in stored if not s.seconds_level], note


def run(args: argparse.Namespace) -> int:
    resources, schedule_note = render_from(args)
    func = read_func_yaml(args.func_yaml)
    note = secret_note(func, resources[0]["metadata"]["name"]) + schedule_note
    if not args.output_dir:
        print(to_yaml(resources, note), end="")
        return 0
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, resource in enumerate(resources):
        name = f"{i:02d}-{resource['kind'].lower()}-{resource['metadata']['name']}.yaml"
        (out / name).write_text(to_yaml([resource], note if i == 0 else ""))
    print(f"wrote {len(resources)} resources to {out}")
    return 0
