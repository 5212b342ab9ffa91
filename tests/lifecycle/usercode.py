"""Users' training code for the tests of ``train.entrypoint``, as source text the tests write into a temporary
directory outside knflow's package (it is imported only by the child process that runs it)."""

from __future__ import annotations

import textwrap
from pathlib import Path

#: a plain PyTorch network; prints its parameters (the tests read them back from train.log)
TORCH = '''
import io
import json

import torch
from torch import nn


def net(ctx, hidden):
    width = 1
    for size in ctx.input_shape:
        width *= size
    return nn.Sequential(nn.Flatten(), nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, ctx.num_classes))


def fit(ctx):
    print("PARAMS " + json.dumps(dict(ctx.params), sort_keys=True), flush=True)
    torch.manual_seed(ctx.seed)
    model = net(ctx, int(ctx.params.get("hidden", 32)))
    opt = torch.optim.Adam(model.parameters(), lr=float(ctx.params.get("lr", 0.01)))
    x, y = torch.tensor(ctx.normalize(ctx.train.x)), torch.tensor(ctx.train.y)
    x_val, y_val = torch.tensor(ctx.normalize(ctx.val.x)), torch.tensor(ctx.val.y)
    for epoch in range(1, int(ctx.params.get("epochs", 3)) + 1):
        model.train()
        for batch in torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
        if ctx.reporter.report(epoch, val_accuracy=accuracy):
            print(f"STOPPED AT {epoch}", flush=True)
            break
    return model


def poor(ctx):
    """Reports a poor objective every epoch until knflow says stop."""
    for epoch in range(1, 50):
        if ctx.reporter.report(epoch, val_accuracy=0.1):
            print(f"STOPPED AT {epoch}", flush=True)
            break
    return net(ctx, 8)


def resumable(ctx):
    """Checkpoints every epoch; the first delivery dies after epoch 2, the next resumes after it."""
    saved = ctx.reporter.load_checkpoint()
    start = json.loads(saved)["epoch"] + 1 if saved else 1
    print(f"START {start}", flush=True)
    for epoch in range(start, 5):
        ctx.reporter.save_checkpoint(json.dumps({"epoch": epoch}).encode())
        ctx.reporter.report(epoch, val_accuracy=epoch / 10)
        if epoch == 2 and saved is None:
            raise RuntimeError("the worker went away")
    return net(ctx, 8)
'''

#: scikit-learn: the Pipeline of the exactness issue, and a cheap one the search algorithms tune
SKLEARN = """
import json

from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def boosted(ctx):
    trees = int(ctx.params.get("n_estimators", 20))
    model = make_pipeline(StandardScaler(), GradientBoostingClassifier(n_estimators=trees, random_state=ctx.seed))
    return model.fit(ctx.train.x.reshape(len(ctx.train.x), -1), ctx.train.y)  # images: one row of pixels each


def logistic(ctx):
    print("PARAMS " + json.dumps(dict(ctx.params), sort_keys=True), flush=True)
    model = LogisticRegression(C=float(ctx.params["C"]), max_iter=int(ctx.params.get("max_iter", 50)))
    model = make_pipeline(StandardScaler(), model).fit(ctx.train.x.reshape(len(ctx.train.x), -1), ctx.train.y)
    ctx.reporter.report(1, val_accuracy=model.score(ctx.val.x.reshape(len(ctx.val.x), -1), ctx.val.y))
    return model
"""

#: training code that goes wrong in each way the train step must survive
BROKEN = """
import os
import signal
import sys
import time


def raises(ctx):
    raise ValueError("the labels are not what I expected")


def not_a_model(ctx):
    return [1, 2, 3]


def kills_itself(ctx):
    print("going down", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def kills_its_process_group(ctx):
    os.killpg(0, signal.SIGKILL)


def exits(ctx):
    sys.exit(3)


def sleeps(ctx):
    time.sleep(600)


def environment(ctx):
    print("SEEN " + ",".join(sorted(k for k in os.environ if "SECRET" in k or k.startswith(("AWS_", "KNFLOW_S")))))
    print("ENV " + os.environ.get("MY_FUNCTION_ENV", "knflow's"), flush=True)
    raise RuntimeError("done looking")
"""


def write_code(directory: Path, **modules: str) -> Path:
    """Write ``name=source`` modules into ``directory``; → the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return directory


#: a user's data-parallel training: DistributedDataParallel over the process group knflow's harness joined, each rank
#: on its shard; prints its rank (the tests read train.log)
DDP = """
import torch
import torch.distributed as dist
from torch import nn


def fit(ctx):
    print(f"RANK {ctx.rank} OF {ctx.world_size} GROUP {dist.is_initialized()} ON {ctx.device}", flush=True)
    torch.manual_seed(ctx.seed)
    width = 1
    for size in ctx.input_shape:
        width *= size
    net = nn.Sequential(nn.Flatten(), nn.Linear(width, 48), nn.ReLU(), nn.Linear(48, ctx.num_classes))
    model = nn.parallel.DistributedDataParallel(net) if ctx.world_size > 1 else net
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.tensor(ctx.normalize(ctx.train.x)), torch.tensor(ctx.train.y)
    x_val, y_val = torch.tensor(ctx.normalize(ctx.val.x)), torch.tensor(ctx.val.y)
    for epoch in range(1, int(ctx.params.get("epochs", 3)) + 1):
        model.train()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))[ctx.rank :: ctx.world_size]
        for batch in order.split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            accuracy = (net(x_val).argmax(1) == y_val).float().mean().item()
        if ctx.reporter.report(epoch, val_accuracy=accuracy):
            break
    return model
"""
