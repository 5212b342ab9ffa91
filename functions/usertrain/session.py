"""The train step's side of a user entrypoint's reporter: metrics.jsonl on every report, the median stopping rule of a
tuning run, and checkpoints kept in the store so a redelivered event resumes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from functions.tuning.earlystop import should_stop
from functions.tuning.experiment import SUCCEEDED, load_experiment
from functions.tuning.spec import EarlyStopping, Objective
from functions.usertrain.child import CHECKPOINT_IN, CHECKPOINT_OUT
from infra.errors import NotFound
from infra.store import ArtifactStore


class ReportSession:
    """One training's reports and checkpoints. ``prefix`` is the run's (or trial's) artifact prefix."""

    def __init__(
        self,
        store: ArtifactStore,
        runid: str,
        prefix: str,
        fingerprint: str,
        rule: tuple[Objective, EarlyStopping] | None,
        log: logging.Logger | logging.LoggerAdapter,
    ) -> None:
        self.store, self.runid, self.prefix, self.rule, self.log = store, runid, prefix, rule, log
        self.checkpoint_key = f"{prefix}checkpoint-{fingerprint[:16]}.bin"  # another fingerprint starts afresh
        self.metrics_key = prefix + "metrics.jsonl"
        self.history: list[dict[str, float]] = []
        self.stopped = False
        self.jobdir: Path | None = None

    def prepare(self, jobdir: Path) -> bool:
        """Put the stored checkpoint (if any) where the child reads it, with the history it had; → resumed?"""
        self.jobdir = jobdir
        try:
            blob = self.store.get(self.checkpoint_key)
        except NotFound:
            return False
        (jobdir / CHECKPOINT_IN).write_bytes(blob)
        try:
            lines = self.store.get(self.metrics_key).decode().splitlines()
            self.history = [json.loads(line) for line in lines if line.strip()]
        except NotFound:
            self.history = []
        return True

    def handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Answer one message of the child."""
        if message.get("op") == "report":
            return {"stop": self.report(int(message["epoch"]), dict(message.get("metrics") or {}))}
        if message.get("op") == "checkpoint" and self.jobdir is not None:
            self.store.put(self.checkpoint_key, (self.jobdir / CHECKPOINT_OUT).read_bytes())
            return {"ok": True}
        return {"error": f"unknown message {message.get('op')!r}"}

    def report(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record an epoch (a resumed training reporting an epoch again replaces it); → stop under the rule?"""
        self.history = [m for m in self.history if m["epoch"] < epoch] + [{"epoch": epoch, **metrics}]
        lines = "".join(json.dumps(m) + "\n" for m in self.history)
        self.store.put(self.metrics_key, lines.encode(), content_type="application/x-ndjson")
        stop = self._should_stop()
        if stop and not self.stopped:
            self.log.info("train: %s stopped early at epoch %d (median stopping rule)", self.prefix, epoch)
        self.stopped = self.stopped or stop
        return stop

    def curve(self, metric: str) -> list[float]:
        """The metric's value at each reported epoch that has it."""
        return [m[metric] for m in self.history if metric in m]

    def last(self) -> dict[str, float]:
        """The last reported value of every metric."""
        values: dict[str, float] = {}
        for m in self.history:
            values.update({k: v for k, v in m.items() if k != "epoch"})
        return values

    def _should_stop(self) -> bool:
        if self.rule is None:
            return False
        objective, rule = self.rule
        curve = self.curve(objective.metric)
        if not curve:
            return False  # the entrypoint does not report the objective: the rule has nothing to judge
        experiment = load_experiment(self.store, self.runid)
        completed = [t.curve for t in experiment.trials.values() if t.status == SUCCEEDED] if experiment else []
        return should_stop(curve, completed, objective, rule)
