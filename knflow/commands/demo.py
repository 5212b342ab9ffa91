"""``knflow demo``: the whole lifecycle on scikit-learn's bundled digits images, from a real data arrival."""

from __future__ import annotations

import argparse
import io

import numpy as np

from infra.settings import load_settings
from knflow.commands.run import add_run_options, execute

#: A brief tune (Katib's spec shape): TPE over learning rate and dropout of the image CNN.
DEMO_OPTIONS = {
    "model_name": "digits",
    "train": {"model": "cnn", "epochs": 15},
    "tuning": {
        "objective": {"metric": "val_accuracy", "type": "maximize"},
        "algorithm": "tpe",
        "parameters": [
            {"name": "lr", "type": "double", "min": 0.0005, "max": 0.01, "log": True},
            {"name": "dropout", "type": "double", "min": 0.0, "max": 0.5},
        ],
        "maxTrialCount": 6,
        "parallelTrialCount": 2,
        "maxFailedTrialCount": 2,
        "earlyStopping": {"minTrialsRequired": 2, "startStep": 3},
        "seed": 0,
    },
}


def register(parser: argparse.ArgumentParser) -> None:
    add_run_options(parser)


def digits_npz() -> bytes:
    """scikit-learn's digits (1,797 8x8 images and their labels) as an NPZ file."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    buffer = io.BytesIO()
    np.savez(buffer, x=digits.images.astype(np.float32), y=digits.target.astype(np.int64))
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    import orjson

    options = orjson.loads(args.options.read_bytes()) if args.options else DEMO_OPTIONS
    return execute(load_settings(), args.dataset or "digits", digits_npz(), "digits.npz", options, args)
