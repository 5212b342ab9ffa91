"""Namespaces: the teams that own runs, artifacts, models and endpoints, and which one a request addresses.

A namespace is a DNS label (as a Kubernetes namespace must be). ``default`` keeps knflow's original layout and URLs;
another namespace's artifacts live under ``namespaces/<ns>/`` (``prefix``). A request addresses one namespace: the
``namespace`` query parameter or the ``X-Knflow-Namespace`` header, else the caller's first one (``default`` when the
caller acts for it). The guard puts the caller's ``Scope`` on every request: its token's namespaces, ``*`` when no
token is asked at all, ``default`` for a caller without a token on an open route. A namespace the caller does not act
for answers 404 like a resource that does not exist, so nothing leaks whether another team's run or model exists.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from infra.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from aiohttp.web import RequestKey

    from infra.store import ArtifactStore, ObjectInfo

DEFAULT = "default"
ALL = "*"
HEADER = "X-Knflow-Namespace"
QUERY = "namespace"
ROOT = "namespaces/"  # where the artifacts of every namespace but ``default`` live
LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check(namespace: str) -> str:
    """``namespace`` if it can name one (a DNS-1123 label); ``InvalidRequest`` naming the rule otherwise."""
    if not isinstance(namespace, str) or not LABEL.match(namespace):
        raise InvalidRequest(f"namespace {namespace!r} must be a DNS label (lowercase letters, digits, '-')")
    return namespace


def prefix(namespace: str) -> str:
    """The artifact key prefix of a namespace: none for ``default``, ``namespaces/<ns>/`` for any other."""
    return "" if check(namespace) == DEFAULT else f"{ROOT}{namespace}/"


def of_extension(value: Any) -> str:
    """The namespace an event's ``namespace`` extension names (``default`` when it names none)."""
    return str(value) if value else DEFAULT


@dataclass(frozen=True)
class Scope:
    """The namespaces a caller acts for (``*``: every one)."""

    namespaces: tuple[str, ...]

    def sees(self, namespace: str) -> bool:
        """Whether the caller acts for ``namespace``."""
        return ALL in self.namespaces or namespace in self.namespaces

    @property
    def home(self) -> str:
        """The namespace a request that names none addresses: ``default`` when the caller acts for it."""
        if self.sees(DEFAULT) or not self.namespaces:
            return DEFAULT
        return self.namespaces[0]


EVERY = Scope((ALL,))
ANONYMOUS = Scope((DEFAULT,))


@functools.cache
def scope_key() -> RequestKey[Scope]:
    """The request key the guard stores the caller's ``Scope`` under (made on first use: aiohttp is imported only by
    a server that has a request)."""
    from aiohttp.web import RequestKey

    return RequestKey("knflow.scope", Scope)


def scope_of(request: Any) -> Scope:
    """The caller's scope as the guard recorded it (every namespace for a server that runs without the guard)."""
    return request.get(scope_key()) or EVERY


def addressed(request: Any) -> str:
    """The namespace a request addresses; ``NotFound`` when its caller does not act for it (no existence leak)."""
    scope = scope_of(request)
    named = request.query.get(QUERY) or request.headers.get(HEADER)
    namespace = check(named) if named else scope.home
    if not scope.sees(namespace):
        raise NotFound(f"no namespace {namespace!r}")
    return namespace


def require(request: Any, namespace: str, what: str) -> None:
    """``NotFound(what)`` unless the resource's ``namespace`` is the one the request addresses."""
    if namespace != addressed(request):
        raise NotFound(what)


class NamespacedStore:
    """An artifact store seen from inside one namespace: every key is under the namespace's prefix, and the keys it
    answers with are the namespace's own (``raw/...``, ``models/...``), so the lifecycle's layout reads the same in
    every namespace. ``default``'s view is the store itself (``scoped`` returns it unwrapped)."""

    def __init__(self, store: ArtifactStore, namespace: str):
        self._store, self.namespace, self.prefix = store, namespace, prefix(namespace)
        self.url = store.url

    def _own(self, info: ObjectInfo) -> ObjectInfo:
        return dataclasses.replace(info, key=info.key[len(self.prefix) :])

    def put(self, key: str, data: Any, **kwargs: Any) -> ObjectInfo:
        return self._own(self._store.put(self.prefix + key, data, **kwargs))

    def put_if_absent(self, key: str, data: bytes, **kwargs: Any) -> ObjectInfo | None:
        info = self._store.put_if_absent(self.prefix + key, data, **kwargs)
        return None if info is None else self._own(info)

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        return self._store.get_versioned(self.prefix + key)

    def put_if_match(self, key: str, data: bytes, etag_or_sha: str, **kwargs: Any) -> ObjectInfo | None:
        info = self._store.put_if_match(self.prefix + key, data, etag_or_sha, **kwargs)
        return None if info is None else self._own(info)

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        return self._store.open(self.prefix + key)

    def get(self, key: str) -> bytes:
        return self._store.get(self.prefix + key)

    def download(self, key: str, dest: Path) -> ObjectInfo:
        return self._own(self._store.download(self.prefix + key, dest))

    def stat(self, key: str) -> ObjectInfo:
        return self._own(self._store.stat(self.prefix + key))

    def exists(self, key: str) -> bool:
        return self._store.exists(self.prefix + key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return (self._own(info) for info in self._store.list(self.prefix + prefix))

    def delete(self, key: str) -> None:
        self._store.delete(self.prefix + key)

    def add_listener(self, listener: Callable[[ObjectInfo], None]) -> None:
        self._store.add_listener(lambda info: listener(self._own(info)) if info.key.startswith(self.prefix) else None)


def scoped(store: ArtifactStore, namespace: str) -> ArtifactStore:
    """``store`` as ``namespace`` sees it (the store itself for ``default``)."""
    return store if prefix(namespace) == "" else NamespacedStore(store, namespace)


def qualified(namespace: str, name: str) -> str:
    """A model's name across namespaces, as the gateway keys it: ``name`` in ``default``, ``<ns>/<name>`` elsewhere.
    A name with ``/`` is no model's (registry names never hold one): ``NotFound``, so it cannot reach another's."""
    if "/" in name:
        raise NotFound(f"model {name!r} is not deployed")
    return name if namespace == DEFAULT else f"{namespace}/{name}"


def split(key: str) -> tuple[str, str]:
    """The namespace and name of a ``qualified`` model name."""
    namespace, _, name = key.rpartition("/")
    return namespace or DEFAULT, name
