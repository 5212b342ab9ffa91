"""``python -m bench.training``."""

from bench.training.run import main

main()
