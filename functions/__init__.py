"""knflow functions: the lifecycle steps and the host that serves them the Knative way.

Public surface: ``Context`` (what ``handle(event, ctx)`` gets), ``load_function`` (a module in
either shape), ``FunctionHost`` (one function over HTTP), ``Runner`` (the local gateway with one
worker process per function, scaled to zero) and ``KNOWN_FUNCTIONS``.
"""

from functions.context import Context
from functions.loader import KNOWN_FUNCTIONS, load_function

__all__ = ["KNOWN_FUNCTIONS", "Context", "FunctionHost", "Runner", "load_function"]


def __getattr__(name: str):
    # The host and runner pull in aiohttp servers and multiprocessing; import them only when asked.
    if name == "FunctionHost":
        from functions.host import FunctionHost

        return FunctionHost
    if name == "Runner":
        from functions.runner import Runner

        return Runner
    raise AttributeError(name)
