"""A function directory in Knative func's Python layout, as ``func create -l python`` writes it.

    func.yaml            name, runtime: python, image, invoke (cloudevent | http), and func's own fields
    pyproject.toml       [project] dependencies: what the function needs besides knflow
    function/__init__.py exports new() (Knative's shape) or handle(event, ctx) (knflow's)
    function/func.py     the code

``read_function_dir`` checks what can be checked without running the code (func.yaml's name and runtime, the
package, the dependency list); ``import_function_dir`` imports the package the way func-python's entry point
does (``from function import new``).
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pydantic
import yaml

from functions.runtime.instances import NAME
from infra.errors import InvalidRequest
from infra.validation import parse

FUNC_YAML = "func.yaml"
PYPROJECT = "pyproject.toml"
PACKAGE = "function"


class FuncYaml(pydantic.BaseModel):
    """The fields of func.yaml knflow reads; func's other fields (build, deploy, run, ...) are kept as they are."""

    model_config = pydantic.ConfigDict(extra="allow", frozen=True)

    name: str = pydantic.Field(pattern=NAME, max_length=63)
    runtime: str
    image: str | None = None
    invoke: Literal["cloudevent", "http"] | None = None  # func's default is http

    @pydantic.field_validator("runtime")
    @classmethod
    def _python(cls, value: str) -> str:
        if value != "python":
            raise ValueError(f"is {value!r}; knflow hosts python functions")
        return value


@dataclass(frozen=True)
class FunctionDir:
    """A checked function directory: where it is, its func.yaml and the dependencies its pyproject declares."""

    path: Path
    meta: FuncYaml
    dependencies: tuple[str, ...]

    @property
    def invoke(self) -> str:
        return self.meta.invoke or "http"


def is_function_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding a func.yaml."""
    path = Path(path)
    return path.is_dir() and (path / FUNC_YAML).is_file()


def read_function_dir(path: str | Path) -> FunctionDir:
    """The directory's func.yaml and dependencies; ``InvalidRequest`` naming the file and field otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise InvalidRequest(f"{path}: no such function directory")
    meta = parse(FuncYaml, _yaml(path / FUNC_YAML), str(path / FUNC_YAML))
    if not (path / PACKAGE / "__init__.py").is_file():
        raise InvalidRequest(
            f"{path}: no {PACKAGE}/__init__.py (the function's package, exporting new() or handle(event, ctx))"
        )
    return FunctionDir(path, meta, dependencies(path))


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InvalidRequest(
            f"{path.parent}: no {FUNC_YAML} (a function directory as `func create` writes it)"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidRequest(f"{path}: cannot read: {exc}"[:500]) from None


def dependencies(path: Path) -> tuple[str, ...]:
    """``[project] dependencies`` of the directory's pyproject.toml (none without one)."""
    file = path / PYPROJECT
    try:
        project = tomllib.loads(file.read_text()).get("project") or {}
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidRequest(f"{file}: cannot read: {exc}") from None
    deps = project.get("dependencies") or []
    if not isinstance(deps, list) or not all(isinstance(d, str) and d.strip() for d in deps):
        raise InvalidRequest(f"{file}: [project] dependencies must be a list of requirement strings")
    return tuple(d.strip() for d in deps)


def import_function_dir(path: Path) -> ModuleType:
    """Import the directory's ``function`` package (the directory goes first on ``sys.path``)."""
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]  # another directory's package of the same name (in-process hosts)
    sys.path.insert(0, str(path))
    return importlib.import_module(PACKAGE)
