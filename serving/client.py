"""Clients for the gateway's control API and V2 inference (used by the lifecycle's deploy step): blocking and async."""

from __future__ import annotations

from typing import Any

import numpy as np

from infra.asyncclient import AsyncClient
from infra.httpclient import JsonClient

IDEMPOTENCY_KEY = "Idempotency-Key"  # a deploy's header: the gateway makes one revision per key


class ServingClient:
    """Deploy, split traffic, roll back, inspect and infer against one gateway (``http://host:port``)."""

    def __init__(self, base_url: str, timeout: float = 30.0, headers: dict[str, str] | None = None):
        self.http = JsonClient(base_url, timeout=timeout, headers=headers, name="gateway")  # headers: on every call
        self.base_url = self.http.base_url

    def _call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self.http.call(method, path, body, headers=headers)

    # -- control -----------------------------------------------------------------
    def deploy(
        self,
        model: str,
        version: int | str = "latest",
        *,
        batching: dict | None = None,
        intra_op_threads: int | None = None,
        percent: int | None = None,
        tag: str | None = None,
        rollout: dict | None = None,
        announce: dict | None = None,
        logger: dict | None = None,
        idempotency_key: str | None = None,
    ) -> dict:
        """Create a revision; with ``percent``, it takes that share of traffic (a canary); with ``rollout``
        (``{"promote_after_requests", "max_error_rate"}``) the gateway promotes or rolls it back by itself and
        tells the broker with the event ``announce`` describes (``{"type": ..., "extensions": {"runid": ...}}``);
        with ``logger`` (``{"mode", "sample_rate", "extensions"}``) it logs sampled requests to the broker. Asked
        again with the same ``idempotency_key``, the gateway makes nothing new and answers the first revision."""
        body: dict[str, Any] = {"version": version}
        if batching:
            body["batching"] = batching
        if intra_op_threads:
            body["intra_op_threads"] = intra_op_threads
        if percent is not None:
            body["percent"] = percent
        if tag:
            body["tag"] = tag
        extra = {"rollout": rollout, "announce": announce, "logger": logger}
        body.update({k: v for k, v in extra.items() if v is not None})
        headers = {IDEMPOTENCY_KEY: idempotency_key} if idempotency_key else None
        return self._call("POST", f"/v1/models/{model}/revisions", body, headers)

    def set_traffic(self, model: str, traffic: list[dict]) -> dict:
        """Replace the split: ``[{"revision": r, "percent": p, "tag": t}, ...]``."""
        return self._call("PUT", f"/v1/models/{model}/traffic", {"traffic": traffic})

    def promote(self, model: str, revision: str) -> dict:
        """Send all traffic to ``revision``."""
        return self.set_traffic(model, [{"revision": revision, "percent": 100}])

    def rollback(self, model: str) -> dict:
        return self._call("POST", f"/v1/models/{model}/rollback", {})

    def describe(self, model: str) -> dict:
        """Revisions (with replicas, requests and errors) and traffic of one model."""
        return self._call("GET", f"/v1/models/{model}")

    def models(self) -> list[str]:
        return self._call("GET", "/v1/models")["models"]

    # -- V2 ------------------------------------------------------------------------
    def metadata(self, model: str) -> dict:
        return self._call("GET", f"/v2/models/{model}")

    def infer(self, model: str, inputs: dict[str, np.ndarray], *, tag: str | None = None) -> dict[str, np.ndarray]:
        """Run a V2 inference with FP32/INT/BOOL arrays; outputs as numpy arrays."""
        from serving.protocol import output_tensor

        body = {"inputs": [{**output_tensor(n, a), "data": a.reshape(-1).tolist()} for n, a in inputs.items()]}
        out = self._call("POST", f"/v2/models/{model}/infer", body, {"x-knflow-tag": tag} if tag else None)
        return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in out["outputs"]}


class AsyncServingClient:
    """The same calls as ``ServingClient`` for code already on an event loop (``infra.asyncclient``)."""

    def __init__(self, base_url: str, timeout: float = 30.0, headers: dict[str, str] | None = None):
        self.http = AsyncClient(base_url, timeout=timeout, headers=headers, name="gateway")  # headers: on every call
        self.base_url = self.http.base_url

    async def close(self) -> None:
        await self.http.close()

    async def __aenter__(self) -> AsyncServingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        return await self.http.call(method, path, body)

    async def deploy(self, model: str, version: int | str = "latest", **options: Any) -> dict:
        """Create a revision (options: batching, intra_op_threads, percent, tag)."""
        body = {"version": version, **{k: v for k, v in options.items() if v is not None}}
        return await self._call("POST", f"/v1/models/{model}/revisions", body)

    async def set_traffic(self, model: str, traffic: list[dict]) -> dict:
        return await self._call("PUT", f"/v1/models/{model}/traffic", {"traffic": traffic})

    async def promote(self, model: str, revision: str) -> dict:
        return await self.set_traffic(model, [{"revision": revision, "percent": 100}])

    async def rollback(self, model: str) -> dict:
        return await self._call("POST", f"/v1/models/{model}/rollback", {})

    async def describe(self, model: str) -> dict:
        return await self._call("GET", f"/v1/models/{model}")

    async def models(self) -> list[str]:
        return (await self._call("GET", "/v1/models"))["models"]
