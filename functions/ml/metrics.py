"""The two tasks (classification, regression): which metrics each reports, which way each metric is better, and
the metrics themselves as plain functions of predictions and truth."""

from __future__ import annotations

import numpy as np

from infra.errors import InvalidRequest

CLASSIFICATION, REGRESSION = "classification", "regression"
TASKS = (CLASSIFICATION, REGRESSION)

#: Metrics measured every epoch (what tuning curves and the median stopping rule can use), per task.
EPOCH_METRICS = {
    CLASSIFICATION: ("train_loss", "val_loss", "val_accuracy"),
    REGRESSION: ("train_loss", "val_loss", "val_rmse", "val_mae", "val_r2"),
}
#: Metrics a model.trained event reports, per task (besides ``epochs`` and ``onnx_max_abs_diff``).
METRICS = {
    CLASSIFICATION: (*EPOCH_METRICS[CLASSIFICATION], "test_loss", "test_accuracy"),
    REGRESSION: (*EPOCH_METRICS[REGRESSION], "test_loss", "test_rmse", "test_mae", "test_r2"),
}
#: The tuning objective and the deploy policy's metric when a run names none.
DEFAULT_OBJECTIVE = {CLASSIFICATION: "val_accuracy", REGRESSION: "val_rmse"}
DEFAULT_DEPLOY_METRIC = {CLASSIFICATION: "test_accuracy", REGRESSION: "test_rmse"}
_SMALLER_IS_BETTER = ("loss", "rmse", "mae", "mse", "error")


def check_task(task: object) -> str:
    """The task, or InvalidRequest naming the ones there are."""
    if task not in TASKS:
        raise InvalidRequest(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return str(task)


def maximized(metric: str) -> bool:
    """Whether larger is better for a metric, from its name: losses and errors (rmse, mae) are minimized."""
    return not metric.lower().rsplit("_", 1)[-1].endswith(_SMALLER_IS_BETTER)


def check_metric(metric: str, task: str, what: str) -> None:
    """Refuse a metric that only the other task reports (e.g. ``test_accuracy`` for a regression run)."""
    other = REGRESSION if task == CLASSIFICATION else CLASSIFICATION
    if metric in METRICS[other] and metric not in METRICS[task]:
        raise InvalidRequest(
            f"{what} {metric!r} is not measured for a {task} run (its metrics: {', '.join(METRICS[task])})"
        )


def accuracy(scores: np.ndarray, y: np.ndarray) -> float:
    """The share of rows whose highest-scoring class is the true one."""
    return float((np.asarray(scores).argmax(axis=1) == np.asarray(y)).mean()) if len(y) else 0.0


def regression_scores(prediction: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """rmse, mae and r² of predictions against the true targets (r² is 0 for a constant target)."""
    pred, truth = np.asarray(prediction, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    if not len(truth):
        return {"rmse": 0.0, "mae": 0.0, "r2": 0.0}
    error = pred - truth
    total = float(((truth - truth.mean()) ** 2).sum())
    r2 = 1.0 - float((error**2).sum()) / total if total > 0 else 0.0
    return {"rmse": float(np.sqrt((error**2).mean())), "mae": float(np.abs(error).mean()), "r2": r2}
