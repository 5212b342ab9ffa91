"""Subcommands of the ``knflow`` command line, one module each."""
