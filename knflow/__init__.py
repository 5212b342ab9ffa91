"""The ``knflow`` command and the platform it composes from functions, eventing, serving and infra."""

__version__ = "0.1.0"
