"""The serving panel: per model, the gateway's revisions with traffic share, tags, replicas, requests and errors."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from infra.errors import KnflowError, NotFound, Unavailable
from infra.namespaces import DEFAULT, HEADER


class GatewayView:
    """Reads the inference gateway's control API (``/v1/models``, ``/v1/models/{name}``)."""

    def __init__(self, gateway_url: str, session: aiohttp.ClientSession):
        self.gateway_url = gateway_url.rstrip("/")
        self.session = session

    async def _get(self, path: str, namespace: str) -> Any:
        url = self.gateway_url + path
        try:
            async with self.session.get(url, headers={HEADER: namespace}) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"gateway {self.gateway_url} is not reachable: {exc or type(exc).__name__}") from None
        if response.status == 404:
            raise NotFound(_reason(body) or f"{path} not found on the gateway")
        if response.status != 200:
            raise Unavailable(f"gateway {self.gateway_url} answered {response.status}: {_reason(body)}")
        return orjson.loads(body)

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


def _reason(body: bytes) -> str:
    try:
        return str(orjson.loads(body)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:200]
