"""The child process that runs a user's training entrypoint: ``python -m functions.usertrain.child JOBDIR``.

It reads ``JOBDIR/job.json`` and ``JOBDIR/data.npz``, imports the entrypoint, calls it with a ``TrainContext`` whose
reporter talks to the train step over the channel, turns what it returns into ``JOBDIR/model.onnx`` (and the model's
own answers on the test split, ``JOBDIR/reference.npy``), and says ``result`` or ``error`` before it exits. What the
user's code prints goes to the train step's log of this training.

Started by PyTorch's elastic agent as one of several ranks (``RANK``, ``WORLD_SIZE`` in its environment), it joins
the process group before calling the entrypoint; rank 0 alone talks to the train step and exports the model, and a
report's answer reaches every rank.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import traceback
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from functions.usertrain.channel import ChildChannel, follow_parent
from functions.usertrain.context import Split, TrainContext, check_metrics

JOB, DATA = "job.json", "data.npz"
CHECKPOINT_IN, CHECKPOINT_OUT = "checkpoint.in", "checkpoint.out"
SPLITS = ("train", "val", "test")


class ChannelReporter:
    """The Reporter of a training run by knflow: every call is answered by the train step. With several ranks only
    rank 0 has the channel: its reports and checkpoints are kept, and its stop answer is broadcast to every rank
    (``report`` is then a collective: every rank calls it once per epoch)."""

    def __init__(self, channel: ChildChannel | None, jobdir: Path, world: Any = None) -> None:
        self.channel, self.jobdir, self.world = channel, jobdir, world
        self._lock = threading.Lock()  # an entrypoint may report from threads; answers come back in order

    def report(self, epoch: int, **metrics: float) -> bool:
        values = check_metrics(epoch, metrics)
        stop = False
        if self.channel is not None:
            with self._lock:
                stop = bool(self.channel.ask({"op": "report", "epoch": int(epoch), "metrics": values})["stop"])
        return self.world.agree(stop) if self.world is not None else stop

    def save_checkpoint(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"save_checkpoint takes bytes (torch.save into a BytesIO), got {type(data).__name__}")
        if self.channel is None:
            return  # rank 0's checkpoint is the one kept
        with self._lock:
            staging = self.jobdir / (CHECKPOINT_OUT + ".tmp")
            staging.write_bytes(bytes(data))
            staging.replace(self.jobdir / CHECKPOINT_OUT)
            self.channel.ask({"op": "checkpoint"})

    def load_checkpoint(self) -> bytes | None:
        for name in (CHECKPOINT_OUT, CHECKPOINT_IN):  # the latest of this process, else the one it started from
            path = self.jobdir / name
            if path.exists():
                return path.read_bytes()
        return None


def main(argv: list[str]) -> int:
    """Run one entrypoint; the exit status only matters when no ``result`` or ``error`` was said."""
    follow_parent()
    jobdir = Path(argv[1]).resolve()
    job = json.loads((jobdir / JOB).read_text())
    world = _join(int(job.get("gpus_per_worker", 0)))
    channel = ChildChannel.from_env() if world is None or world.leader else None
    status = 1
    try:
        status = _run(job, jobdir, channel, world)
    finally:
        if world is not None:
            world.leave(clean=status == 0)
    return status


def _run(job: dict[str, Any], jobdir: Path, channel: ChildChannel | None, world: Any) -> int:
    try:
        function = load_entrypoint(job["entrypoint"], job.get("code_dir"))
    except Exception as exc:
        return _fail(channel, "import", exc)
    ctx = build_context(job, jobdir, ChannelReporter(channel, jobdir, world), world)
    try:
        returned = function(ctx)
    except BaseException as exc:  # the user's code failed in any way at all: say so, then exit
        return _fail(channel, "raised", exc)
    if channel is None:
        return 0  # rank 0 exports the model
    from functions.usertrain.export import NotAModel, export

    try:
        facts = export(returned, ctx, jobdir)
    except NotAModel as exc:
        return _fail(channel, "returned", exc)
    except Exception as exc:
        return _fail(channel, "export", exc)
    channel.send({"op": "result", **facts})
    return 0


def _join(gpus_per_worker: int) -> Any:
    """The process group of a training with several workers (None: one process, PyTorch not needed)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from functions.ml.world import World

    world = World.from_env(gpus_per_worker)
    world.join()
    return world


def load_entrypoint(entrypoint: str, code_dir: str | None) -> Any:
    """The callable ``module:function`` names, with ``code_dir`` first on ``sys.path``."""
    if code_dir:
        sys.path.insert(0, code_dir)
    module_name, _, attribute = entrypoint.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{entrypoint} is a {type(target).__name__}, not a function")
    return target


def build_context(job: dict[str, Any], jobdir: Path, reporter: Any, world: Any = None) -> TrainContext:
    """The TrainContext of a job: splits from data.npz, the rest from job.json, rank and device from the world."""
    with np.load(jobdir / DATA) as arrays:
        splits = {s: Split(arrays[f"x_{s}"], arrays[f"y_{s}"]) for s in SPLITS}
    rank, size = (world.rank, world.size) if world is not None else (0, 1)
    workdir = jobdir / ("work" if rank == 0 else f"work-{rank}")
    workdir.mkdir(exist_ok=True)
    return TrainContext(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        feature_names=tuple(job["feature_names"]),
        num_classes=int(job["num_classes"]),
        params=MappingProxyType(dict(job["params"])),
        seed=int(job["seed"]),
        device=str(world.device) if world is not None else job["device"],
        reporter=reporter,
        mean=np.asarray(job["mean"], np.float32),
        std=np.asarray(job["std"], np.float32),
        kind=job["kind"],
        task=job["task"],
        rank=rank,
        world_size=size,
        workdir=workdir,
    )


def _fail(channel: ChildChannel | None, stage: str, exc: BaseException) -> int:
    """Print the traceback to the log, tell the train step (rank 0 does) the stage, the error and where in the user's
    code."""
    traceback.print_exception(exc)
    if channel is None:
        return 1
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "functions/usertrain/" not in f.filename.replace(os.sep, "/")]
    where = f"{Path(user[-1].filename).name} line {user[-1].lineno}" if user else ""
    message = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
    channel.send({"op": "error", "stage": stage, "type": type(exc).__name__, "message": message, "where": where})
    return 1


if __name__ == "__main__":
    status = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # threads the user's code left running do not keep the child alive
