"""Time the lifecycle steps in-process on digits: ingest → featurize → train, then a short tune (trials trained
for real) to tune.completed. Prints each step's wall time and the conditions. No peer: this checks the
"demo under 3 minutes on 2 cores" budget, not speed against another system.

    python bench/lifecycle/demo_time.py [--trials 6] [--parallel 2] [--epochs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field

import torch

from eventing.events import new_event
from functions import featurize, ingest, train, tune
from functions.contract import DATA_ARRIVED, MODEL_TRAINED, TRIAL_REQUESTED, TUNE_COMPLETED
from infra.settings import load_settings
from infra.store import open_store
from knflow.commands.demo import digits_npz


@dataclass
class Ctx:
    store: object
    settings: object
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("bench"))
    emitted: list = field(default_factory=list)

    async def emit(self, event) -> None:
        self.emitted.append(event)


def timed(label: str, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    print(f"{label:<34} {time.perf_counter() - start:7.2f} s")
    return out


async def tune_flow(ctx: Ctx, ready) -> tuple[int, dict]:
    """Drive tune and train to tune.completed, trials one at a time (as one train replica would)."""
    await tune.handle(ready, ctx)
    queue, trials, done = list(ctx.emitted), 0, None
    ctx.emitted.clear()
    while queue:
        event = queue.pop(0)
        if event.get_type() == TRIAL_REQUESTED:
            queue.append(await asyncio.to_thread(train.handle, event, ctx))
            trials += 1
        elif event.get_type() == MODEL_TRAINED:
            reply = await tune.handle(event, ctx)
            queue += ctx.emitted
            ctx.emitted.clear()
            if reply is not None and reply.get_type() == TUNE_COMPLETED:
                done = reply.get_data()
    return trials, done


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    print(f"conditions: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"python {platform.python_version()}, digits 1797 8x8 images (CNN), file store in a temp dir")  # fmt: skip
    ctx = Ctx(open_store(f"file://{tempfile.mkdtemp(prefix='knflow-bench-')}"), load_settings(env={}))
    ctx.store.put("raw/digits/d.npz", digits_npz())
    spec = {"algorithm": "tpe", "maxTrialCount": args.trials, "parallelTrialCount": args.parallel,
            "parameters": [{"name": "lr", "type": "double", "min": 3e-4, "max": 3e-2, "log": True},
                           {"name": "hidden", "type": "int", "min": 64, "max": 512}],
            "earlyStopping": {"minTrialsRequired": 2, "startStep": 2}}  # fmt: skip
    total = time.perf_counter()
    plain = new_event(DATA_ARRIVED, "/bench", {"key": "raw/digits/d.npz", "size": 0})
    ingested = timed("ingest (npz → dataset version)", ingest.handle, plain, ctx)
    ready = timed("featurize (split, normalize)", featurize.handle, ingested, ctx)
    trained = timed("train (15 epochs CNN, ONNX check)", train.handle, ready, ctx).get_data()
    metrics = trained["metrics"]
    print(f"  test accuracy {metrics['test_accuracy']:.4f}, onnx diff {metrics['onnx_max_abs_diff']:.2e}")
    tuned = new_event(DATA_ARRIVED, "/bench", {"key": "raw/digits/d.npz", "size": 0,
                      "options": {"tuning": spec, "train": {"epochs": args.epochs}}})  # fmt: skip
    ready = featurize.handle(ingest.handle(tuned, ctx), ctx)
    start = time.perf_counter()
    trials, done = asyncio.run(tune_flow(ctx, ready))
    print(f"{f'tune ({trials} trials, TPE, {args.epochs} epochs)':<34} {time.perf_counter() - start:7.2f} s")
    print(f"  best {done['best_trial']} val_accuracy {done['objective']['value']:.4f} "
          f"test_accuracy {done['model']['metrics']['test_accuracy']:.4f} ({done['reason']})")  # fmt: skip
    print(f"{'whole demo':<34} {time.perf_counter() - total:7.2f} s (budget 180 s)")


if __name__ == "__main__":
    main()
