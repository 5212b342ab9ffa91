"""Samples/s of the digits CNN trained through knflow's train step against the same loop in plain PyTorch (DDP),
with 1 and 2 workers (gloo on the CPU), interleaved in one run.

    .venv/bin/python -m bench.training [--rounds 3] [--repeat 4] [--epochs 6] [--workers 1 2]

Prints the conditions, every measurement, the medians and the ratios knflow / plain (goal for 2 workers: ≥ 0.90)
and 2 workers / 1 worker for each. Figures on a shared machine are noisy: compare within a run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.training.compare import Config, as_dict, prepare, run_knflow, run_plain  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from infra.store import open_store  # noqa: E402

GOAL = 0.90


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    config = Config(repeat=args.repeat, epochs=args.epochs)
    with tempfile.TemporaryDirectory(prefix="knflow-bench-training-") as tmp:
        store = open_store(f"file://{tmp}/artifacts")
        features = prepare(store, config)
        settings = load_settings(env={"KNFLOW_DATA_DIR": tmp})
        _conditions(config, args)
        figures: dict[tuple[str, int], list[float]] = {}
        for round_ in range(1, args.rounds + 1):
            for workers in args.workers:
                for name in ("plain", "knflow"):
                    if name == "plain":
                        measured = run_plain(store, features, config, workers)
                    else:
                        measured = run_knflow(store, features, config, workers, settings)
                    figures.setdefault((name, workers), []).append(measured.samples_per_s)
                    print(f"round {round_} {name:6} workers={workers}: {as_dict(measured)}", flush=True)
    _summary(figures, args.workers)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=4, help="copies of the digits (1,797 images each)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    return parser.parse_args(argv)


def _conditions(config: Config, args: argparse.Namespace) -> None:
    print(f"machine: {platform.machine()} {os.cpu_count()} cores (os.cpu_count), load {os.getloadavg()[0]:.2f}; "
          f"python {platform.python_version()}, torch {torch.__version__}, gloo")  # fmt: skip
    print(f"data: digits 8x8 x{config.repeat} (pixels jittered ±1), 70% training rows; digits CNN channels "
          f"{config.channels}, hidden {config.hidden}; Adam lr {config.lr}, cosine decay; global batch "
          f"{config.batch_size} (ceil(batch/workers) per rank); {config.epochs} epochs, epoch 1 left out; "
          f"{args.rounds} rounds, order plain→knflow per worker count")  # fmt: skip
    print("threads per rank: min(4, cores // workers) in both; knflow's epoch time includes its metrics.jsonl "
          "and checkpoint.pt writes to a file store")  # fmt: skip


def _summary(figures: dict[tuple[str, int], list[float]], workers: list[int]) -> None:
    median = {key: statistics.median(values) for key, values in figures.items()}
    print("\nmedian samples/s (per-epoch, training rows / epoch seconds):")
    for n in workers:
        ratio = median[("knflow", n)] / median[("plain", n)]
        goal = f" (goal ≥ {GOAL:.2f}: {'met' if ratio >= GOAL else 'NOT met'})" if n > 1 else ""
        rounds = [k / p for k, p in zip(figures[("knflow", n)], figures[("plain", n)], strict=True)]
        print(f"  workers={n}: plain {median[('plain', n)]:9.1f}  knflow {median[('knflow', n)]:9.1f}  "
              f"knflow/plain {ratio:.3f}{goal}; per round {' '.join(f'{r:.2f}' for r in rounds)}")  # fmt: skip
    if 1 in workers:
        for n in (w for w in workers if w > 1):
            print(f"  scaling {n}/1: plain {median[('plain', n)] / median[('plain', 1)]:.2f}x  "
                  f"knflow {median[('knflow', n)] / median[('knflow', 1)]:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
