"""Apply resources to the cluster of a kubeconfig with server-side apply, through the ``kubernetes`` client.

The seam is ``apply(resources, api_client)``: one ``PATCH`` with ``application/apply-patch+yaml``
(field manager ``knflow``, ``force=true``) per resource, to the path its apiVersion/kind/name gives.
``client_from_kubeconfig(path)`` loads a kubeconfig and fails with a message naming it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from infra.errors import ConfigError, KnflowError

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


def client_from_kubeconfig(path: str | Path, context: str | None = None) -> Any:
    """An ``ApiClient`` for the kubeconfig at ``path``; ``ConfigError`` naming it when it describes no cluster."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    where = str(path)
    if not all(Path(p).expanduser().is_file() for p in where.split(":") if p):
        raise ConfigError(f"no Kubernetes cluster configured: kubeconfig {where} does not exist")
    try:
        return config.new_client_from_config(config_file=where, context=context, persist_config=False)
    except (ConfigException, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"no Kubernetes cluster configured in kubeconfig {where}: {exc}") from None


def apply(resources: list[dict[str, Any]], api_client: Any, *, field_manager: str = "knflow") -> list[str]:
    """Server-side apply each resource in order; returns ``kind/name`` of each; ``KnflowError`` on a refusal."""
    applied = []
    for resource in resources:
        name = f"{resource['kind']}/{resource['metadata']['name']}"
        method, url, headers, body, _ = api_client.param_serialize(
            "PATCH",
            resource_path(resource),
            query_params=[("fieldManager", field_manager), ("force", "true")],
            header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
            body=resource,
            auth_settings=["BearerToken"],
        )
        try:
            response = api_client.call_api(method, url, header_params=headers, body=body)
        except (OSError, urllib3.exceptions.HTTPError, ApiException) as exc:
            raise KnflowError(f"apply {name} failed: {exc}", status=502, retryable=True) from exc
        payload = response.read()
        if not 200 <= response.status < 300:
            text = payload.decode(errors="replace")[:500] if payload else ""
            raise KnflowError(f"apply {name} refused: HTTP {response.status} {text}", status=502, retryable=False)
        log.info("applied %s", name)
        applied.append(name)
    return applied
