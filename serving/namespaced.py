"""The model registries of every namespace, addressed by the gateway's qualified model names (``infra.namespaces``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infra.namespaces import scoped, split
from infra.store import ArtifactStore
from serving.registry import ModelRegistry


class NamespacedRegistry:
    """``ModelRegistry``'s methods taking a qualified model name first (``ns/name``, or ``name`` in ``default``): each
    call goes to that namespace's registry, under its artifact prefix."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self._registries: dict[str, ModelRegistry] = {}

    def of(self, namespace: str) -> ModelRegistry:
        """The registry of one namespace."""
        if namespace not in self._registries:
            self._registries[namespace] = ModelRegistry(scoped(self.store, namespace))
        return self._registries[namespace]

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(model: str, *args: Any, **kwargs: Any) -> Any:
            namespace, name = split(model)
            return getattr(self.of(namespace), method)(name, *args, **kwargs)

        return call
