"""Eventing benchmark: ``python -m bench.eventing``."""
