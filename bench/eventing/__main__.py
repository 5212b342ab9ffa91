"""``python -m bench.eventing``."""

from bench.eventing.run import main

main()
