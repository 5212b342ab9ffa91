"""One training measured two ways on the same features: through knflow's train step (``functions.train.run``, in
this process for one worker, under PyTorch's elastic agent for several) and as a plain PyTorch (DDP) loop written
here: the same network, optimizer, batches per step and per-epoch validation, without knflow around it.

Both are timed the same way: the seconds between the ends of two consecutive epochs (knflow's include its metrics
and checkpoint writes to the store, which are part of what it does); samples/s = training rows / that time, epoch 1
(warm-up) left out. Used by ``bench/training/run.py`` (CPU, gloo) and ``bench/gpu/check.py`` (CUDA, NCCL).
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import logging
import math
import os
import re
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

log = logging.getLogger("bench.training")
EPOCH_LINE = re.compile(r"epoch (\d+): ([0-9.]+) s")


@dataclass(frozen=True)
class Config:
    """What both trainings run: the digits CNN over ``repeat`` jittered copies of the digits."""

    repeat: int = 4
    epochs: int = 6
    batch_size: int = 64
    hidden: int = 128
    channels: int = 16
    lr: float = 0.003
    seed: int = 0
    gpus_per_worker: int = 0

    def params(self, workers: int) -> dict[str, Any]:
        """knflow's train options for this configuration."""
        return {
            "model": "cnn", "epochs": self.epochs, "batch_size": self.batch_size, "hidden": self.hidden,
            "channels": self.channels, "lr": self.lr, "seed": self.seed, "dropout": 0.3, "weight_decay": 1e-4,
            "workers": workers, "gpus_per_worker": self.gpus_per_worker if workers > 1 else 0,
        }  # fmt: skip


@dataclass(frozen=True)
class Measured:
    """Per-epoch samples/s of one training (epoch 1 left out), its last validation accuracy, and its wall time
    (knflow's: the whole step, workers' start and ONNX export included)."""

    samples_per_s: float
    epoch_s: list[float]
    rows: int
    accuracy: float
    wall_s: float


def prepare(store: Any, config: Config) -> dict[str, Any]:
    """Ingest and featurize ``repeat`` copies of the digits (pixels jittered by ±1) as IDX images; → features data."""
    from sklearn.datasets import load_digits

    from eventing.events import new_event
    from functions import featurize, ingest
    from functions.contract import DATA_ARRIVED
    from functions.ml.readers import write_idx
    from infra.settings import load_settings

    digits = load_digits()
    rng = np.random.default_rng(config.seed)
    images = np.concatenate([digits.images + rng.integers(-1, 2, digits.images.shape) for _ in range(config.repeat)])
    labels = np.tile(digits.target, config.repeat)
    store.put("raw/bench/train-labels-idx1-ubyte.gz", gzip.compress(write_idx(labels.astype(np.uint8))))
    key = "raw/bench/train-images-idx3-ubyte.gz"
    store.put(key, gzip.compress(write_idx(np.clip(images, 0, 16).astype(np.uint8))))
    ctx = SimpleNamespace(store=store, settings=load_settings(env={}), log=log, emitted=[])
    event = new_event(DATA_ARRIVED, "/bench", {"bucket": "knflow", "key": key, "size": store.stat(key).size})
    return featurize.handle(ingest.handle(event, ctx), ctx).get_data()


def run_knflow(store: Any, features: dict[str, Any], config: Config, workers: int, settings: Any) -> Measured:
    """Train through knflow's train step; several workers log each epoch's time in train.log, one is timed here."""
    import functions.train as step

    runid = f"bench-{time.time_ns()}"
    job = step.Job(runid, None, features, config.params(workers), None, None)
    ends: list[float] = []
    real_hook = step.epoch_hook

    def timed_hook(store: Any, job: Any, logger: Any) -> Any:
        hook = real_hook(store, job, logger)
        return lambda history: (ends.append(time.perf_counter()), hook(history))[1]

    step.epoch_hook = timed_hook
    started = time.perf_counter()
    try:
        result = step.run(store, job, None, log, settings)
    finally:
        step.epoch_hook = real_hook
    wall = time.perf_counter() - started
    if workers > 1:
        text = store.get(job.prefix + "train.log").decode(errors="replace")
        seconds = [float(m[2]) for m in EPOCH_LINE.finditer(text)][1:]
    else:
        seconds = [b - a for a, b in itertools.pairwise(ends)]
    rows = _train_rows(store, features)
    accuracy = float(result["metrics"]["val_accuracy"])
    return Measured(rows / statistics.median(seconds), seconds, rows, accuracy, wall)


