"""The serving panel: per model, the gateway's revisions with traffic share, tags, replicas, requests and errors."""

from __future__ import annotations

import asyncio
from typing import Any

from infra.asyncclient import AsyncClient
from infra.errors import KnflowError, NotFound, Unavailable
from infra.namespaces import DEFAULT, HEADER


class GatewayView:
    """Reads the inference gateway's control API (``/v1/models``, ``/v1/models/{name}``) through ``gateway``."""

    def __init__(self, gateway: AsyncClient):
        self.gateway_url = gateway.base_url
        self.http = gateway

    async def _get(self, path: str, namespace: str) -> Any:
        return await self.http.call("GET", path, headers={HEADER: namespace})

    async def model(self, name: str, namespace: str = DEFAULT) -> dict[str, Any]:
        """One model's revisions joined with its traffic split, and its endpoint."""
        raw = await self._get(f"/v1/models/{name}", namespace)
        split = {t["revision"]: t for t in raw.get("traffic", [])}
        revisions = []
        for rev in reversed(raw.get("revisions", [])):
            target = split.get(rev["id"], {})
            revisions.append(
                {
                    "id": rev["id"],
                    "version": rev.get("version"),
                    "created": rev.get("created"),
                    "percent": target.get("percent", 0),
                    "tag": target.get("tag"),
                    "replicas": rev.get("replicas", 0),
                    "inflight": rev.get("inflight", 0),
                    "requests": rev.get("requests", 0),
                    "errors": rev.get("errors", 0),
                    "batching": rev.get("batching"),
                }
            )
        return {
            "model": raw.get("model", name),
            "endpoint": f"{self.gateway_url}/v2/models/{name}/infer",
            "revisions": revisions,
            "traffic": raw.get("traffic", []),
        }

    async def models(self, namespace: str = DEFAULT) -> dict[str, Any]:
        """Every model the gateway serves in a namespace (a model removed between the two calls is left out)."""
        names = (await self._get("/v1/models", namespace)).get("models", [])
        found = await asyncio.gather(*(self.model(n, namespace) for n in names), return_exceptions=True)
        for result in found:
            if isinstance(result, BaseException) and not isinstance(result, NotFound):
                raise result if isinstance(result, KnflowError) else Unavailable(f"gateway: {result}")
        return {"gateway": self.gateway_url, "models": [m for m in found if isinstance(m, dict)]}
