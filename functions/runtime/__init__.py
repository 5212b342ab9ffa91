"""The Knative-style runtime that hosts functions: the host, the local runner and its workers, the loader.

Public surface: ``Context`` (what ``handle(event, ctx)`` gets) and ``context_of(scope)`` (the same for a
Knative-shaped function), both stable for user functions (docs/functions.md); ``load_function`` (a module or
function directory in either shape), ``FunctionHost`` (one function over HTTP), ``Runner`` (the local gateway
with one worker process per function, scaled to zero) and ``KNOWN_FUNCTIONS``.
"""

from functions.runtime.context import Context, context_of
from functions.runtime.loader import KNOWN_FUNCTIONS, load_function

__all__ = ["KNOWN_FUNCTIONS", "Context", "FunctionHost", "Runner", "context_of", "load_function"]


def __getattr__(name: str):
    # The host and runner pull in aiohttp servers and multiprocessing; import them only when asked.
    if name == "FunctionHost":
        from functions.runtime.host import FunctionHost

        return FunctionHost
    if name == "Runner":
        from functions.runtime.runner import Runner

        return Runner
    raise AttributeError(name)
