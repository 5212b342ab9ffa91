"""The Kubernetes API calls knflow makes, through the ``kubernetes`` client's REST layer: one seam, knflow's errors.

``KubeApi(api_client)`` gets, lists, creates, merge-patches and server-side applies resources by their REST path,
and reads text through the API server's proxy. A refusal becomes the knflow error of its status, carrying the
API's own reason and message (``Status.reason``, ``Status.message``): 404 ``NotFound``, 409 ``Conflict`` and 429
retryable, other 4xx not retryable (a forbidden call stays forbidden), 5xx and an unreachable server ``Unavailable``.
``api_client(kubeconfig)`` is the client of a kubeconfig, or of the pod's own service account when none is named.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import urllib3
from kubernetes.client.exceptions import ApiException

from infra.errors import ConfigError, Conflict, InvalidRequest, KnflowError, NotFound, Unavailable

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
_BY_STATUS: dict[int, type[KnflowError]] = {404: NotFound, 409: Conflict, 429: Unavailable}


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


def api_client(kubeconfig: str = "") -> Any:
    """The client of ``kubeconfig``, else of the pod's service account (``ConfigError`` outside a pod)."""
    if kubeconfig:
        return client_from_kubeconfig(kubeconfig)
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        raise ConfigError(f"no Kubernetes API: not in a pod and no kubeconfig set ({exc})") from None
    return client.ApiClient(configuration)


def api_error(what: str, status: int, body: bytes) -> KnflowError:
    """The knflow error for the API's answer ``status`` (a ``Status`` object, or any text) to ``what``."""
    try:
        answer = orjson.loads(body)
        reason = " ".join(str(answer.get(k)) for k in ("reason", "message") if answer.get(k))
    except (orjson.JSONDecodeError, AttributeError):
        reason = body.decode("utf-8", "replace")[:500]
    message = f"Kubernetes API refused {what}: HTTP {status} {reason}".rstrip()
    if status >= 500:
        return Unavailable(message, status=503)
    return _BY_STATUS.get(status, InvalidRequest)(message, status=status, retryable=status in (409, 429))


class KubeApi:
    """JSON calls to one Kubernetes API server by REST path (``/api/v1/...``, ``/apis/GROUP/VERSION/...``)."""

    def __init__(self, client: Any, *, timeout: float = 30.0):
        self.client = client
        self.timeout = timeout

    def call(
        self, method: str, path: str, body: Any = None, *, query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json", accept: str = "application/json",
    ) -> bytes:  # fmt: skip
        """The answer's body of one call; a knflow error (``api_error``) for a refusal or no answer."""
        what = f"{method} {path}"
        url_method, url, headers, data, _ = self.client.param_serialize(
            method, path, query_params=query or [], header_params={"Content-Type": content_type, "Accept": accept},
            body=body, auth_settings=["BearerToken"],
        )  # fmt: skip
        try:
            answer = self.client.call_api(
                url_method, url, header_params=headers, body=data, _request_timeout=self.timeout
            )
        except (OSError, urllib3.exceptions.HTTPError, ApiException) as exc:
            raise Unavailable(f"Kubernetes API unreachable for {what}: {exc}") from exc
        payload = answer.read() or b""
        if not 200 <= answer.status < 300:
            raise api_error(what, answer.status, payload)
        log.debug("kubernetes: %s -> %d", what, answer.status)
        return payload

    def get(self, path: str) -> dict[str, Any]:
        """The resource at ``path``."""
        return orjson.loads(self.call("GET", path))

    def list(self, path: str, label_selector: str = "") -> list[dict[str, Any]]:
        """The items of the collection at ``path``, with the labels ``label_selector`` selects."""
        query = [("labelSelector", label_selector)] if label_selector else []
        return orjson.loads(self.call("GET", path, query=query)).get("items") or []

    def create(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST`` a new resource into ``collection``; the created resource."""
        return orjson.loads(self.call("POST", collection, body))

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386) of the resource at ``path``; the patched resource."""
        return orjson.loads(self.call("PATCH", path, body, content_type=MERGE_PATCH))

    def apply(self, path: str, body: dict[str, Any], field_manager: str = "knflow") -> dict[str, Any]:
        """Server-side apply ``body`` at ``path`` as ``field_manager``, taking over fields others own."""
        query = [("fieldManager", field_manager), ("force", "true")]
        return orjson.loads(self.call("PATCH", path, body, query=query, content_type=APPLY_PATCH) or b"{}")

    def text(self, path: str) -> str:
        """A text answer (a pod's ``/metrics`` through the API server's proxy)."""
        return self.call("GET", path, accept="text/plain").decode("utf-8", "replace")