def _train_rows(store: Any, features: dict[str, Any]) -> int:
    from functions.ml.features import read_features

    splits, _, _ = read_features(store, features["prefix"])
    return len(splits.y["train"])


def _plain_net(shape: tuple[int, int], classes: int, config: Config) -> nn.Module:
    """The digits CNN as a user writes it (the layers of knflow's, 3x3 padded convolutions for 8x8 images)."""
    c = config.channels
    flat = int(c * 2.5) * (shape[0] // 4) * (shape[1] // 4)
    return nn.Sequential(
        nn.Conv2d(1, c, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c, int(c * 2.5), 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, config.hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(config.hidden, classes),
    )  # fmt: skip


def _plain_rank(rank: int, size: int, port: int, data: str, config: Config, out: str) -> None:
    """One rank of the plain loop: DDP over DistributedSampler shards, validation each epoch, rank 0 timing."""
    threads = max(1, min(4, (os.cpu_count() or 1) // size))
    torch.set_num_threads(threads)
    cuda = config.gpus_per_worker > 0
    dev = torch.device("cuda", rank * config.gpus_per_worker) if cuda else torch.device("cpu")
    if size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        if cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=size)
    arrays = np.load(data)
    x, y = (torch.as_tensor(arrays[k], device=dev) for k in ("x_train", "y_train"))
    x_val, y_val = (torch.as_tensor(arrays[k], device=dev) for k in ("x_val", "y_val"))
    torch.manual_seed(config.seed)
    net = _plain_net(tuple(x.shape[2:]), int(arrays["classes"]), config).to(dev)
    model = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if cuda else None) if size > 1 else net
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=1e-4)
    sampler = torch.utils.data.DistributedSampler(range(len(y)), size, rank, shuffle=True, seed=config.seed)
    per_rank = -(-config.batch_size // size)
    ends = []
    for epoch in range(1, config.epochs + 1):
        for group in opt.param_groups:
            group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / config.epochs))
        _plain_epoch(model, opt, sampler, epoch, x, y, per_rank)
        accuracy = _plain_accuracy(net, x_val, y_val)
        if cuda:
            torch.cuda.synchronize(dev)
        ends.append(time.perf_counter())
    if rank == 0:
        Path(out).write_text(json.dumps({"ends": ends, "val_accuracy": accuracy}))
    if size > 1:
        dist.destroy_process_group()


def _plain_epoch(model: nn.Module, opt: Any, sampler: Any, epoch: int, x: Any, y: Any, per_rank: int) -> None:
    model.train()
    sampler.set_epoch(epoch)
    order = torch.tensor(list(sampler), device=x.device)
    for batch in order.split(per_rank):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()


@torch.no_grad()
def _plain_accuracy(net: nn.Module, x: Any, y: Any) -> float:
    net.eval()
    return (net(x).argmax(1) == y).float().mean().item()


def run_plain(store: Any, features: dict[str, Any], config: Config, workers: int) -> Measured:
    """The plain loop: in this process for one worker, ``torch.multiprocessing.spawn`` ranks (env:// rendezvous)
    for several."""
    from functions.ml.features import read_features

    splits, transform, manifest = read_features(store, features["prefix"])
    with tempfile.TemporaryDirectory(prefix="knflow-bench-") as tmp:
        data, out = Path(tmp) / "data.npz", Path(tmp) / "out.json"
        normalized = {f"x_{s}": splits.inputs(transform, s).astype(np.float32) for s in ("train", "val")}
        mean, std = float(np.mean(normalized["x_train"])), float(np.std(normalized["x_train"]))
        arrays = {k: ((v - mean) / std)[:, None] for k, v in normalized.items()}
        np.savez(data, **arrays, y_train=splits.y["train"], y_val=splits.y["val"], classes=manifest["num_classes"])
        started = time.perf_counter()
        args = (workers, _free_port(), str(data), config, str(out))
        if workers == 1:
            _plain_rank(0, *args)
        else:
            mp.spawn(_plain_rank, args=args, nprocs=workers, join=True)
        wall = time.perf_counter() - started
        report = json.loads(out.read_text())
    ends = report["ends"]
    seconds = [b - a for a, b in itertools.pairwise(ends)]
    rows = len(splits.y["train"])
    return Measured(rows / statistics.median(seconds), seconds, rows, report["val_accuracy"], wall)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_dict(measured: Measured) -> dict[str, Any]:
    """The figures of a measurement, rounded for printing and JSON."""
    out = dataclasses.asdict(measured)
    out["epoch_s"] = [round(s, 4) for s in measured.epoch_s]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}
