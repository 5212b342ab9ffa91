"""The training loop: seeded, per-epoch metrics, a checkpoint each epoch and resume from the last one."""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from functions.ml.features import Splits, Transform
from functions.ml.models import Classifier, build_model
from functions.ml.params import TrainParams


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch measured."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float


@dataclass
class TrainResult:
    """The trained classifier and its history."""

    model: Classifier
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
    checkpointer: Checkpointer | None = None,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Train a classifier; resumes from the checkpointer's state when it holds one for these params."""
    dev = device()
    torch.manual_seed(params.seed)
    torch.backends.cudnn.deterministic = True
    model = build_model(
        params.model,
        transform,
        num_classes,
        hidden=params.hidden,
        layers=params.layers,
        dropout=params.dropout,
        channels=params.channels,
    ).to(dev)
    opt = _optimizer(model, params)
    result = TrainResult(model=model)
    state = checkpointer.load() if checkpointer else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        result.history = [EpochMetrics(**m) for m in state["history"]]
        result.resumed_from = len(result.history)
        result.early_stopped = bool(state.get("early_stopped"))
    x_tr, y_tr = _tensors(splits, "train", dev)
    x_val, y_val = _tensors(splits, "val", dev)
    for epoch in range(len(result.history) + 1, params.epochs + 1):
        if result.early_stopped:
            break
        train_loss = _epoch(model, opt, x_tr, y_tr, params, epoch)
        val_loss, val_acc = evaluate(model, x_val, y_val)
        result.history.append(EpochMetrics(epoch, train_loss, val_loss, val_acc))
        result.early_stopped = bool(on_epoch(result.history)) if on_epoch else False
        if checkpointer:
            checkpointer.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "history": [dataclasses.asdict(m) for m in result.history],
                    "early_stopped": result.early_stopped,
                }
            )
    model.eval()
    return result


def _optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    if params.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=params.lr, momentum=0.9, weight_decay=params.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def _tensors(splits: Splits, name: str, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(splits.x[name], dtype=torch.float32, device=dev), torch.as_tensor(splits.y[name], device=dev)


def _epoch(
    model: Classifier, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, params: TrainParams, epoch: int
) -> float:
    """One pass over the training split; shuffling and dropout are seeded per epoch, so a resumed run matches."""
    model.train()
    for group in opt.param_groups:  # cosine decay, a function of the epoch alone, so resuming needs no scheduler state
        group["lr"] = params.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / params.epochs))
    torch.manual_seed(params.seed * 100_003 + epoch)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(params.seed * 7919 + epoch)).to(x.device)
    total, seen = 0.0, 0
    for start in range(0, len(order), params.batch_size):
        batch = order[start : start + params.batch_size]
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(f"loss became {loss.item()} in epoch {epoch}")
        loss.backward()
        opt.step()
        total += loss.item() * len(batch)
        seen += len(batch)
    return total / seen


@torch.no_grad()
def evaluate(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on a split."""
    model.eval()
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return loss, accuracy


def predict_proba(model: Classifier, x: np.ndarray) -> np.ndarray:
    """Class probabilities from PyTorch (the reference the ONNX export is checked against)."""
    model.eval()
    with torch.no_grad():
        param = next(model.parameters())
        return torch.softmax(model(torch.as_tensor(x, dtype=torch.float32, device=param.device)), dim=1).cpu().numpy()


def state_bytes(state: dict[str, Any]) -> bytes:
    """A checkpoint as bytes (torch.save)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def state_from_bytes(blob: bytes) -> dict[str, Any]:
    """A checkpoint read back (weights only: no pickled code is executed)."""
    return torch.load(io.BytesIO(blob), map_location=device(), weights_only=True)
