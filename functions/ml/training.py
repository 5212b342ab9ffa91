"""The training loop: seeded, per-epoch metrics, a checkpoint each epoch and resume from the last one; in one process
or as one rank of a data-parallel training (``World``: DistributedDataParallel, the split sharded by
DistributedSampler, rank 0 alone writing checkpoints and asking the epoch hook)."""

from __future__ import annotations

import dataclasses
import io
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DistributedSampler

from functions.ml.features import Splits, Transform
from functions.ml.metrics import CLASSIFICATION, REGRESSION, regression_scores
from functions.ml.models import Network, build_model
from functions.ml.params import TrainParams
from functions.ml.world import World

_GLOBAL_RNG = threading.Lock()


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch measured: the losses, and val accuracy (classification) or val rmse/mae/r² (regression)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float | None = None
    val_rmse: float | None = None
    val_mae: float | None = None
    val_r2: float | None = None

    def to_dict(self) -> dict[str, float]:
        """The measured fields (those of the other task left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class TrainResult:
    """The trained network and its history."""

    model: Network
    history: list[EpochMetrics] = field(default_factory=list)
    early_stopped: bool = False
    resumed_from: int = 0


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; the parameters cannot train this model."""


class Checkpointer(Protocol):
    """Where a training keeps its last epoch's state."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...


#: Called after each epoch with the history so far; returning True stops training early.
EpochHook = Callable[[list[EpochMetrics]], bool]


def device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(
    splits: Splits,
    transform: Transform,
    num_classes: int,
    params: TrainParams,
    *,
    task: str = CLASSIFICATION,
    checkpointer: Checkpointer | None = None,
    on_epoch: EpochHook | None = None,
    world: World | None = None,
) -> TrainResult:
    """Train a classifier (``num_classes`` outputs) or a regressor (one output, ``task`` regression); resumes from
    the checkpointer's state when it holds one for these params. In a ``world`` of several ranks every rank calls
    this; rank 0 alone saves checkpoints and calls ``on_epoch``, whose answer every rank follows."""
    world = world or World()
    torch.backends.cudnn.deterministic = True
    with _GLOBAL_RNG:  # initialization draws from torch's process-wide generator, which other trainings share
        torch.manual_seed(params.seed)
        model = _build(transform, num_classes, params, task).to(world.device)
    opt = _optimizer(model, params)
    state = checkpointer.load() if checkpointer else None
    result = _restored(model, opt, state)
    stepped = world.wrap(model)
    x_tr, y_tr = tensors(splits, transform, "train", world.device)
    x_val, y_val = tensors(splits, transform, "val", world.device)
    target = (transform.target_mean, transform.target_std)
    if task == REGRESSION:
        y_tr = (y_tr - target[0]) / target[1]  # the network learns the standardized target
    for epoch in range(len(result.history) + 1, params.epochs + 1):
        if result.early_stopped:
            break
        model.reseed(params.seed * 100_003 + epoch + world.rank * 1_000_003)  # dropout's masks, per epoch and rank
        train_loss = _epoch(stepped, opt, x_tr, y_tr, params, epoch, task, world)
        scores = evaluate(model, x_val, y_val, task, target)  # every rank: the same weights give the same scores
        result.history.append(EpochMetrics(epoch, train_loss, **{f"val_{k}": v for k, v in scores.items()}))
        stop = bool(on_epoch(result.history)) if on_epoch and world.leader else False
        result.early_stopped = world.agree(stop)
        if checkpointer and world.leader:
            checkpointer.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "history": [m.to_dict() for m in result.history],
                    "early_stopped": result.early_stopped,
                }
            )
    model.eval()
    return result


def restore(
    transform: Transform, num_classes: int, params: TrainParams, task: str, state: dict[str, Any]
) -> TrainResult:
    """The trained network a finished training's last checkpoint holds (a distributed training's outcome)."""
    model = _build(transform, num_classes, params, task).to(device())
    result = _restored(model, _optimizer(model, params), state)
    model.eval()
    return result


def finished(state: dict[str, Any] | None, params: TrainParams) -> bool:
    """Whether a checkpoint is of a training that ran all its epochs or stopped early."""
    if state is None:
        return False
    return bool(state.get("early_stopped") or state.get("diverged")) or len(state["history"]) >= params.epochs


def _build(transform: Transform, num_classes: int, params: TrainParams, task: str) -> Network:
    return build_model(
        params.model,
        transform,
        1 if task == REGRESSION else num_classes,
        hidden=params.hidden,
        layers=params.layers,
        dropout=params.dropout,
        channels=params.channels,
    )


def _restored(model: Network, opt: torch.optim.Optimizer, state: dict[str, Any] | None) -> TrainResult:
    """The model and optimizer with a checkpoint's state loaded, and its history (a fresh result without one)."""
    result = TrainResult(model=model)
    if state is None:
        return result
    if state.get("diverged"):  # a distributed training that diverged says so in its last checkpoint
        raise TrainingDiverged(state["diverged"])
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    result.history = [EpochMetrics(**m) for m in state["history"]]
    result.resumed_from = len(result.history)
    result.early_stopped = bool(state.get("early_stopped"))
    return result


