"""Users' own training code, named by the run option ``train.entrypoint``: the context it is called with (a stable
API, docs/training-code.md) and the train step's path that runs it in a child process (``step.run``)."""

from functions.usertrain.context import API_VERSION, LocalReporter, Reporter, Split, TrainContext

__all__ = ["API_VERSION", "LocalReporter", "Reporter", "Split", "TrainContext"]
