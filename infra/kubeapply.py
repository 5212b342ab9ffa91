"""Apply resources to the cluster of a kubeconfig with server-side apply, through the ``kubernetes`` client.

``apply(resources, api_client)``: one ``PATCH`` with ``application/apply-patch+yaml`` (field manager ``knflow``,
``force=true``) per resource, to the path its apiVersion/kind/name gives, through ``infra.kubeapi.KubeApi``.
"""

from __future__ import annotations

import logging
from typing import Any

from infra.errors import ConfigError, KnflowError
from infra.kubeapi import KubeApi, client_from_kubeconfig

__all__ = ["PLURALS", "apply", "client_from_kubeconfig", "resource_path"]

log = logging.getLogger(__name__)

#: kind -> (plural, namespaced) for the kinds knflow renders.
PLURALS = {
    "Namespace": ("namespaces", False),
    "ConfigMap": ("configmaps", True),
    "Secret": ("secrets", True),
    "Broker": ("brokers", True),
    "Trigger": ("triggers", True),
    "Service": ("services", True),
    "SinkBinding": ("sinkbindings", True),
    "PingSource": ("pingsources", True),
    "KafkaSource": ("kafkasources", True),
    "ServiceAccount": ("serviceaccounts", True),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
}


def resource_path(resource: dict[str, Any]) -> str:
    """The REST path of one resource (``/api/v1/...`` for the core group, ``/apis/GROUP/VERSION/...`` else)."""
    kind, api_version, metadata = resource["kind"], resource["apiVersion"], resource["metadata"]
    if kind not in PLURALS:
        raise ConfigError(f"{kind}/{metadata['name']}: knflow does not know the REST path of kind {kind!r}")
    plural, namespaced = PLURALS[kind]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    scope = f"/namespaces/{metadata['namespace']}" if namespaced else ""
    return f"{base}{scope}/{plural}/{metadata['name']}"


def apply(resources: list[dict[str, Any]], api_client: Any, *, field_manager: str = "knflow") -> list[str]:
    """Server-side apply each resource in order; returns ``kind/name`` of each; ``KnflowError`` on a refusal."""
    api, applied = KubeApi(api_client), []
    for resource in resources:
        name = f"{resource['kind']}/{resource['metadata']['name']}"
        try:
            api.apply(resource_path(resource), resource, field_manager)
        except KnflowError as exc:
            raise KnflowError(f"apply {name} refused: {exc.message}", status=502, retryable=exc.retryable) from exc
        log.info("applied %s", name)
        applied.append(name)
    return applied