def _optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    if params.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=params.lr, momentum=0.9, weight_decay=params.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def tensors(splits: Splits, transform: Transform, name: str, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's network inputs (categorical columns encoded) and its labels or targets, as tensors on ``dev``."""
    x = torch.as_tensor(splits.inputs(transform, name), dtype=torch.float32, device=dev)
    return x, torch.as_tensor(splits.y[name], device=dev)


def _loss(outputs: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    if task == REGRESSION:
        return nn.functional.mse_loss(outputs[:, 0], y.float())
    return nn.functional.cross_entropy(outputs, y)


def _epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    params: TrainParams,
    epoch: int,
    task: str,
    world: World,
) -> float:
    """One pass over the training split, each rank over its shard in batches of ``batch_size / workers`` (so the
    optimizer takes the steps one worker would); shuffling is seeded per epoch (dropout by ``train``), so a resumed
    run matches. Returns the mean loss over all ranks."""
    model.train()
    for group in opt.param_groups:  # cosine decay, a function of the epoch alone, so resuming needs no scheduler state
        group["lr"] = params.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / params.epochs))
    # one worker's order is torch.randperm seeded with seed * 7919 + epoch; several workers take strided shards of it
    sampler: DistributedSampler[int] = DistributedSampler(
        range(len(y)),  # type: ignore[arg-type]  # the sampler reads only the length of its dataset
        world.size,
        world.rank,
        shuffle=True,
        seed=params.seed * 7919,
    )
    sampler.set_epoch(epoch)
    order = torch.tensor(list(sampler), device=x.device)
    batch_size = -(-params.batch_size // world.size)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        opt.zero_grad(set_to_none=True)
        loss = _loss(model(x[batch]), y[batch], task)
        loss.backward()
        opt.step()
        total += loss.detach() * len(batch)  # no host sync per step
    loss_sum, seen = world.total([total.item(), float(len(order))])
    mean = loss_sum / seen
    if not math.isfinite(mean):  # every rank sees the same sum, so all of them stop here together
        raise TrainingDiverged(f"loss became {mean} in epoch {epoch}")
    return mean


@torch.no_grad()
def evaluate(
    model: Network, x: torch.Tensor, y: torch.Tensor, task: str = CLASSIFICATION, target: tuple[float, float] = (0, 1)
) -> dict[str, float]:
    """Scores on a split: ``loss`` and ``accuracy`` (classification), or ``loss`` (on the standardized target) and
    rmse, mae and r² in the target's units (regression; ``target`` is its (mean, std))."""
    model.eval()
    outputs = model(x)
    if task == REGRESSION:
        mean, std = target
        loss = _loss(outputs, (y.float() - mean) / std, task).item()
        prediction = (outputs[:, 0] * std + mean).cpu().numpy()
        return {"loss": loss, **regression_scores(prediction, y.cpu().numpy())}
    loss = _loss(outputs, y, task).item()
    return {"loss": loss, "accuracy": (outputs.argmax(dim=1) == y).float().mean().item()}


def state_bytes(state: dict[str, Any]) -> bytes:
    """A checkpoint as bytes (torch.save)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def state_from_bytes(blob: bytes) -> dict[str, Any]:
    """A checkpoint read back (weights only: no pickled code is executed)."""
    return torch.load(io.BytesIO(blob), map_location=device(), weights_only=True)
