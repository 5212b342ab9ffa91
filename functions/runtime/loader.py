"""Find a function's module (name, dotted path, file or function directory) and wrap it in the shape the host calls.

A function directory (Knative func's layout, ``functions.runtime.funcdir``) is loaded as func-python loads it:
its ``function`` package, with func.yaml's ``name`` and ``invoke`` flavour. Two shapes are accepted, told apart
by what the module defines:

* knflow's: ``handle(event, ctx)`` (async, or sync to run in the thread executor, which is how a
  CPU-bound step such as training opts out of the event loop), with optional module-level
  ``start(settings)``, ``stop()``, ``alive()`` and ``ready()``;
* Knative's Python runtime (``func-python``): ``new()`` returning an object with
  ``async handle(scope, receive, send)`` and optional ``start(cfg)``, ``stop()``, ``alive()``,
  ``ready()`` (or a module-level ``handle(scope, receive, send)``), see ``functions.runtime.asgi``.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from functions.runtime.context import Context, Runtime
from infra.errors import ConfigError, NotFound

#: The lifecycle functions knflow ships: name -> module.
KNOWN_FUNCTIONS: dict[str, str] = {
    name: f"functions.{name}"
    for name in ("ingest", "featurize", "train", "tune", "register", "deploy", "drift", "retrain")
} | {"echo": "functions.examples.echo", "schedule": "functions.schedule"}


class ShapeError(ConfigError):
    """The module has no handler of either shape; ``file`` and ``line`` say where the user should look."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        at = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(at + message)
        self.file, self.line, self.reason = file, line, message


def _where(obj: Any) -> tuple[str | None, int | None]:
    """The source file and first line of a class or function (None where Python cannot tell)."""
    try:
        return inspect.getsourcefile(obj), inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return None, None


@dataclass(frozen=True)
class Reply:
    """What a function answered, ready for HTTP: status, headers, body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def module_name_for(target: str) -> str:
    """A function name (``train``), dotted module path or ``.py`` file path -> importable name or path."""
    if target in KNOWN_FUNCTIONS:
        return KNOWN_FUNCTIONS[target]
    if target.endswith(".py") or "/" in target:
        return target
    if "." not in target:
        return f"functions.{target}"
    return target


def _is_function_dir(target: str) -> bool:
    """Whether ``target`` is a function directory; ``funcdir`` (pydantic, YAML) is imported only for a path."""
    if "/" not in target:
        return False
    from functions.runtime.funcdir import is_function_dir

    return is_function_dir(target)


def import_target(target: str) -> ModuleType:
    """Import the module a function target names; ``NotFound`` if there is none."""
    if _is_function_dir(target):
        from functions.runtime.funcdir import import_function_dir

        return import_function_dir(Path(target).resolve())
    name = module_name_for(target)
    if name.endswith(".py") or "/" in name:
        path = Path(name).resolve()
        if not path.is_file():
            raise NotFound(f"function file {path} does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise NotFound(f"cannot load function file {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise NotFound(f"function {target!r}: no module {name!r}") from None
        raise


def health_result(check: Callable[[], Any] | None) -> tuple[bool, str]:
    """What a health callback said, as (ok, message); no callback means healthy."""
    if check is None:
        return True, "OK"
    result = check()
    if isinstance(result, tuple):
        return bool(result[0]), str(result[1])
    return bool(result), "OK" if result else "not OK"


async def maybe_await(value: Any) -> Any:
    """Await ``value`` if a hook returned an awaitable (hooks may be sync or async)."""
    return await value if inspect.isawaitable(value) else value


class OptionalHooks:
    """``stop``, ``alive`` and ``ready`` of a function, each through the hook of that name on ``hooks`` (its module,
    or the instance ``new()`` returned) when it has one; ``start`` differs by kind, so each kind has its own."""

    hooks: Any

    async def stop(self) -> None:
        hook = getattr(self.hooks, "stop", None)
        if hook is not None:
            await maybe_await(hook())

    def alive(self) -> tuple[bool, str]:
        return health_result(getattr(self.hooks, "alive", None))

    def ready(self) -> tuple[bool, str]:
        return health_result(getattr(self.hooks, "ready", None))


class NativeFunction(OptionalHooks):
    """A knflow ``handle(event, ctx)`` function with its optional module hooks."""

    parses_event = True

    def __init__(self, name: str, module: ModuleType):
        self.name = name
        self.module = self.hooks = module
        self.handle = module.handle
        self.is_async = inspect.iscoroutinefunction(self.handle)

    async def start(self, runtime: Runtime, environ: Mapping[str, str]) -> None:
        hook = getattr(self.module, "start", None)
        if hook is not None:
            await maybe_await(hook(runtime.settings))

    async def call(self, event: CloudEvent, ctx: Context) -> CloudEvent | None:
        if self.is_async:
            return await self.handle(event, ctx)
        return await asyncio.to_thread(self.handle, event, ctx)


def load_function(target: str, invoke: str | None = None, hosted_as: str | None = None) -> Any:
    """Import ``target`` and wrap it: a ``NativeFunction`` or an ``AsgiFunction`` (Knative's shape). ``invoke``
    is the Knative shape's flavour: a directory's func.yaml says, else ``cloudevent``; ``name`` is what the
    function is hosted as (``hosted_as``; default: the directory's func.yaml name, or the target's last part)."""
    from functions.runtime.asgi import AsgiFunction

    name = target.rstrip("/").rsplit("/", 1)[-1].removesuffix(".py").rsplit(".", 1)[-1]
    if _is_function_dir(target):
        from functions.runtime.funcdir import read_function_dir

        function_dir = read_function_dir(target)
        name, invoke = function_dir.meta.name, invoke or function_dir.invoke
    module = import_target(target)
    invoke = invoke or "cloudevent"
    name = hosted_as or name
    if callable(getattr(module, "new", None)):
        instance = module.new()
        if not callable(getattr(instance, "handle", None)):
            kind = type(instance).__name__
            raise ShapeError(
                f"new() returned a {kind}, which has no handle(scope, receive, send)", *_where(type(instance))
            )
        return AsgiFunction(name, instance, invoke)
    handle = getattr(module, "handle", None)
    if handle is None:
        raise ShapeError(
            f"function {name!r} defines neither new() (Knative's shape) nor handle(event, ctx) (knflow's)",
            getattr(module, "__file__", None),
        )
    params = [p for p in inspect.signature(handle).parameters.values() if p.default is inspect.Parameter.empty]
    if len(params) == 3:
        return AsgiFunction(name, module, invoke)
    if len(params) != 2:
        raise ShapeError("handle must take (event, ctx) or (scope, receive, send)", *_where(handle))
    return NativeFunction(name, module)
